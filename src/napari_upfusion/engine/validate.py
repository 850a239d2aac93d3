"""Every check of a fusion's inputs, outputs and result, in one place: one clear sentence for each way they
can be unusable.

Arrays.  The in-memory path (:func:`as_image` then :func:`check_pair`) and the lazy path
(:func:`check_lazy_pair`, then one pass over the values that reports through
:func:`nonfinite_error` and :func:`constant_error`) refuse the same things with the
same sentences: an unknown modality, data that is not a numeric image or is empty,
NaN or infinite values, a constant image, the same image twice (the same memory or
the same values), a 2-D image with a 3-D volume, slices smaller than :data:`MIN_SLICE`
along the slicing axis, and a volume whose fusion would not fit in free memory
(:func:`check_host_memory`).  :func:`check_overlap` refuses inputs whose fields of view
do not overlap (or a single slice with a volume) and warns when they overlap only in part.

Files.  Every command checks its paths here before any work: :func:`check_paths` (no
output is an input, or lies in an input folder, whatever the spelling: ``..``, ``.``,
symbolic and hard links, case), :func:`check_distinct_files` (the same image twice by
path, file identity or content), :func:`check_output` (a name the file system takes, an
extension that can be written and a format that can hold the result, a folder that
exists and may be written, no existing file without ``overwrite``) and
:func:`check_read_size` (a file's declared data fits in free memory).

Results.  :func:`check_result` holds the engine's promise: every fused value is finite
and in ``[0, 1]``.

Nothing here changes an input, and nothing here imports torch.
"""

from __future__ import annotations

import errno
import filecmp
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputWarning, ResultError
from ..modalities import MODALITIES
from ..utils.files import (
    NAME_MAX,
    check_output_folder,
    os_error_sentence,
    path_kind,
    short_path,
)
from .image import ImageData

__all__ = [
    "HOST_COPIES",
    "MIN_SLICE",
    "PARTIAL_OVERLAP",
    "SAME_IMAGE",
    "as_image",
    "check_distinct_files",
    "check_host_memory",
    "check_kind",
    "check_lazy_pair",
    "check_modalities",
    "check_output",
    "check_output_folder",
    "check_overlap",
    "check_pair",
    "check_paths",
    "check_read_size",
    "check_result",
    "check_slice_index",
    "constant_error",
    "covered_fraction",
    "free_host_bytes",
    "nonfinite_error",
    "output_path",
    "path_kind",
    "slice_axis",
]

#: Smallest slice side (pixels) that is fused; smaller slices usually mean a wrong ``axis``.
MIN_SLICE = 16
#: float32 copies of a voxel that one fusion keeps in host memory at its peak (normalised a and b, their slice
#: stacks, the fused stack and the result, chroma for colour inputs).
HOST_COPIES = 8
SAME_IMAGE = "Inputs a and b are the same image; pick one image of each modality."
#: Below this fraction of a's field of view covered by b, a fusion warns that the rest shows a alone.
PARTIAL_OVERLAP = 0.5


def check_modalities(modalities: tuple[str, str]) -> None:
    """Refuse a modality name that is not one of :data:`~napari_upfusion.modalities.MODALITIES`."""
    for name, modality in zip("ab", modalities):
        if modality.upper() not in MODALITIES:
            raise InputError(f"Unknown modality {modality!r} for input {name}; use one of {', '.join(MODALITIES)}.")


def check_kind(name: str, data: Any) -> None:
    """Refuse data that is not a numeric image, or is empty (needs only dtype, shape and size)."""
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"Input {name} has data type {data.dtype}, which is not an image intensity; give a numeric image.")
    if data.size == 0:
        raise InputError(f"Input {name} is empty (shape {data.shape}); give an image with pixels.")


