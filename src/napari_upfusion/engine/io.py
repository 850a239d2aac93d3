"""Reading and writing images and volumes as :class:`~napari_upfusion.engine.image.ImageData`.

Formats
-------
- NIfTI (``.nii``, ``.nii.gz``) through nibabel.  Always read as a 3-D volume
  (a 2-D NIfTI becomes one slice; a trailing axis of length 1 is dropped).  The
  RAS+ affine over ``(i, j, k)`` is converted to this package's convention (array
  order ``(z, y, x) = (k, j, i)``, physical coordinates in reversed LPS, see
  :mod:`.image`) and back exactly; the header is kept, so a NIfTI written from an
  image read from NIfTI keeps its fields (description, units, intent, codes).
  A 2-D image written to NIfTI becomes a one-slice volume.  RGB24/RGBA32 NIfTI is
  read as colour; colour is not written to NIfTI (use MetaImage, NRRD, PNG or TIFF).
- MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``), DICOM files
  (``.dcm`` or any file with the DICOM preamble) and DICOM series folders
  (the largest series in the folder) through SimpleITK, keeping spacing, origin
  and direction.  A single DICOM file is a one-slice volume.  DICOM is read only.
- PNG, TIFF, JPEG (2-D; TIFF also 3-D stacks) through imageio and tifffile: grey,
  RGB, RGBA, 8 or 16 bit.  These carry no physical geometry: unit spacing and
  ``has_geometry=False``; geometry is dropped when writing them.

Data types when writing
-----------------------
- NIfTI, MetaImage, NRRD: floating-point data is written as float32, booleans as
  uint8, other integers unchanged.
- PNG, JPEG, TIFF: float data within ``[0, 1]`` is written as 8 bit,
  ``round(clip(x, 0, 1) * 255)``.  Other float data is kept as float32 in TIFF and
  refused by PNG and JPEG.  Integers go to PNG as uint8/uint16 and to JPEG as
  uint8 when their values fit; TIFF keeps them as they are.

Writes are atomic: the file is written into a temporary folder beside the target
and moved into place with ``os.replace``; on any failure nothing is left behind
and an existing file is untouched.  An existing file is only replaced with
``overwrite=True``.  A process killed while writing can leave only its staging
folder, ``.<name>.<random>.partial``, never a partial ``<name>``.

An image whose array is lazy (dask) is written by :func:`.lazy.write_lazy`,
slab by slab: NIfTI and zarr (``.zarr``) are streamed, other formats computed whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UPFusionError
from .image import ImageData, is_lazy_array

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "array_affine_to_nifti_affine",
    "is_dicom_file",
    "nifti_affine_to_array_affine",
    "read_image",
    "staged_output",
    "write_image",
]

# extension -> format name; the name picks the reader and writer below.
_FORMATS = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".dcm": "DICOM",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)

# NIfTI voxel (i, j, k) <-> array index (k, j, i), and RAS+ (x, y, z) <-> reversed LPS (S, P, L).
_REVERSE = np.eye(4)[[2, 1, 0, 3]]
_RAS_TO_SPL = np.array([[0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def _extension(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` starts like a DICOM file (the "DICM" marker after the 128-byte preamble)."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _format(path: Path) -> str:
    """The format name of an existing or future file, from its extension."""
    try:
        return _FORMATS[_extension(path)]
    except KeyError:
        known = ", ".join(SUPPORTED_EXTENSIONS)
        raise InputError(
            f"{path.name} has an extension this tool does not know; use one of {known} (or a DICOM folder)."
        ) from None


# ---------------------------------------------------------------------- NIfTI
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


def _read_nifti(path: Path, lazy: bool = False) -> ImageData:
    """NIfTI as an ``ImageData``; ``lazy`` gives a dask array read in slabs along k (grey volumes only)."""
    import nibabel as nib

    nifti = nib.load(str(path), mmap=False)
    if lazy:
        data = _lazy_nifti_data(nifti)
    else:
        data = np.asanyarray(nifti.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise InputError(
            f"{path.name} holds {data.ndim}-D data of shape {data.shape}; extract a single 3-D volume first."
        )
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

    from .lazy import SLAB_BYTES

    proxy = nifti.dataobj
    shape = tuple(int(n) for n in proxy.shape)
    if proxy.dtype.names is not None:
        raise InputError("Colour (RGB) NIfTI cannot be opened lazily; read it with read_image instead.")
    plane = int(np.prod(shape[:2])) * max(1, int(np.prod(shape[3:])))
    slab = max(1, min(shape[2], SLAB_BYTES // (4 * plane))) if len(shape) >= 3 else -1
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


def _write_nifti(image: ImageData, path: Path) -> None:
    import nibabel as nib

    if image.rgb:
        raise InputError(
            f"NIfTI cannot hold this colour image; save {path.name} as .mha, .nrrd, .png or .tif instead."
        )
    volume = _as_volume(image)
    data = np.moveaxis(_stored_dtype(volume.array), (0, 1, 2), (2, 1, 0))
    affine = array_affine_to_nifti_affine(volume.index_to_world_affine())
    header = image.nifti_header
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    nifti = cls(data, None, header=header.copy() if header is not None else None, dtype=data.dtype)
    nifti.header.set_slope_inter(None, None)  # the data are stored unscaled
    nifti.set_qform(affine, int(nifti.header["qform_code"]) or 1)
    nifti.set_sform(affine, int(nifti.header["sform_code"]) or 1)
    nib.save(nifti, str(path))


# ---------------------------------------------------------------------- SimpleITK
def _read_sitk(path: Path | list[str]) -> ImageData:
    import SimpleITK as sitk

    image = sitk.ReadImage(path if isinstance(path, list) else str(path))
    if image.GetDimension() not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but this one is {image.GetDimension()}-D.")
    return ImageData.from_sitk(image)


def _read_dicom_series(folder: Path) -> ImageData:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader
    series = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in reader.GetGDCMSeriesIDs(str(folder))}
    if not series:
        raise InputError(
            f"The folder {folder} holds no DICOM series; choose a folder of DICOM slices or an image file."
        )
    uid = max(series, key=lambda key: len(series[key]))
    image = _read_sitk(list(series[uid]))
    image.metadata.update(dicom_series_uid=uid, dicom_series_in_folder=len(series))
    return image


def _stored_dtype(array: np.ndarray) -> np.ndarray:
    """Float data as float32 and booleans as uint8, for NIfTI, MetaImage and NRRD."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    return array.astype(np.uint8) if array.dtype == bool else array


