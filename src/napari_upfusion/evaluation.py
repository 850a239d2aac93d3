"""Score fusers on folders of registered image pairs with the field's metrics.

:func:`evaluate_pairs` reads the same-named PNG files of two folders
(``a``: the anatomical or visible image, ``b``: the functional or infrared one),
fuses every pair with every fuser and returns each fuser's mean of every metric
of :mod:`napari_upfusion.metrics`; :func:`format_table` prints the result with
the fusers side by side.

How images become numbers (the conventions of the field's evaluators):

* each PNG becomes its luma ``Y = 0.299 R + 0.587 G + 0.114 B`` on 0..255
  (a grey PNG is its own Y; an alpha channel is ignored);
* the fusers see ``Y / 255`` as it is; the metrics compare with ``Y`` rounded
  to whole grey values (what 8-bit grey readers such as OpenCV's give);
* the fused result, clamped to ``[0, 1]``, is scaled to 0..255 and quantised
  to whole grey values with :func:`~napari_upfusion.metrics.round_grey`
  (halves to even, float32 noise around a half ignored), as it is when saved,
  and that 8-bit image is what is scored.  Only the ``average`` fuser hits
  exact halves; its EN and MI come out 0.4-0.5% below those of the field's
  evaluator, whose halves fall as float64 noise in Y decides;
* a colour (pseudo-colour) source is fused on its Y only; when results are
  saved, its Cb and Cr are put back (full-range YCbCr, as JPEG), so the saved
  image is in colour.  If both sources are in colour, ``b``'s colour is used.

This module sits beside the engine: it may use torch and the registry, never
napari or Qt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from . import baselines as _baselines  # noqa: F401  (registers the classical fusers by name)
from .engine.registry import build_fuser, uses_text
from .errors import InputError
from .metrics import METRIC_NAMES, evaluate, round_grey

__all__ = ["evaluate_pairs", "format_table", "matched_pairs", "read_luma"]

Results = dict[str, dict[str, float]]

_LUMA = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- reading
def matched_pairs(a_dir: str | os.PathLike[str], b_dir: str | os.PathLike[str]) -> list[str]:
    """The PNG file names that ``a_dir`` and ``b_dir`` share, sorted; every file must have its partner.

    Raises :class:`~napari_upfusion.errors.InputError` when a folder is
    missing, holds no PNG file, or a name has no partner in the other folder.
    """
    names = []
    for folder in (Path(a_dir), Path(b_dir)):
        if not folder.is_dir():
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


def _read_rgb(path: Path) -> NDArray[np.float64]:
    """An image as float64 on 0..255, ``[H, W]`` (grey) or ``[H, W, 3]`` (colour)."""
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises many kinds; the user only needs to know the file is unreadable
        raise InputError(f"{path} cannot be read as an image ({error}); give PNG images.") from None
    if img.dtype == np.uint8:
        img = img.astype(np.float64)
    elif img.dtype == np.uint16:
        img = img.astype(np.float64) * (255.0 / 65535.0)
    else:
        raise InputError(f"{path} has pixels of type {img.dtype}; give 8-bit (or 16-bit) PNG images.")
    if img.ndim == 3 and img.shape[-1] in (2, 4):
        img = img[..., :-1]  # drop alpha
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 3 and np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(
        img[..., 0], img[..., 2]
    ):
        img = img[..., 0]  # grey stored as RGB
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise InputError(f"{path} has shape {img.shape}; give 2-D grey or RGB images.")
    return img


def read_luma(path: str | os.PathLike[str]) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """``(Y, CbCr)`` of an image file: Y on 0..255 (not rounded), CbCr ``[H, W, 2]`` or ``None`` for a grey image."""
    img = _read_rgb(Path(path))
    if img.ndim == 2:
        return img, None
    y = img @ _LUMA
    cb = 128.0 + img @ np.array([-0.168736, -0.331264, 0.5])
    cr = 128.0 + img @ np.array([0.5, -0.418688, -0.081312])
    return y, np.stack([cb, cr], axis=-1)


def _ycbcr_to_rgb(y: NDArray[np.float64], cbcr: NDArray[np.float64]) -> NDArray[np.uint8]:
    cb, cr = cbcr[..., 0] - 128.0, cbcr[..., 1] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- fusing
def _fuse_y(
    fuser: nn.Module,
    y_a: NDArray[np.float64],
    y_b: NDArray[np.float64],
    device: torch.device,
    text_code: torch.Tensor | None,
) -> NDArray[np.float64]:
    """Fuse two Y images (0..255) with a slice fuser; the result is on 0..255, not rounded.

    The one place where evaluation calls a fuser: it pads to a multiple of 8 by
    reflection at the bottom and right, clamps to ``[0, 1]`` and crops back, as
    the authors' test code does.  To be replaced by ``napari_upfusion.fuse``.
    """
    height, width = y_a.shape
    a = torch.from_numpy(y_a / 255.0).to(device=device, dtype=torch.float32)[None, None]
    b = torch.from_numpy(y_b / 255.0).to(device=device, dtype=torch.float32)[None, None]
    pad_h, pad_w = -height % 8, -width % 8
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        a, b = (F.pad(t, (0, pad_w, 0, pad_h), mode=mode) for t in (a, b))
    with torch.inference_mode():
        out = fuser(a, b, text_code if uses_text(fuser) else None)
    out = out.float().clamp(0.0, 1.0)[0, 0, :height, :width]
    return out.cpu().numpy().astype(np.float64) * 255.0


def _build_fusers(fusers: Sequence[str] | Mapping[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    if isinstance(fusers, Mapping):
        built = dict(fusers)
    else:
        names = list(fusers)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"The fuser {repeated[0]!r} is named twice; name each fuser once.")
        built = {name: build_fuser(name, device) for name in names}
    if not built:
        raise InputError("No fuser was given; name at least one (for example 'average').")
    for module in built.values():
        module.eval()
    return built


# ----------------------------------------------------------------------------- the evaluation
def evaluate_pairs(
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str],
    fusers: Sequence[str] | Mapping[str, nn.Module],
    *,
    save_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    text_code: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Results:
    """Fuse every same-named pair of PNG images of two folders with each fuser; the mean of every metric.

    Parameters
    ----------
    a_dir, b_dir
        Folders of the first (anatomical / visible) and second (functional /
        infrared) images; each file needs a partner of the same name.
    fusers
        Registered fuser names (``"average"``, ``"maximum"``, ``"laplacian"``, ...)
        or a mapping of display names to ready slice-fuser modules.
    save_dir
        If given, each fused image is written to ``save_dir/<fuser>/<name>.png``
        (8-bit; in colour when a source was in colour).
    device
        Where the fusers run.
    text_code
        Prompt code for fusers that read text (``uses_text``); classical fusers ignore it.
    progress
        Called as ``progress(done, total)`` after each pair.

    Returns
    -------
    ``{fuser: {metric: mean over the pairs}}`` with the metrics in
    :data:`~napari_upfusion.metrics.METRIC_NAMES` order.
    """
    names = matched_pairs(a_dir, b_dir)
    device = torch.device(device)
    modules = _build_fusers(fusers, device)
    for name, module in modules.items():
        if uses_text(module) and text_code is None:
            raise InputError(f"The fuser {name!r} reads a text prompt; give its text_code to evaluate it.")
    out_dirs: dict[str, Path] = {}
    if save_dir is not None:
        for name in modules:
            out_dirs[name] = Path(save_dir) / name
            out_dirs[name].mkdir(parents=True, exist_ok=True)

    sums = {name: dict.fromkeys(METRIC_NAMES, 0.0) for name in modules}
    for index, file_name in enumerate(names):
        y_a, cbcr_a = read_luma(Path(a_dir) / file_name)
        y_b, cbcr_b = read_luma(Path(b_dir) / file_name)
        if y_a.shape != y_b.shape:
            raise InputError(
                f"The pair {file_name} has images of different sizes ({y_a.shape} and {y_b.shape}); "
                "register and resample them onto one grid first."
            )
        ref_a, ref_b = round_grey(y_a), round_grey(y_b)
        chroma = cbcr_b if cbcr_b is not None else cbcr_a
        for name, module in modules.items():
            fused = round_grey(_fuse_y(module, y_a, y_b, device, text_code))
            for metric, value in evaluate(fused, ref_a, ref_b).items():
                sums[name][metric] += value
            if name in out_dirs:
                _save(out_dirs[name] / file_name, fused, chroma)
        if progress is not None:
            progress(index + 1, len(names))
    return {name: {m: v / len(names) for m, v in scores.items()} for name, scores in sums.items()}


def _save(path: Path, y: NDArray[np.float64], chroma: NDArray[np.float64] | None) -> None:
    """Write atomically (a temporary file renamed into place), so no half-written image is left behind."""
    import imageio.v3 as iio

    y = np.clip(round_grey(y), 0, 255)
    image = y.astype(np.uint8) if chroma is None else _ycbcr_to_rgb(y, chroma)
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent, prefix=f".{path.stem}-")
    os.close(handle)
    try:
        iio.imwrite(tmp, image, extension=".png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