def nonfinite_error(name: str, count: int, has_nan: bool) -> InputError:
    """The error for ``count`` NaN (when ``has_nan``) or infinite values in input ``name``."""
    kind = "NaN" if has_nan else "infinite"
    return InputError(
        f"Input {name} contains {count} {kind} value{'s' if count > 1 else ''}; replace them with a number "
        "(for example 0) before fusing."
    )


def constant_error(name: str, value: Any) -> InputError:
    """The error for input ``name`` whose every value is ``value``."""
    return InputError(
        f"Input {name} is constant (every value is {value}), so there is nothing to fuse; check that "
        "you picked the right image."
    )


def _check_finite(array: np.ndarray, name: str) -> None:
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        count = int((~np.isfinite(array)).sum())
        if count:
            raise nonfinite_error(name, count, bool(np.isnan(array).any()))


def _check_dimensions(a: ImageData, b: ImageData) -> None:
    if a.ndim != b.ndim:
        volume, name = (a, "a") if a.ndim == 3 else (b, "b")
        if 1 in volume.shape:  # a 2-D NIfTI or MetaImage is read as a volume of one slice
            raise InputError(
                f"Input {name} is a single slice stored as a volume ({' x '.join(map(str, volume.shape))}) and the "
                "other input is a 2-D image; save both as 2-D images (PNG, TIFF) or both as volumes."
            )
        raise InputError(
            f"Input a is {a.ndim}-D but input b is {b.ndim}-D; give two 2-D images or two 3-D volumes."
        )


def as_image(x: np.ndarray | ImageData, name: str, modality: str) -> ImageData:
    """``x`` as an :class:`ImageData` (a plain array gets unit geometry); refuses shapes that are not an image."""
    if isinstance(x, ImageData):
        return x
    array = np.asarray(x)
    if array.dtype == object or array.ndim not in (2, 3, 4):
        raise InputError(
            f"Input {name} has shape {array.shape}; give a 2-D image or a 3-D volume (select one volume of a 4-D "
            "series first, e.g. volume[0], or pass the axis you want as the slicing axis)."
        )
    return ImageData.from_array(array, metadata={"modality": modality})


def check_pair(a: ImageData, b: ImageData, modalities: tuple[str, str]) -> None:
    """The checks of an in-memory pair: modalities, data type, finite values, not constant, two images, same
    dimensionality."""
    check_modalities(modalities)
    for name, image in (("a", a), ("b", b)):
        data = image.array
        check_kind(name, data)
        _check_finite(data, name)
        if not image.rgb and float(data.min()) == float(data.max()):
            raise constant_error(name, data.flat[0])
    if a.array.shape == b.array.shape and (np.shares_memory(a.array, b.array) or np.array_equal(a.array, b.array)):
        raise InputError(SAME_IMAGE)
    _check_dimensions(a, b)


def check_lazy_pair(a: ImageData, b: ImageData, *, colormap: str | None, register: bool) -> None:
    """The checks of a pair of lazy (dask) images that need no pass over their values.

    Besides data type, dimensionality and the same image twice: grey volumes only,
    no colormap, no registration, and grids that already match (resampling needs whole
    volumes).  The values (finite, not constant) are checked by the lazy path's one
    pass over each volume, through :func:`nonfinite_error` and :func:`constant_error`.
    """
    if a.rgb or b.rgb or colormap is not None:
        raise InputError(
            "Lazy (dask or zarr) inputs are fused as grey volumes only; give single-channel volumes without a "
            "colormap, or pass numpy arrays for colour fusion."
        )
    if register:
        raise InputError(
            "Registration needs whole volumes in memory, so it is not available for lazy (dask or zarr) inputs; "
            "register and resample b onto a's grid first, or pass numpy arrays."
        )
    for name, image in (("a", a), ("b", b)):
        check_kind(name, image.array)
    _check_dimensions(a, b)
    if a.array is b.array or a.array.name == b.array.name:
        raise InputError(SAME_IMAGE)
    if a.shape != b.shape or (a.has_geometry and b.has_geometry and not a.same_grid(b)):
        raise InputError(
            f"Lazy (dask or zarr) inputs must already share a grid, but a is {a.shape} and b is {b.shape}"
            f"{' with other spacing, origin or direction' if a.shape == b.shape else ''}; resample b onto "
            "a's grid first, or pass numpy arrays to let the engine resample."
        )