def _write_sitk(image: ImageData, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image.with_array(_stored_dtype(image.array)).to_sitk(), str(path), True)


# ---------------------------------------------------------------------- PNG, TIFF, JPEG
def _read_plain(path: Path) -> ImageData:
    if _format(path) == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
        if "S" in axes:
            array = np.moveaxis(array, axes.index("S"), -1)
    else:
        import imageio.v3 as iio

        array = iio.imread(path, index=0)
        axes = "YXS" if array.ndim == 3 else "YX"
    if "S" in axes and array.shape[-1] in (1, 2):  # grey, or grey + alpha: keep the grey
        array, axes = array[..., 0], axes.replace("S", "")
    rgb = "S" in axes
    while array.ndim - rgb > 2 and array.shape[0] == 1:
        array = array[0]
    return ImageData(array, rgb=rgb)


def _plain_array(image: ImageData, path: Path) -> np.ndarray:
    """The array converted to what the 2-D format of ``path`` can store (see the module docstring)."""
    fmt, array = _format(path), image.array
    keep = f"save {path.name} as .tif, .nii.gz or .mha instead"
    if fmt != "TIFF" and image.ndim != 2:
        raise InputError(f"{fmt} holds a single 2-D image, not a {image.shape} volume; {keep}.")
    if fmt == "JPEG" and image.rgb and array.shape[-1] == 4:
        raise InputError(f"JPEG cannot hold transparency (RGBA); save {path.name} as .png or .tif instead.")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if np.all(np.isfinite(array)) and array.min(initial=0) >= 0 and array.max(initial=0) <= 1:
            return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
        if fmt == "TIFF":
            return array.astype(np.float32, copy=False)
        raise InputError(f"{fmt} cannot hold float values outside [0, 1]; scale the image to [0, 1] or {keep}.")
    if fmt == "TIFF":
        return array
    allowed = [np.uint8] if fmt == "JPEG" or image.rgb else [np.uint8, np.uint16]
    for dtype in allowed:
        info = np.iinfo(dtype)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return array.astype(dtype, copy=False)
    bits = "8" if len(allowed) == 1 else "8 or 16"
    raise InputError(f"{fmt} can hold only {bits}-bit values here, but this image goes beyond them; {keep}.")


def _write_plain(image: ImageData, path: Path) -> None:
    array = _plain_array(image, path)
    if _format(path) == "TIFF":
        import tifffile

        tifffile.imwrite(path, array, photometric="rgb" if image.rgb else "minisblack")
    else:
        import imageio.v3 as iio

        iio.imwrite(path, array, **({"quality": 95} if _format(path) == "JPEG" else {}))


