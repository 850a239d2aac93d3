"""Score fusers on folders of registered image pairs with the field's metrics.

:func:`evaluate_pairs` reads the same-named PNG files of two folders
(``a``: the anatomical or visible image, ``b``: the functional or infrared one),
fuses every pair with every fuser through the engine
(:class:`~napari_upfusion.engine.api.FusionEngine`, exactly as ``fuse`` would)
and returns each fuser's mean of every metric of :mod:`napari_upfusion.evaluation.metrics`;
:func:`format_table` prints the result with the fusers side by side.

How images become numbers (the conventions of the field's evaluators):

* each PNG becomes its luma ``Y = 0.299 R + 0.587 G + 0.114 B`` on 0..255
  (a grey PNG, or grey stored as RGB, is its own Y; alpha is ignored);
* the fusers see the engine's inputs: 8-bit images are ``Y / 255`` as they are;
  the metrics compare with ``Y`` rounded to whole grey values;
* the fused luminance (:attr:`FusionResult.luma`, in ``[0, 1]``) is scaled to
  0..255 and quantised to whole grey values with
  :func:`~napari_upfusion.evaluation.metrics.round_grey` (halves to even, float32 noise
  around a half ignored), as it is when saved, and that 8-bit image is scored.
  Only the ``average`` fuser hits exact halves; its EN and MI come out 0.4-0.5%
  below those of the field's evaluator, whose halves fall as float64 noise in
  Y decides;
* a colour (pseudo-colour) source is fused on its Y only; saved results carry
  its Cb and Cr again (``b``'s when both are in colour), as the engine does.

This module sits beside the engine: it uses the engine, never napari or Qt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..engine.api import FusionEngine
from ..engine.image import ImageData
from ..engine.io import read_image, write_image
from ..engine.registry import available_fusers
from ..engine.validate import check_distinct_files, check_paths, path_kind
from ..errors import InputError
from ..utils.colour import LUMA_WEIGHTS
from ..utils.files import os_error_sentence
from .metrics import METRIC_NAMES, evaluate, round_grey

__all__ = ["evaluate_pairs", "format_table", "luma_255", "matched_pairs", "read_luma"]

Results = dict[str, dict[str, float]]

_LUMA = np.array(LUMA_WEIGHTS)


# ----------------------------------------------------------------------------- reading
def matched_pairs(a_dir: str | os.PathLike[str], b_dir: str | os.PathLike[str]) -> list[str]:
    """The PNG file names that ``a_dir`` and ``b_dir`` share, sorted; every file must have its partner.

    Raises :class:`~napari_upfusion.errors.InputError` when a folder is
    missing, holds no PNG file, or a name has no partner in the other folder.
    """
    names = []
    for folder in (Path(a_dir), Path(b_dir)):
        if path_kind(folder) != "dir":
            raise InputError(f"{folder} is not a folder; give two folders of same-named PNG images.")
        found = {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        if not found:
            raise InputError(f"{folder} holds no PNG image; give two folders of same-named PNG images.")
        names.append(found)
    only_a, only_b = sorted(names[0] - names[1]), sorted(names[1] - names[0])
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{_few(only_a)} only in {a_dir}")
        if only_b:
            parts.append(f"{_few(only_b)} only in {b_dir}")
        raise InputError(
            f"The two folders do not hold the same file names ({'; '.join(parts)}); "
            "each image needs a partner of the same name in the other folder."
        )
    return sorted(names[0])


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def luma_255(image: ImageData) -> NDArray[np.float64]:
    """Y on 0..255 (float64, not rounded) of an 8- or 16-bit grey or colour image."""
    data = np.asarray(image.array, dtype=np.float64)
    if image.array.dtype == np.uint16:
        data *= 255.0 / 65535.0
    elif image.array.dtype != np.uint8:
        raise InputError(f"An image has pixels of type {image.array.dtype}; give 8-bit (or 16-bit) PNG images.")
    return data[..., :3] @ _LUMA if image.rgb else data


def read_luma(path: str | os.PathLike[str]) -> NDArray[np.float64]:
    """Y on 0..255 (not rounded) of an image file; grey stored as RGB is its own Y."""
    return luma_255(read_image(path))


def _engines(
    fusers: Sequence[str] | Mapping[str, nn.Module], device: str | torch.device, precision: str
) -> dict[str, FusionEngine]:
    if isinstance(fusers, Mapping):
        items = list(fusers.items())
    else:
        names = list(fusers)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"The fuser {repeated[0]!r} is named twice; name each fuser once.")
        items = [(name, name) for name in names]
    if not items:
        raise InputError("No fuser was given; name at least one (for example 'average').")
    return {name: FusionEngine(model, device=device, precision=precision) for name, model in items}


def _output_folders(
    save_dir: str | os.PathLike[str] | None,
    fusers: Sequence[str] | Mapping[str, nn.Module],
    names: Sequence[str],
    folders: Sequence[tuple[str, str | os.PathLike[str]]],
) -> dict[str, Path]:
    """``{fuser: save_dir/<fuser folder>}``, every output checked against the inputs before any work."""
    if save_dir is None:
        return {}
    if path_kind(save_dir) == "file":
        raise InputError(f"--save {save_dir} is a file; give a folder (it is created if needed).")
    out_dirs = {fuser: Path(save_dir) / Path(os.fspath(fuser)).name for fuser in fusers}
    inputs = [*folders, *((f"the image {n} of {label}", Path(d) / n) for label, d in folders for n in names)]
    inputs += [("the checkpoint", f) for f in fusers if isinstance(f, str) and f not in available_fusers()]
    check_paths(inputs, [("the fused image", folder / n) for folder in out_dirs.values() for n in names])
    return out_dirs


# ----------------------------------------------------------------------------- the evaluation
def evaluate_pairs(
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str],
    fusers: Sequence[str] | Mapping[str, nn.Module],
    *,
    modalities: tuple[str, str] = ("MRI", "CT"),
    prompt: str | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Results:
    """Fuse every same-named pair of PNG images of two folders with each fuser; the mean of every metric.

    Parameters
    ----------
    a_dir, b_dir
        Folders of the first (anatomical / visible) and second (functional /
        infrared) images; each file needs a partner of the same name.
    fusers
        Fuser names (``"small"``, ``"average"``, ``"laplacian"``, a checkpoint path, ...)
        or a mapping of display names to ready slice-fuser modules.
    modalities, prompt
        As for :func:`napari_upfusion.fuse`: the modality of each folder and the
        text prompt (default: the model's, see :func:`~napari_upfusion.engine.api.fuse`: the authors'
        prompt for CLIP-conditioned networks, the pair's built-in prompt for ``small``).
    save_dir
        If given, each fused image is written to ``save_dir/<fuser>/<name>.png``
        (8-bit; in colour when a source was in colour; a checkpoint path's fuser folder is its
        file name).  No output may be an input or lie in an input folder.
    device, precision
        Where and how the fusers run.
    progress
        Called as ``progress(done, total)`` after each pair.

    Returns
    -------
    ``{fuser: {metric: mean over the pairs}}`` with the metrics in
    :data:`~napari_upfusion.evaluation.metrics.METRIC_NAMES` order.

    Raises
    ------
    InputError
        Before any work: a missing folder or partner, a pair whose two images are the same
        (:func:`~napari_upfusion.engine.validate.check_distinct_files`), an output that would
        overwrite an input (:func:`~napari_upfusion.engine.validate.check_paths`), a ``save_dir``
        that is a file or cannot be created.
    """
    names = matched_pairs(a_dir, b_dir)
    if os.path.samefile(a_dir, b_dir):
        raise InputError(f"A_DIR and B_DIR are the same folder ({a_dir}); give the folder of each modality.")
    for name in names:
        check_distinct_files(Path(a_dir) / name, Path(b_dir) / name, what=f"The two images of the pair {name}")
    out_dirs = _output_folders(save_dir, fusers, names, [("A_DIR", a_dir), ("B_DIR", b_dir)])
    engines = _engines(fusers, device, precision)
    for name, folder in out_dirs.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(os_error_sentence(error, folder)) from None

    sums = {name: dict.fromkeys(METRIC_NAMES, 0.0) for name in engines}
    for index, file_name in enumerate(names):
        img_a, img_b = read_image(Path(a_dir) / file_name), read_image(Path(b_dir) / file_name)
        if img_a.shape != img_b.shape:
            raise InputError(
                f"The pair {file_name} has images of different sizes ({img_a.shape} and {img_b.shape}); "
                "register and resample them onto one grid first."
            )
        ref_a, ref_b = round_grey(luma_255(img_a)), round_grey(luma_255(img_b))
        for name, engine in engines.items():
            result = engine.fuse(img_a, img_b, modalities=modalities, prompt=prompt)
            fused = round_grey(result.luma.astype(np.float64) * 255.0)
            for metric, value in evaluate(fused, ref_a, ref_b).items():
                sums[name][metric] += value
            if name in out_dirs:
                write_image(result.image, out_dirs[name] / file_name, overwrite=True)
        if progress is not None:
            progress(index + 1, len(names))
    return {name: {m: v / len(names) for m, v in scores.items()} for name, scores in sums.items()}


# ----------------------------------------------------------------------------- printing
def format_table(results: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """A plain-text table of ``results`` (as from :func:`evaluate_pairs`): one row per metric, one column per fuser."""
    if not results:
        return "(no results)"
    fusers = list(results)
    metrics = [m for m in METRIC_NAMES if any(m in r for r in results.values())]
    metrics += [m for r in results.values() for m in r if m not in metrics]
    cells = [[f"{results[f][m]:.{digits}f}" if m in results[f] else "-" for f in fusers] for m in metrics]
    width0 = max([len("metric")] + [len(m) for m in metrics])
    widths = [max(len(f), *(len(row[i]) for row in cells)) for i, f in enumerate(fusers)]
    lines = ["  ".join(["metric".ljust(width0)] + [f.rjust(w) for f, w in zip(fusers, widths)])]
    lines.append("  ".join(["-" * width0] + ["-" * w for w in widths]))
    for metric, row in zip(metrics, cells):
        lines.append("  ".join([metric.ljust(width0)] + [c.rjust(w) for c, w in zip(row, widths)]))
    return "\n".join(lines)