def slice_axis(shape: tuple[int, ...], axis: int) -> int:
    """``axis`` checked and made non-negative (0 for a 2-D image); refuses slices smaller than :data:`MIN_SLICE`."""
    ndim = len(shape)
    if ndim == 3 and not -3 <= axis < 3:
        raise InputError(f"axis must be 0, 1 or 2 for a volume, got {axis}.")
    axis = axis % 3 if ndim == 3 else 0
    slice_shape = [n for i, n in enumerate(shape) if ndim == 2 or i != axis]
    if min(slice_shape) < MIN_SLICE:
        raise InputError(
            f"Slices along axis {axis} are {slice_shape[0]} x {slice_shape[1]} pixels, smaller than the "
            f"{MIN_SLICE} x {MIN_SLICE} that fusion needs; pick another axis or a larger image."
        )
    return axis


def check_slice_index(shape: tuple[int, ...], axis: int, index: int) -> None:
    """Refuse a slice ``index`` outside the volume along ``axis``."""
    if not 0 <= index < shape[axis]:
        raise InputError(f"Slice {index} is outside the volume, which has {shape[axis]} slices along axis {axis}.")


def free_host_bytes() -> int:
    """Free host memory (RAM) in bytes, as the operating system reports it available."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with napari
        return 4 << 30


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_host_memory(shape: tuple[int, ...], colour: bool) -> None:
    """Refuse up front a volume of spatial ``shape`` whose fusion would not fit in free host memory, saying how
    much it needs (``colour``: an input or the output is in colour, which keeps chroma beside the luma)."""
    needed = int(np.prod(shape, dtype=np.float64)) * 4 * (HOST_COPIES + (6 if colour else 0))
    free = free_host_bytes()
    if needed > 0.9 * free:
        raise InputError(
            f"Fusing this {' x '.join(map(str, shape))} volume needs about {_gib(needed)} of memory "
            f"but only {_gib(free)} are free; close other programs, crop the volume, or pass it as a dask "
            "array to fuse it chunk by chunk."
        )


def check_read_size(path: str | os.PathLike[str], what: str, nbytes: int) -> None:
    """Refuse, from a file's header alone, data that would not fit in free memory once read.

    ``what`` describes the declared data (``"a 2000 x 2000 x 500 int16 volume"``) and
    ``nbytes`` is what reading it takes in memory.
    """
    free = free_host_bytes()
    if nbytes > 0.9 * free:
        raise InputError(
            f"{short_path(path)} declares {what}, which needs about {_gib(nbytes)} of memory to read but only "
            f"{_gib(free)} are free; crop it or open it lazily (open_lazy, for NIfTI) to fuse it chunk by chunk."
        )


# ----------------------------------------------------------------------------- geometry of a pair
def _index_box(image: ImageData) -> np.ndarray:
    """The 2**ndim corners of ``image``'s field of view (voxel edges, not centres) as index coordinates."""
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in image.shape], indexing="ij")).reshape(image.ndim, -1)
    return corners


def covered_fraction(a: ImageData, b: ImageData) -> float:
    """The fraction of ``a``'s field of view that ``b``'s field of view covers (through their axis-aligned bounds
    in ``a``'s index space, so an upper bound for rotated grids)."""
    world = b.index_to_world_affine() @ np.vstack([_index_box(b), np.ones(2**b.ndim)])
    in_a = np.linalg.solve(a.index_to_world_affine(), world)[:-1]
    low = np.maximum(in_a.min(axis=1), -0.5)
    high = np.minimum(in_a.max(axis=1), np.asarray(a.shape) - 0.5)
    return float(np.prod(np.clip(high - low, 0, None) / np.asarray(a.shape, dtype=float)))