_READERS: dict[str, Callable[[Path], ImageData]] = {
    "NIfTI": _read_nifti,
    "MetaImage": _read_sitk,
    "NRRD": _read_sitk,
    "DICOM": _read_sitk,
    "PNG": _read_plain,
    "TIFF": _read_plain,
    "JPEG": _read_plain,
}
_WRITERS: dict[str, Callable[[ImageData, Path], None]] = {
    "NIfTI": _write_nifti,
    "MetaImage": _write_sitk,
    "NRRD": _write_sitk,
    "PNG": _write_plain,
    "TIFF": _write_plain,
    "JPEG": _write_plain,
}


# ---------------------------------------------------------------------- public API
def read_image(path: str | os.PathLike[str], modality: str | None = None) -> ImageData:
    """Read an image file, or the DICOM series in a folder, with its physical geometry.

    Parameters
    ----------
    path
        A file with a supported extension (see :data:`SUPPORTED_EXTENSIONS`), a DICOM
        file without extension, or a folder holding a DICOM series.
    modality
        Stored as ``metadata["modality"]`` when given (e.g. ``"MRI"``, ``"PET"``).

    Returns
    -------
    ImageData
        ``metadata`` holds ``"path"``, ``"format"`` and, when given, ``"modality"``.

    Raises
    ------
    InputError
        The path is missing, is a folder without DICOM series, has an unknown
        extension, or is not a readable image of its format.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path and try again.")
    if path.is_dir():
        fmt, reader = "DICOM", _read_dicom_series
    else:
        fmt = "DICOM" if _extension(path) not in _FORMATS and is_dicom_file(path) else _format(path)
        reader = _READERS[fmt]
    try:
        image = reader(path)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{path} is not a readable {fmt} image; check that the file is complete.") from error
    image.metadata.update(path=str(path), format=fmt, **({"modality": modality} if modality else {}))
    return image


def write_image(image: ImageData, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``image`` atomically in the format given by the extension of ``path``.

    Parameters
    ----------
    image
        The image; its array is never modified.  Geometry is written to NIfTI,
        MetaImage and NRRD; see the module docstring for the data types written.
    path
        Target file: ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``,
        ``.png``, ``.tif``, ``.tiff``, ``.jpg`` or ``.jpeg``.
    overwrite
        Replace an existing file (the CLI's ``--force``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        Unknown or read-only format, missing or unwritable folder, an existing file
        without ``overwrite``, data the format cannot hold, or a failed write; in
        every case nothing is left behind.
    """
    path = Path(path).expanduser().absolute()
    if is_lazy_array(image.array):
        from .lazy import write_lazy

        return write_lazy(image, path, overwrite=overwrite)
    fmt = _format(path)
    if fmt not in _WRITERS:
        raise InputError(f"Writing {fmt} is not supported; save {path.name} as .nii.gz, .mha or .nrrd instead.")
    with staged_output(path, overwrite=overwrite) as staging:
        _WRITERS[fmt](image, staging / path.name)
    return path


@contextlib.contextmanager
def staged_output(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A fresh staging folder beside ``path``; what is written in it is moved into place when the block ends.

    Every file or folder written into the staging folder is moved to ``path``'s
    folder with ``os.replace`` (the one named like ``path`` last, so that it
    appears only when its companions are in place); on any failure, or if the
    block raises, nothing is moved and the staging folder is removed.

    Parameters
    ----------
    path
        The target (absolute); its folder must exist.
    overwrite
        Replace existing targets (a folder target is moved aside first, then removed).

    Yields
    ------
    pathlib.Path
        The staging folder, ``.<name>.<random>.partial`` beside ``path``.

    Raises
    ------
    InputError
        Missing folder, an existing target without ``overwrite``, an unwritable
        folder, or a failure while writing (then nothing was written).
    """
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"The folder {folder} does not exist; create it first or choose another output path.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --force (overwrite=True) to replace it or choose another name.")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=folder))
    except OSError as error:
        raise InputError(f"Cannot write in {folder} ({error.strerror}); choose a folder you may write to.") from None
    try:
        yield staging
        produced = sorted(staging.iterdir(), key=lambda item: item.name == path.name)  # the main file last
        clashes = [folder / item.name for item in produced if (folder / item.name).exists() and item.name != path.name]
        if clashes and not overwrite:
            raise InputError(f"{clashes[0]} already exists; pass --force (overwrite=True) to replace it.")
        for item in produced:
            target = folder / item.name
            if item.is_dir() and target.exists():  # os.replace cannot replace a non-empty folder
                os.replace(target, staging / f"{item.name}.replaced")
            os.replace(item, target)
    except UPFusionError:
        raise
    except Exception as error:
        raise InputError(
            f"Writing {path} failed ({type(error).__name__}), so nothing was written; "
            f"check the free space and permissions of {folder}."
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
