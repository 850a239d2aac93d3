"""Every check of a fusion's inputs, in one place: one clear sentence for each way an input can be unusable.

The in-memory path (:func:`as_image` then :func:`check_pair`) and the lazy path
(:func:`check_lazy_pair`, then one pass over the values that reports through
:func:`nonfinite_error` and :func:`constant_error`) refuse the same things with the
same sentences: an unknown modality, data that is not a numeric image or is empty,
NaN or infinite values, a constant image, the same image twice, a 2-D image with a
3-D volume, slices smaller than :data:`MIN_SLICE` along the slicing axis, and a
volume whose fusion would not fit in free memory (:func:`check_host_memory`).
Nothing here changes an input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..modalities import MODALITIES
from .image import ImageData
from .runner import available_bytes

__all__ = [
    "HOST_COPIES",
    "MIN_SLICE",
    "SAME_IMAGE",
    "as_image",
    "check_host_memory",
    "check_kind",
    "check_lazy_pair",
    "check_modalities",
    "check_pair",
    "check_slice_index",
    "constant_error",
    "nonfinite_error",
    "slice_axis",
]

#: Smallest slice side (pixels) that is fused; smaller slices usually mean a wrong ``axis``.
MIN_SLICE = 16
#: float32 copies of a voxel that one fusion keeps in host memory at its peak (normalised a and b, their slice
#: stacks, the fused stack and the result, chroma for colour inputs).
HOST_COPIES = 8
SAME_IMAGE = "Inputs a and b are the same image; pick one image of each modality."


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
    if a.array.shape == b.array.shape and np.shares_memory(a.array, b.array):
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


def check_host_memory(image: ImageData, colour: bool) -> None:
    """Refuse up front a volume whose fusion would not fit in free host memory, saying how much it needs."""
    needed = int(np.prod(image.shape)) * 4 * (HOST_COPIES + (6 if colour else 0))
    free = available_bytes(torch.device("cpu"))
    if needed > 0.9 * free:
        raise InputError(
            f"Fusing this {' x '.join(map(str, image.shape))} volume needs about {needed / 2**30:.1f} GiB of memory "
            f"but only {free / 2**30:.1f} GiB are free; close other programs, crop the volume, or pass it as a dask "
            "array to fuse it chunk by chunk."
        )