def check_overlap(a: ImageData, b: ImageData) -> None:
    """Refuse a pair with physical geometry whose fields of view do not overlap, or a single slice with a volume;
    warn (:class:`~napari_upfusion.errors.InputWarning`) when ``b`` covers less than :data:`PARTIAL_OVERLAP` of
    ``a``.  Pairs without geometry, or on the same grid, pass."""
    if not (a.has_geometry and b.has_geometry) or a.ndim != b.ndim or a.same_grid(b):
        return
    if a.ndim == 3 and (1 in a.shape) != (1 in b.shape):
        thin, thick = ("b", a) if 1 in b.shape else ("a", b)
        other = "a" if thin == "b" else "b"
        raise InputError(
            f"Input {thin} is a single 2-D slice but input {other} is a volume of {' x '.join(map(str, thick.shape))}; "
            "give two 2-D images or two 3-D volumes."
        )
    fraction = covered_fraction(a, b)
    if fraction <= 1e-9:
        raise InputError(
            "Inputs a and b do not overlap in space (their physical fields of view share no point), so the fused "
            "image would show a alone; check that both show the same region in the same coordinate space, or "
            "register them first."
        )
    if fraction < PARTIAL_OVERLAP:
        warnings.warn(
            f"Input b covers {f'only {fraction:.0%}' if fraction >= 0.005 else 'less than 1%'} of input a's field of "
            "view; outside it the fused image shows a alone.",
            InputWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- the result
def check_result(array: np.ndarray, model: str) -> None:
    """The engine's promise about a fused array: every value finite and in ``[0, 1]``; else one sentence naming
    ``model`` (a fuser name or a checkpoint path)."""
    values = np.asarray(array)
    finite = np.isfinite(values)
    if not finite.all():
        count = int(values.size - np.count_nonzero(finite))
        kind = "NaN" if np.isnan(values).any() else "infinite"
        raise ResultError(
            f"The model {model!r} produced {count} {kind} value{'s' if count > 1 else ''} instead of an image in "
            "[0, 1], so nothing was returned or written; its weights are probably damaged (for example by a training "
            "run that diverged): use another checkpoint."
        )
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ResultError(
            f"The model {model!r} produced values from {values.min():g} to {values.max():g}, outside [0, 1], so "
            "nothing was returned or written; a fuser must return images in [0, 1]."
        )


# ----------------------------------------------------------------------------- paths
def _resolved(path: str | os.PathLike[str]) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return Path(os.path.abspath(Path(path).expanduser()))


def _identity(path: str | os.PathLike[str], follow: bool = True) -> tuple[int, int] | None:
    try:
        status = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def _same_file(p: str | os.PathLike[str], q: str | os.PathLike[str]) -> bool:
    """Whether ``p`` and ``q`` name one file or folder: the same resolved path or the same device and inode
    (through ``..``, symbolic links, hard links, bind mounts and case-insensitive names alike)."""
    if _resolved(p) == _resolved(q):
        return True
    found = _identity(p)
    return found is not None and found == _identity(q)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def check_paths(
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]],
    outputs: Iterable[tuple[str, str | os.PathLike[str] | None]],
) -> None:
    """Refuse, before any work, an output that is one of the inputs or lies inside an input folder.

    The one check of every command's outputs against its inputs (``upfusion fuse``, ``batch``,
    ``evaluate --save``, ``demo``, ``train``; the engine's :func:`~.api.fuse_files`).  Paths are
    compared resolved (``..``, ``.``, symbolic links) and by file identity (device and inode: hard
    links, bind mounts, names that differ only in case on a case-insensitive disk).  Each input is
    looked at once, so a batch of thousands of pairs is checked in one pass.

    Parameters
    ----------
    inputs, outputs
        ``(label, path)`` pairs, such as ``("input a", "a.nii.gz")`` and ``("the output", "f.nii.gz")``;
        a ``None`` path is skipped.
    """
    by_path: dict[Any, tuple[str, str | os.PathLike[str]]] = {}  # resolved paths and identities of the inputs
    folders: dict[Any, tuple[str, str | os.PathLike[str]]] = {}  # the same, of the inputs that are folders
    for label, source in inputs:
        if source is None:
            continue
        found = _identity(source)
        keys = [_resolved(source)] + ([found] if found is not None else [])
        for key in keys:
            by_path.setdefault(key, (label, source))
            if path_kind(source) == "dir":
                folders.setdefault(key, (label, source))
    for out_label, output in outputs:
        if output is None:
            continue
        target = _resolved(output)
        hit = by_path.get(target) or by_path.get(_identity(output))
        if hit is not None:
            raise InputError(
                f"{_capital(out_label)} {short_path(output)} is {hit[0]} ({short_path(hit[1])}); writing it would "
                "overwrite that input, so choose another output name."
            )
        for parent in target.parents if folders else ():
            inside = folders.get(parent) or folders.get(_identity(parent))
            if inside is not None:
                raise InputError(
                    f"{_capital(out_label)} {short_path(output)} lies inside {inside[0]}, the folder "
                    f"{short_path(inside[1])}; choose an output outside it so that the input stays as it is."
                )


