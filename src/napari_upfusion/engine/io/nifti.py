"""NIfTI (``.nii``, ``.nii.gz``) through nibabel, with the geometry converted exactly both ways.

Always read as a 3-D volume (a 2-D NIfTI becomes one slice; a trailing axis of
length 1 is dropped).  The RAS+ affine over ``(i, j, k)`` is converted to this
package's convention (array order ``(z, y, x) = (k, j, i)``, physical coordinates
in reversed LPS, see :mod:`~napari_upfusion.engine.image`) and back exactly; the
header is kept, so a NIfTI written from an image read from NIfTI keeps its fields
(description, units, intent, codes).  A 2-D image written to NIfTI becomes a
one-slice volume.  RGB24/RGBA32 NIfTI is read as colour; colour is not written to
NIfTI.  A volume can also be read lazily (a dask array in slabs along k) and a lazy
volume written slab by slab (:func:`write_nifti_streamed`).
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .. import slicing
from ..image import ImageData
from ..slicing import computed_blocks
from .header import ImageHeader
from .staging import stored_dtype

__all__ = [
    "array_affine_to_nifti_affine",
    "check_nifti_output",
    "header_nifti",
    "nifti_affine_to_array_affine",
    "read_nifti",
    "write_nifti",
    "write_nifti_streamed",
]

# NIfTI voxel (i, j, k) <-> array index (k, j, i), and RAS+ (x, y, z) <-> reversed LPS (S, P, L).
_REVERSE = np.eye(4)[[2, 1, 0, 3]]
_RAS_TO_SPL = np.array([[0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def nifti_affine_to_array_affine(affine: np.ndarray) -> np.ndarray:
    """Convert a NIfTI RAS+ affine over ``(i, j, k)`` to an index-to-world affine in array axis order.

    Parameters
    ----------
    affine
        4x4 NIfTI affine (``img.affine`` in nibabel).

    Returns
    -------
    numpy.ndarray
        4x4 affine mapping ``(k, j, i)`` to reversed-LPS ``(S, P, L)`` coordinates.
    """
    return _RAS_TO_SPL @ np.asarray(affine, dtype=float) @ _REVERSE


def array_affine_to_nifti_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_affine_to_array_affine`.

    Parameters
    ----------
    affine
        4x4 index-to-world affine in array axis order (``ImageData.index_to_world_affine()``).

    Returns
    -------
    numpy.ndarray
        The NIfTI RAS+ affine over ``(i, j, k)``.
    """
    return _RAS_TO_SPL.T @ np.asarray(affine, dtype=float) @ _REVERSE


def _layout(path: Path, raw_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], bool]:
    """The spatial shape (array axis order) and colour flag that :func:`read_nifti` gives a file whose header
    declares ``raw_shape`` of ``dtype``; data of more than 3 dimensions is refused."""
    shape = list(raw_shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) > 3:
        raise InputError(
            f"{path.name} holds {len(shape)}-D data of shape {tuple(shape)}; extract a single 3-D volume first."
        )
    if len(shape) < 2:
        raise InputError(f"{path.name} holds {len(shape)}-D data of shape {tuple(shape)}; give a 2-D image or a 3-D volume.")
    if len(shape) == 2:
        shape.append(1)
    return tuple(reversed(shape)), dtype.names is not None


def _check_complete(path: Path, nifti: Any) -> None:
    """Refuse an uncompressed NIfTI file that holds less data than its header declares (a truncated copy)."""
    if path.name.lower().endswith(".gz"):
        return  # a cut compressed stream fails when read
    proxy = nifti.dataobj
    needed = int(np.prod(proxy.shape, dtype=np.float64)) * nifti.header.get_data_dtype().itemsize
    held = path.stat().st_size - int(proxy.offset)
    if held < needed:
        raise InputError(
            f"{path.name} is truncated: its header declares {' x '.join(map(str, proxy.shape))} values "
            f"({needed:,} bytes) but the file holds only {max(held, 0):,} bytes of data; copy it again."
        )


def header_nifti(path: Path) -> ImageHeader:
    """What a NIfTI file declares (nibabel reads the header only); truncated and 4-D files are refused."""
    import nibabel as nib

    nifti = nib.load(str(path), mmap=False)
    dtype = nifti.header.get_data_dtype()
    shape, rgb = _layout(path, tuple(int(n) for n in nifti.dataobj.shape), dtype)
    _check_complete(path, nifti)
    slope, inter = nifti.header.get_slope_inter()
    scaled = (slope not in (None, 1.0) and np.isfinite(slope)) or (inter not in (None, 0.0) and np.isfinite(inter))
    per_voxel = dtype.itemsize * (2 if rgb else 1) + (8 if scaled else 0)  # the raw data, plus a scaled copy
    nbytes = int(np.prod(shape, dtype=np.float64)) * per_voxel
    return ImageHeader(shape, rgb, dtype, nbytes, "NIfTI")


