"""The one registry of image file formats: by extension, how each is read and written.

Every part of the package that depends on a file's format asks here: reading and
writing (:mod:`.api`), the napari reader's file types (those with physical geometry),
the output names of a batch (a derived image keeps its input's format family, or
goes to the folder format it names), and the checks of an output before any work
(:func:`~napari_upfusion.engine.validate.check_output` asks :func:`output_format` and
the format's ``accepts``).  A format is chosen by the extension of a file, or by its
name (:func:`output_format`); a format written as a folder of files (a DICOM series)
only by its name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ..image import ImageData
from . import dicom, nifti, plain, sitk
from .header import ImageHeader
from .sitk import is_dicom_file

__all__ = [
    "FORMATS",
    "SUPPORTED_EXTENSIONS",
    "Format",
    "extension",
    "format_named",
    "format_of",
    "is_dicom_file",
    "output_format",
    "writable_extensions",
]


@dataclass(frozen=True)
class Format:
    """An image file format.

    ``read(path)`` and ``write(image, path)`` (``None``: read only); ``stream(image,
    path)`` writes a lazy (dask) image slab by slab (``None``: it is computed whole
    first); ``geometry`` says whether the format keeps physical spacing, origin and
    direction; ``output_extension`` is the extension an image derived from a file of
    this format is written with unless another format is named (DICOM gives NIfTI);
    ``folder`` says that ``write`` makes a folder of files (a DICOM series), which is
    written only when the format is named, whatever the folder's name.
    ``header(path)`` reads what a file declares (shape, colour, data type) without
    its pixels, and refuses what the reader would refuse (``None``: the reader itself
    is the only check); ``accepts(shape, rgb, path)`` refuses, in the writer's own
    words, an image the format cannot hold (``None``: it holds any 2-D or 3-D image).
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[Path], ImageData]
    write: Callable[[ImageData, Path], None] | None
    geometry: bool
    output_extension: str
    stream: Callable[[ImageData, Path], None] | None = None
    header: Callable[[Path], ImageHeader] | None = None
    accepts: Callable[[tuple[int, ...], bool, Path], None] | None = None
    folder: bool = False


def _plain(name: str, extensions: tuple[str, ...], output: str) -> Format:
    read = functools.partial(plain.read_plain, fmt=name)
    write = functools.partial(plain.write_plain, fmt=name)
    header = functools.partial(plain.header_plain, fmt=name)
    accepts = functools.partial(plain.check_plain_output, fmt=name)
    return Format(name, extensions, read, write, False, output, header=header, accepts=accepts)


#: Every format by name; the extensions are matched in lower case.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "NIfTI", (".nii", ".nii.gz"), nifti.read_nifti, nifti.write_nifti, True, ".nii.gz", nifti.write_nifti_streamed,
            header=nifti.header_nifti, accepts=nifti.check_nifti_output,
        ),
        Format("MetaImage", (".mha", ".mhd"), sitk.read_sitk, sitk.write_sitk, True, ".mha", header=sitk.header_sitk),
        Format("NRRD", (".nrrd", ".nhdr"), sitk.read_sitk, sitk.write_sitk, True, ".nrrd", header=sitk.header_sitk),
        Format("DICOM", (".dcm",), dicom.read_dicom_file, dicom.write_dicom_series, True, ".nii.gz", folder=True),
        _plain("PNG", (".png",), ".png"),
        _plain("TIFF", (".tif", ".tiff"), ".tif"),
        _plain("JPEG", (".jpg", ".jpeg"), ".png"),
    )
}
_BY_EXTENSION: dict[str, str] = {ext: f.name for f in FORMATS.values() for ext in f.extensions}
#: Every extension a file may have, in the order of :data:`FORMATS`.
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_BY_EXTENSION)


def extension(path: str | Path) -> str:
    """The image extension of ``path`` in lower case (``.nii.gz`` counts as one)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def format_of(path: str | Path) -> Format:
    """The format of an existing or future file, from its extension; an unknown one is refused in one sentence."""
    try:
        return FORMATS[_BY_EXTENSION[extension(path)]]
    except KeyError:
        known = ", ".join(SUPPORTED_EXTENSIONS)
        raise InputError(
            f"{Path(path).name} has an extension this tool does not know; use one of {known} (or a DICOM folder)."
        ) from None


def writable_extensions() -> tuple[str, ...]:
    """Every extension an image file can be written with, in the order of :data:`FORMATS` (a format written as a
    folder of files, DICOM, has none)."""
    return tuple(ext for f in FORMATS.values() if f.write is not None and not f.folder for ext in f.extensions)


def format_named(name: str) -> Format:
    """The format called ``name`` in any case (``"dicom"``, ``"nifti"`` ...); an unknown name is refused in one
    sentence."""
    found = {key.lower(): fmt for key, fmt in FORMATS.items()}.get(name.lower())
    if found is None:
        names = ", ".join(key.lower() for key in FORMATS)
        raise InputError(f"Unknown image format {name!r}; use one of {names}, or none to follow the extension.")
    return found


def output_format(path: str | Path, name: str | None = None) -> Format:
    """The format to write ``path`` in: the one called ``name`` (any case), else the one its extension gives.

    Refused in one sentence: an unknown name, an extension no writer takes (the message lists the
    writable ones), a named file format that ``path``'s extension contradicts, and a folder format
    (DICOM) chosen by extension alone.
    """
    if name is None:
        found = _BY_EXTENSION.get(extension(path))
        if found is None:
            raise InputError(
                f"{Path(path).name} has an extension this tool cannot write; use one of "
                f"{', '.join(writable_extensions())}."
            )
        fmt = FORMATS[found]
        if fmt.folder:
            raise InputError(
                f"A {fmt.name} series is a folder of files; give a folder path with format='{fmt.name.lower()}' "
                f"(--format {fmt.name.lower()}) instead of {Path(path).name}."
            )
    else:
        fmt = format_named(name)
        if not fmt.folder and extension(path) not in fmt.extensions:
            raise InputError(
                f"{Path(path).name} does not have a {fmt.name} extension ({', '.join(fmt.extensions)}); "
                "rename it or leave the format out."
            )
    if fmt.write is None:
        raise InputError(f"Writing {fmt.name} is not supported; save {Path(path).name} as .nii.gz, .mha or .nrrd.")
    return fmt
