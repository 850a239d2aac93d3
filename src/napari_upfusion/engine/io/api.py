"""Reading and writing images and volumes as :class:`~napari_upfusion.engine.image.ImageData`.

Formats (the registry is :mod:`.formats`)
-----------------------------------------
- NIfTI (``.nii``, ``.nii.gz``) through nibabel, geometry converted exactly both
  ways and the header kept (:mod:`.nifti`); colour is not written to NIfTI.
- MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``) through
  SimpleITK, keeping spacing, origin and direction (:mod:`.sitk`).
- DICOM files (``.dcm`` or any file with the DICOM preamble) and DICOM series
  folders (one series per folder) through SimpleITK after pydicom's checks
  (:mod:`.sitk`), with the headers a derived series needs (pydicom); written with
  ``format="dicom"`` as a new series in a folder, linked to the series the image
  came from (:mod:`.dicom`).
- PNG, TIFF, JPEG (2-D; TIFF also 3-D stacks) through imageio and tifffile, without
  physical geometry (:mod:`.plain`).

Data types when writing
-----------------------
- NIfTI, MetaImage, NRRD: floating-point data is written as float32, booleans as
  uint8, other integers unchanged.
- DICOM: grey values as 16-bit integers with a Rescale Slope and Intercept that
  give them back within 1/131070 of the image's range, colour as 8-bit RGB.
- PNG, JPEG, TIFF: float data within ``[0, 1]`` is written as 8 bit,
  ``round(clip(x, 0, 1) * 255)``.  Other float data is kept as float32 in TIFF and
  refused by PNG and JPEG.  Integers go to PNG as uint8/uint16 and to JPEG as
  uint8 when their values fit; TIFF keeps them as they are.

Headers first: :func:`read_image` reads what a file declares (:func:`image_header`)
and refuses from it, before reading any pixel, what cannot be read (4-D data, vector
images that are not colour, TIFF pages of different sizes, several DICOM series, a
truncated file) or would not fit in free memory.

Writes are checked before anything is written (:func:`~napari_upfusion.engine.validate.check_output`)
and atomic (:func:`~.staging.staged_output`): on any failure nothing is left
behind and an existing file is untouched; an existing file is only replaced with
``overwrite=True``.  An image whose array is lazy (dask) is written slab by slab:
NIfTI and zarr (``.zarr``) are streamed, other formats computed whole first.
:func:`open_lazy` opens a NIfTI file or a zarr folder lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...utils.files import os_error_sentence, short_path
from ..image import ImageData, is_lazy_array
from ..validate import check_output, check_read_size, output_path, path_kind
from .dicom import read_dicom_series
from .formats import FORMATS, SUPPORTED_EXTENSIONS, Format, extension, format_of, is_dicom_file, output_format
from .header import ImageHeader
from .nifti import read_nifti
from .sitk import header_dicom
from .staging import staged_output
from .zarr_array import open_zarr, write_zarr

__all__ = ["image_header", "open_lazy", "read_image", "write_image"]


def _missing(path: Path) -> InputError:
    return InputError(f"{short_path(path)} does not exist; check the path and try again.")


def _unreadable(path: Path, fmt: str) -> InputError:
    return InputError(f"{short_path(path)} is not a readable {fmt} image; check that the file is complete.")


def _reader(path: Path) -> tuple[Format | None, str]:
    """The format of an existing input (``None`` for a DICOM folder) and its name; a missing path is refused."""
    kind = path_kind(path)
    if kind is None:
        raise _missing(path)
    if kind == "dir":
        return None, "DICOM"
    if not path.is_file():
        raise InputError(
            f"{short_path(path)} is not a regular file (a named pipe, device or socket cannot be read as an image); "
            "save the image to a file and give that file's path."
        )
    try:
        unknown = extension(path) not in SUPPORTED_EXTENSIONS
        found = FORMATS["DICOM"] if unknown and is_dicom_file(path) else format_of(path)
    except OSError as error:
        raise InputError(os_error_sentence(error, path)) from None
    return found, found.name


def _guarded(path: Path, fmt: str, step, *args):
    """``step(*args)``, its failures put in one sentence: ours as they are, an OSError by its errno, any other
    failure of a library as "not a readable image"."""
    try:
        return step(*args)
    except InputError:
        raise
    except OSError as error:
        if error.errno is not None:
            raise InputError(os_error_sentence(error, path)) from None
        raise _unreadable(path, fmt) from error
    except Exception as error:
        raise _unreadable(path, fmt) from error


def image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """What an image file or DICOM folder declares (shape, colour, data type, memory to read), without its pixels.

    Refuses, in one sentence each, what :func:`read_image` would refuse from the header:
    a missing path, an unknown extension, 4-D data, vector images that are not colour, TIFF
    pages of different sizes, several DICOM series in a folder, a truncated file.

    Parameters
    ----------
    path
        As for :func:`read_image`.

    Returns
    -------
    ImageHeader
    """
    path = Path(path).expanduser()
    found, fmt = _reader(path)
    if found is None or found.name == "DICOM":
        return _guarded(path, fmt, header_dicom, path)
    if found.header is None:  # pragma: no cover - every readable format declares its header reader
        image = read_image(path)
        return ImageHeader(image.shape, image.rgb, image.array.dtype, image.array.nbytes, fmt)
    return _guarded(path, fmt, found.header, path)


def read_image(path: str | os.PathLike[str], modality: str | None = None) -> ImageData:
    """Read an image file, or the DICOM series in a folder, with its physical geometry.

    Parameters
    ----------
    path
        A file with a supported extension (see :data:`~.formats.SUPPORTED_EXTENSIONS`), a DICOM
        file without extension, or a folder holding a DICOM series.
    modality
        Stored as ``metadata["modality"]`` when given (e.g. ``"MRI"``, ``"PET"``).

    Returns
    -------
    ImageData
        ``metadata`` holds ``"path"``, ``"format"`` and, when given, ``"modality"``; a DICOM image also
        ``"dicom"``, the headers a derived series is written from (:mod:`.dicom`).

    Raises
    ------
    InputError
        The path is missing, is a folder without one DICOM series, has an unknown
        extension, declares what cannot be read or would not fit in free memory
        (:func:`image_header`), or is not a readable image of its format.
    """
    path = Path(path).expanduser()
    found, fmt = _reader(path)
    header = image_header(path)
    check_read_size(path, header.describe(), header.nbytes)
    reader = read_dicom_series if found is None else found.read
    image = _guarded(path, fmt, reader, path)
    image.metadata.update(path=str(path), format=fmt, **({"modality": modality} if modality else {}))
    return image


def write_image(
    image: ImageData, path: str | os.PathLike[str], *, overwrite: bool = False, format: str | None = None
) -> Path:
    """Write ``image`` atomically in the format given by ``format`` or by the extension of ``path``.

    Parameters
    ----------
    image
        The image; its array is never modified.  Geometry is written to NIfTI,
        MetaImage and NRRD; see the module docstring for the data types written.
        A lazy (dask) array, such as the result of a lazy fusion, is computed slab
        by slab: streamed to NIfTI and to a ``.zarr`` folder (with the geometry and
        the fusion record in its attributes), computed whole for other formats.
    path
        Target file: ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``,
        ``.png``, ``.tif``, ``.tiff``, ``.jpg`` or ``.jpeg``; ``.zarr`` for a lazy image;
        with ``format="dicom"``, the folder that receives the DICOM series.
    overwrite
        Replace an existing file or folder (the CLI's ``--force``).
    format
        A format's name in any case (``"dicom"``, ``"nifti"``, ...); None: the extension decides.
        ``"dicom"`` writes a new series with one file per slice, linked to the reference
        series when the image (a fusion of a DICOM input) carries its headers, else a
        standalone series with generated identifiers (see :mod:`.dicom`).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        Unknown or read-only format, a DICOM path without ``format="dicom"``, missing or
        unwritable folder, an existing file or folder without ``overwrite``, data the format
        cannot hold, or a failed write; in
        every case nothing is left behind (an interrupted write leaves only a
        ``.<name>.<random>.partial`` folder).
    """
    path = output_path(path).absolute()
    lazy = is_lazy_array(image.array)
    if lazy and format is None and path.name.lower().endswith(".zarr"):
        writer = write_zarr
    else:
        check_output(path, shape=image.shape, rgb=image.rgb, overwrite=overwrite, format=format)
        fmt = output_format(path, format)
        writer = fmt.stream if lazy and fmt.stream is not None else fmt.write
        if lazy and fmt.stream is None:
            image = image.with_array(np.asarray(image.array.compute(scheduler="threads")))
    with staged_output(path, overwrite=overwrite) as staging:
        writer(image, staging / path.name)
    return path


def open_lazy(path: str | os.PathLike[str], modality: str | None = None) -> ImageData:
    """Open a ``.zarr`` folder or a NIfTI file as an :class:`~napari_upfusion.engine.image.ImageData`
    holding a dask array.

    Nothing is read but the header (NIfTI) or the attributes (zarr).  A zarr
    folder written by :func:`write_image` keeps its geometry; any other zarr array
    gets unit geometry.  NIfTI is chunked in slabs along array axis 0 (NIfTI's k).

    Parameters
    ----------
    path
        A ``.zarr`` folder holding one array, or a ``.nii`` / ``.nii.gz`` grey volume.
    modality
        Stored as ``metadata["modality"]`` when given.

    Returns
    -------
    ImageData
    """
    path = Path(path).expanduser()
    if path_kind(path) is None:
        raise _missing(path)
    extra = {"path": str(path), **({"modality": modality} if modality else {})}
    if path.name.lower().endswith(".zarr"):
        return open_zarr(path, extra)
    try:
        image = read_nifti(path, lazy=True)
    except InputError:
        raise
    except Exception as error:
        raise _unreadable(path, "NIfTI") from error
    image.metadata.update(format="NIfTI", **extra)
    return image
