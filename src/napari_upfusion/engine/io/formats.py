"""The one registry of image file formats: by extension, how each is read and written.

Every part of the package that depends on a file's format asks here: reading and
writing (:mod:`.api`), the napari reader's file types (those with physical geometry),
the output names of a batch (a derived image keeps its input's format family, or
goes to the folder format it names).  A format is chosen by the extension of a
file, or by its name (:func:`output_format`); a format written as a folder of files
(a DICOM series) only by its name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ..image import ImageData
from . import dicom, nifti, plain, sitk

__all__ = [
    "FORMATS",
    "SUPPORTED_EXTENSIONS",
    "Format",
    "extension",
    "format_named",
    "format_of",
    "is_dicom_file",
    "output_format",
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
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[Path], ImageData]
    write: Callable[[ImageData, Path], None] | None
    geometry: bool
    output_extension: str
    stream: Callable[[ImageData, Path], None] | None = None
    folder: bool = False


def _plain(name: str, extensions: tuple[str, ...], output: str) -> Format:
    read = functools.partial(plain.read_plain, fmt=name)
    write = functools.partial(plain.write_plain, fmt=name)
    return Format(name, extensions, read, write, geometry=False, output_extension=output)


#: Every format by name; the extensions are matched in lower case.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "NIfTI", (".nii", ".nii.gz"), nifti.read_nifti, nifti.write_nifti, True, ".nii.gz", nifti.write_nifti_streamed
        ),
        Format("MetaImage", (".mha", ".mhd"), sitk.read_sitk, sitk.write_sitk, True, ".mha"),
        Format("NRRD", (".nrrd", ".nhdr"), sitk.read_sitk, sitk.write_sitk, True, ".nrrd"),
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

    Refused in one sentence: an unknown name or extension, a named file format that ``path``'s
    extension contradicts, and a folder format (DICOM) chosen by extension alone.
    """
    if name is None:
        fmt = format_of(path)
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


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` starts like a DICOM file (the "DICM" marker after the 128-byte preamble)."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"