def check_distinct_files(
    a: str | os.PathLike[str], b: str | os.PathLike[str], what: str = "Inputs a and b"
) -> None:
    """Refuse the same image given twice as files: one path, one file (links), or two files with identical bytes
    (sizes compared first, then the bytes, block by block, up to the first difference)."""
    if _same_file(a, b):
        raise InputError(
            f"{what} are the same file ({short_path(a)} and {short_path(b)}); pick one image of each modality."
        )
    if path_kind(a) == "file" and path_kind(b) == "file" and filecmp.cmp(a, b, shallow=False):
        raise InputError(
            f"{what} have identical content ({short_path(a)} and {short_path(b)}), so they are the same image; "
            "pick one image of each modality."
        )


def output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path`` with ``~`` expanded; an empty or blank one is refused (``Path("")`` would quietly mean
    the current folder)."""
    if not os.fspath(path).strip():
        raise InputError("The output path is empty; give a file name with an image extension, for example fused.nii.gz.")
    return Path(path).expanduser()


def check_output(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, ...] | None = None,
    rgb: bool = False,
    overwrite: bool = False,
    format: str | None = None,
) -> Path:
    """Refuse, before any work, an image file (or, for a folder format such as ``format="dicom"``, a series
    folder) that cannot be written where and as asked.

    In order: a name too long for the file system, a path that is a folder (unless the format
    is written as a folder), an unknown format name or an extension that no writer takes (the
    message lists only the writable ones), a format that cannot hold a result of spatial
    ``shape`` (``None``: not known yet) in colour (``rgb``) (PNG for a volume, NIfTI for
    colour), a missing or unwritable folder, and an existing file or folder without
    ``overwrite``.  :func:`~napari_upfusion.engine.io.write_image` runs the same check.

    Returns
    -------
    pathlib.Path
        ``path`` with ``~`` expanded.
    """
    from .io.formats import output_format  # deferred: the registry of formats sits above this module's imports

    path = output_path(path)
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise InputError(os_error_sentence(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)), path.name))
    fmt = output_format(path, format) if format is not None else None
    if path_kind(path) == "dir" and (fmt is None or not fmt.folder):
        raise InputError(
            f"{short_path(path)} is a folder; give the output a file name with an image extension, for example "
            f"{short_path(path / 'fused.nii.gz')}, or --format dicom to write a DICOM series into it."
        )
    fmt = fmt or output_format(path)
    if shape is not None and fmt.accepts is not None:
        fmt.accepts(tuple(shape), bool(rgb), path)
    return check_output_folder(path, overwrite=overwrite)