def read_nifti(path: Path, lazy: bool = False) -> ImageData:
    """NIfTI as an ``ImageData``; ``lazy`` gives a dask array read in slabs along k (grey volumes only)."""
    import nibabel as nib

    nifti = nib.load(str(path), mmap=False)
    _layout(path, tuple(int(n) for n in nifti.dataobj.shape), nifti.header.get_data_dtype())
    _check_complete(path, nifti)
    if lazy:
        data = _lazy_nifti_data(nifti)
    else:
        data = np.asanyarray(nifti.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    rgb = data.dtype.names is not None
    if rgb:  # RGB24 / RGBA32 NIfTI: a structured dtype with one field per channel
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    if data.ndim - rgb == 2:
        data = np.expand_dims(data, 2)
    array = np.moveaxis(data, (0, 1, 2), (2, 1, 0))
    return ImageData.from_affine(
        array, nifti_affine_to_array_affine(nifti.affine), rgb=rgb, nifti_header=nifti.header.copy()
    )


def _lazy_nifti_data(nifti: Any) -> Any:
    """The data of a NIfTI image as a dask array in slabs along k, read (and scaled) by nibabel on demand."""
    import dask.array as da

    proxy = nifti.dataobj
    shape = tuple(int(n) for n in proxy.shape)
    if proxy.dtype.names is not None:
        raise InputError("Colour (RGB) NIfTI cannot be opened lazily; read it with read_image instead.")
    plane = int(np.prod(shape[:2])) * max(1, int(np.prod(shape[3:])))
    slab = max(1, min(shape[2], slicing.SLAB_BYTES // (4 * plane))) if len(shape) >= 3 else -1
    chunks = tuple(-1 if d != 2 else slab for d in range(len(shape)))
    return da.from_array(_ScaledProxy(proxy), chunks=chunks, asarray=True)


class _ScaledProxy:
    """A nibabel array proxy that declares the dtype its slices have after scaling (dask trusts ``dtype``)."""

    def __init__(self, proxy) -> None:
        self.proxy, self.shape, self.ndim = proxy, tuple(proxy.shape), len(proxy.shape)
        self.dtype = np.asanyarray(proxy[(slice(0, 1),) * self.ndim]).dtype

    def __getitem__(self, index):
        return np.asanyarray(self.proxy[index])


def _as_volume(image: ImageData) -> ImageData:
    """A 2-D image as a one-slice 3-D volume (unit slice spacing); 3-D images unchanged."""
    if image.ndim == 3:
        return image
    direction = np.eye(3)
    direction[1:, 1:] = image.direction
    return dataclasses.replace(
        image,
        array=image.array[np.newaxis],
        spacing=(1.0,) + image.spacing,
        origin=(0.0,) + image.origin,
        direction=direction,
    )


def check_nifti_output(shape: tuple[int, ...], rgb: bool, path: Path) -> None:
    """Refuse what NIfTI cannot hold here: colour (this package writes grey NIfTI only)."""
    if rgb:
        raise InputError(
            f"NIfTI cannot hold this colour image; save {path.name} as .mha, .nrrd, .png or .tif instead."
        )


def write_nifti(image: ImageData, path: Path) -> None:
    import nibabel as nib

    check_nifti_output(image.shape, image.rgb, path)
    volume = _as_volume(image)
    data = np.moveaxis(stored_dtype(volume.array), (0, 1, 2), (2, 1, 0))
    affine = array_affine_to_nifti_affine(volume.index_to_world_affine())
    header = image.nifti_header
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    nifti = cls(data, None, header=header.copy() if header is not None else None, dtype=data.dtype)
    nifti.header.set_slope_inter(None, None)  # the data are stored unscaled
    nifti.set_qform(affine, int(nifti.header["qform_code"]) or 1)
    nifti.set_sform(affine, int(nifti.header["sform_code"]) or 1)
    nib.save(nifti, str(path))


def _write_region(handle, offset: int, shape: tuple[int, ...], starts: tuple[int, ...], block: np.ndarray) -> None:
    """Write ``block`` at index ``starts`` of a C-ordered ``shape`` array stored from byte ``offset`` of ``handle``.

    One write per contiguous run: a single one for a slab along axis 0, one per
    row segment for slabs along the last axis.
    """
    block = np.ascontiguousarray(block)
    t = len(shape) - 1  # the runs span axes t.. (whole along the axes after t)
    while t > 0 and block.shape[t] == shape[t]:
        t -= 1
    strides = [int(np.prod(shape[d + 1 :])) for d in range(len(shape))]  # in elements
    base = sum(s * stride for s, stride in zip(starts, strides))
    for lead in np.ndindex(*block.shape[:t]):
        handle.seek(offset + (base + sum(i * stride for i, stride in zip(lead, strides))) * block.itemsize)
        handle.write(memoryview(block[lead]).cast("B"))


def write_nifti_streamed(image: ImageData, target: Path) -> None:
    """A lazy image streamed to NIfTI: :func:`write_nifti` of a placeholder (the eager header), then each
    slab written in place through the data offset; gzip-compressed afterwards for ``.nii.gz``."""
    import nibabel as nib

    x = image.array
    dtype = stored_dtype(np.empty(0, dtype=x.dtype)).dtype
    placeholder = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=x.shape, strides=(0,) * x.ndim)
    compressed = target.name.lower().endswith(".gz")
    raw = target.with_name(target.name[:-3]) if compressed else target  # uncompressed, beside the target
    try:
        write_nifti(image.with_array(placeholder), raw)
        written = nib.load(str(raw), mmap=False)
        offset, disk = int(written.dataobj.offset), written.header.get_data_dtype()
        shape = x.shape if x.ndim == 3 else (1,) + x.shape
        with open(raw, "r+b") as handle:
            for starts, block in computed_blocks(x):
                if x.ndim == 2:
                    starts, block = (0,) + starts, block[None]
                _write_region(handle, offset, shape, starts, stored_dtype(block).astype(disk, copy=False))
        if compressed:
            with open(raw, "rb") as source, gzip.open(target, "wb", compresslevel=1) as sink:
                shutil.copyfileobj(source, sink, 16 << 20)
    finally:
        if compressed:
            raw.unlink(missing_ok=True)
