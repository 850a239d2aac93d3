"""MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``) and DICOM through SimpleITK, with spacing,
origin and direction.

A single DICOM file is a one-slice volume; a folder must hold one DICOM series.  This
module reads DICOM's pixels and geometry for :mod:`.dicom`, which adds the headers a
derived series needs and writes DICOM.  DICOM headers are read with pydicom first, large values left unread, so that
a damaged or hostile file cannot make GDCM allocate gigabytes while it looks at it: a
file that is not a DICOM image (no Rows, Columns or Pixel Data) is ignored in a folder and
refused on its own, an image whose pixel data is shorter than its tags declare is refused,
and only checked files reach SimpleITK, which reads the pixels.  Even so GDCM can take
gigabytes and seconds to parse a damaged file that pydicom reads (found by fuzzing: 1.2 kB
files that took 1.4 GB, or 0.9 GB and 6 s), so it first reads the headers of every DICOM file
in a child process whose address space and CPU time are bounded (:data:`GDCM_PROBE_BYTES`,
:data:`GDCM_PROBE_SECONDS`); a file it cannot read there is refused.  A MetaImage or NRRD
header that declares more than :data:`MAX_DIMENSIONS` dimensions is refused before ITK reads
it (MetaIO spends seconds on ``NDims = 999999996``).  Reading checks what a
careful viewer checks, from the headers first:

* a folder with several series is refused with the list of them (never the larger one
  silently);
* the slices' positions (Image Position / Orientation Patient) decide the slice spacing:
  all slices at one position, two slices at one position, different orientations or a
  stack that is not along its normal (gantry tilt) are refused; a missing slice or an
  otherwise non-uniform spacing is resampled onto a regular grid at the smallest spacing
  (linear interpolation between neighbouring slices), with a warning
  (:class:`~napari_upfusion.errors.InputWarning`), as 3D Slicer's acquisition geometry
  regularisation does;
* 3 or 4 values per voxel are colour only when they are 8- or 16-bit unsigned integers
  or the file says so (this package marks the colour images it writes; NRRD's
  ``RGB-color`` kind); other vector images (float displacement fields, an NRRD list axis)
  are refused.

SimpleITK's and GDCM's own warnings are switched off (:func:`simpleitk`), and what ITK's
MetaIO and NRRD readers print straight to the process's stderr while they read or write
("MetaImage: M_Read: Error parsing file") is caught (:func:`_native_stderr_caught`): what
they would say is checked here and said in one sentence.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, InputWarning
from ...utils.files import short_path
from ..image import ImageData
from .header import ImageHeader
from .staging import stored_dtype

__all__ = [
    "COLOUR_KEY",
    "GDCM_PROBE_BYTES",
    "GDCM_PROBE_SECONDS",
    "MAX_DIMENSIONS",
    "header_dicom",
    "header_sitk",
    "is_dicom_file",
    "read_dicom_series",
    "read_sitk",
    "simpleitk",
    "write_sitk",
]

#: Metadata key this package writes into MetaImage and NRRD files that hold colour (RGB or RGBA).
COLOUR_KEY = "upfusion_colour"
_POSITION_TOL = 0.01  # mm: how far slice positions may stray from a regular, straight stack
#: How far, per mm along the normal, slice positions may stray sideways: tan(0.5 degrees).  Real series round
#: their orientation cosines (nibabel's Siemens test series strays 0.016 mm over 3 mm, 0.3 degrees); a CT
#: gantry tilt is several degrees.
_TILT_TOL = 0.0087
#: Address space of the child process in which GDCM first reads DICOM headers: 640 MiB (1.5 times what it takes
#: for a small file, libraries included) plus four times the largest file's size.
GDCM_PROBE_BYTES = 640 << 20
#: CPU seconds that child may take: 5, plus 0.05 per file.
GDCM_PROBE_SECONDS = 5.0
_PROBE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[2]), int(sys.argv[2])))
import SimpleITK as sitk
sitk.ProcessObject.SetGlobalWarningDisplay(False)
for index, name in enumerate(sys.stdin.read().split("\\0")):
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        reader.ReadImageInformation()
    except Exception:
        print(index)
        sys.exit(3)
"""


@functools.cache
def simpleitk() -> Any:
    """The SimpleITK module, with its global warning display (ITK's and GDCM's raw messages on stderr) off."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def _dtype(sitk: Any, pixel_id: int) -> tuple[np.dtype, bool]:
    """The numpy dtype of one component of SimpleITK pixel type ``pixel_id``, and whether it is a vector type."""
    names = ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
    for name in names:
        if pixel_id == getattr(sitk, f"sitk{name}"):
            return np.dtype(name.lower()), False
        if pixel_id == getattr(sitk, f"sitkVector{name}"):
            return np.dtype(name.lower()), True
    raise InputError(f"Pixels of type {sitk.GetPixelIDValueAsString(pixel_id)} are not supported; give grey or RGB images.")


def _is_colour(reader: Any, components: int, dtype: np.dtype) -> bool:
    """Whether ``components`` values per voxel are colour: unsigned 8/16-bit, or marked as colour by the file."""
    if components == 1:
        return False
    keys = set(reader.GetMetaDataKeys())
    marked = (COLOUR_KEY in keys) or any(
        reader.GetMetaData(k).strip().lower() in ("rgb-color", "rgba-color") for k in keys if k.startswith("NRRD_kinds")
    )
    return components in (3, 4) and (dtype in (np.uint8, np.uint16) or marked)


@functools.lru_cache(maxsize=64)
def _probe(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> int | None:
    """The index of the first of ``paths`` whose header GDCM cannot read in a child process within
    :data:`GDCM_PROBE_BYTES` (plus four times the largest file) of address space and :data:`GDCM_PROBE_SECONDS`
    of CPU (``None``: all can); kept per file sizes and times (``stamps``)."""
    memory = GDCM_PROBE_BYTES + 4 * max(size for size, _ in stamps)
    seconds = round(GDCM_PROBE_SECONDS + 0.05 * len(paths))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(memory), str(seconds)], input="\0".join(paths), capture_output=True,
            text=True, timeout=600, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # no child process here: read in this process, as before
        return None
    if done.returncode == 0:
        return None
    found = done.stdout.strip()
    return int(found) if found.isdigit() else 0


def _checked_by_gdcm(paths: list[str] | tuple[str, ...]) -> None:
    """Refuse, in one sentence, the first of ``paths`` that GDCM cannot read in bounded memory (see the module
    docstring); on systems without ``resource`` limits nothing is probed."""
    if os.name != "posix":  # pragma: no cover - no address-space limit to set
        return
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, paths))
    bad = _probe(tuple(str(p) for p in paths), stamps)
    if bad is not None:
        raise InputError(
            f"{Path(paths[bad]).name} is not a readable DICOM image (GDCM cannot read its header, at least not "
            "within bounded memory and time); the file is damaged: copy it again."
        )


@contextlib.contextmanager
def _native_stderr_caught() -> Iterator[None]:
    """While the block runs, what C++ code writes to file descriptor 2 goes to a temporary file that is dropped
    (ITK's MetaIO and NRRD readers print their errors there; the exception that follows is what counts)."""
    if os.name != "posix":  # pragma: no cover
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _information(path: Path | str) -> Any:
    sitk = simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _native_stderr_caught():
        reader.ReadImageInformation()
    return reader


#: The most dimensions a MetaImage or NRRD header may declare (a colour 3-D image with a time axis of one is 5).
MAX_DIMENSIONS = 5
_DIMENSION_KEYS = re.compile(rb"^\s*(?:NDims\s*=|dimension\s*:)\s*(\d+)", re.MULTILINE)


#: A detached header's data file: MetaImage's ``ElementDataFile = NAME`` and NRRD's ``data file: NAME``.
_DATA_FILE_KEYS = re.compile(rb"^[ \t]*(?:ElementDataFile[ \t]*=|data ?file[ \t]*:)[ \t]*([^\r\n]*)", re.MULTILINE)


def _check_data_file(path: Path, head: bytes) -> None:
    """A detached header (``.mhd``, ``.nhdr``) must name a regular file that exists: a named pipe there would block
    the reader for ever and a device never ends.  ``LOCAL`` data, file lists and numbered patterns are left to
    the reader."""
    found = _DATA_FILE_KEYS.search(head)
    if found is None:
        return
    name = found.group(1).decode("utf-8", "replace").strip()
    if not name or name.split()[0] in ("LOCAL", "LIST") or "%" in name:
        return
    data = Path(path).parent / name
    if not data.exists():
        raise InputError(
            f"{Path(path).name} keeps its pixels in {name}, which does not exist; copy that file next to the header."
        )
    if not data.is_file():
        raise InputError(
            f"{Path(path).name} keeps its pixels in {name}, which is not a regular file (a folder, named pipe or "
            "device); point the header at the data file."
        )


def header_sitk(path: Path) -> ImageHeader:
    """What a MetaImage, NRRD or single DICOM file declares (SimpleITK reads the header only)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    declared = _DIMENSION_KEYS.search(head)
    if declared is not None and not 2 <= int(declared.group(1)) <= MAX_DIMENSIONS:
        raise InputError(
            f"{Path(path).name} declares {int(declared.group(1))} dimensions; only 2-D and 3-D images are supported."
        )
    if Path(path).suffix.lower() in (".mhd", ".mha", ".nhdr", ".nrrd"):
        _check_data_file(path, head)
    return _header_of(path, _information(path), "MetaImage/NRRD/DICOM")


def _header_of(path: Path, reader: Any, fmt: str, slices: int | None = None) -> ImageHeader:
    sitk = simpleitk()
    dimension = reader.GetDimension()
    size = list(reader.GetSize())
    while dimension > 3 and size[-1] == 1:
        size.pop()
        dimension -= 1
    if dimension not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but {Path(path).name} is {dimension}-D.")
    if slices is not None:
        size = size[:2] + [slices]
    components = reader.GetNumberOfComponents()
    dtype, _ = _dtype(sitk, reader.GetPixelID())
    rgb = _is_colour(reader, components, dtype)
    if components > 1 and not rgb:
        raise InputError(
            f"{Path(path).name} holds {components} {dtype.name} values per voxel: a vector image, not RGB colour "
            "(colour files hold 8- or 16-bit values or are marked as colour); extract one component first, for "
            "example with SimpleITK's VectorIndexSelectionCast."
        )
    shape = tuple(int(n) for n in reversed(size))
    nbytes = int(np.prod(shape, dtype=np.float64)) * components * dtype.itemsize * 2  # ITK's buffer and numpy's copy
    return ImageHeader(shape, rgb, dtype, nbytes, fmt)


def read_sitk(path: Path | list[str]) -> ImageData:
    sitk = simpleitk()
    if not isinstance(path, list):
        header_sitk(path)
    with _native_stderr_caught():
        image = sitk.ReadImage(path if isinstance(path, list) else str(path))
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but this one is {image.GetDimension()}-D.")
    return ImageData.from_sitk(image)


# ---------------------------------------------------------------------- DICOM series
@dataclass(frozen=True)
class _Series:
    """One DICOM series of a folder, its files sorted along the slice normal, and how to make it regular."""

    uid: str
    files: tuple[str, ...]
    positions: np.ndarray | None  # each slice's distance along the normal (mm), None without position tags
    spacing: float | None  # the regular spacing to resample to, None when the slices are regular already
    reader: Any  # header of the first file

    @property
    def slices(self) -> int:
        if self.spacing is None or self.positions is None:
            return len(self.files)
        return round(float(self.positions[-1] - self.positions[0]) / self.spacing) + 1


@dataclass(frozen=True)
class _DicomFile:
    """What pydicom read of one DICOM image file's tags (pixel data and other large values left unread)."""

    path: str
    series: str
    description: str
    position: np.ndarray | None  # Image Position (Patient), mm
    orientation: np.ndarray | None  # Image Orientation (Patient): row and column directions


def _numbers(ds: Any, keyword: str, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in ds.get(keyword)], dtype=float)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (count,) and np.all(np.isfinite(values)) else None


def _length(element: Any) -> int | None:
    """The length of a pydicom element as read (a raw element's declared length, a read value's size), or ``None``
    for a value pydicom left unread."""
    length = getattr(element, "length", None)
    if length is not None:
        return int(length)
    value = getattr(element, "value", None)
    return len(value) if isinstance(value, (bytes, bytearray)) else None


def _dicom_file(path: Path | str) -> _DicomFile | None:
    """The tags of a DICOM image file, or ``None`` for a file that is not one (another file in a series folder);
    a DICOM image whose tags contradict each other or its length is refused in one sentence."""
    import pydicom

    with warnings.catch_warnings():  # pydicom's notes on odd files: what matters is said below
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path), defer_size=4096, force=True)
            pixels = ds.get_item(0x7FE00010)
            rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            bits, samples = int(ds.get("BitsAllocated") or 0), int(ds.get("SamplesPerPixel") or 1)
            frames = int(ds.get("NumberOfFrames") or 1)
            meta = list(ds.file_meta) if hasattr(ds, "file_meta") else []  # every element converted: none damaged
            syntax = ds.file_meta.get("TransferSyntaxUID") if meta else None
            encapsulated = bool(getattr(syntax, "is_encapsulated", False))
            series, description = str(ds.get("SeriesInstanceUID") or ""), str(ds.get("SeriesDescription") or "")
            position, orientation = _numbers(ds, "ImagePositionPatient", 3), _numbers(ds, "ImageOrientationPatient", 6)
        except Exception:  # noqa: BLE001 - whatever pydicom cannot read is not a DICOM image here, or a damaged one
            if is_dicom_file(path):
                raise InputError(
                    f"The DICOM file {Path(path).name} is damaged (its tags cannot be read); copy it again."
                ) from None
            return None
    if pixels is None or rows <= 0 or columns <= 0:
        return None
    name = Path(path).name
    if is_dicom_file(path) and not getattr(syntax, "is_transfer_syntax", False):
        raise InputError(
            f"The DICOM file {name} has a damaged file meta header (no valid Transfer Syntax UID), so how its pixels "
            "are stored is unknown; copy it again."
        )
    if not (rows <= 65535 and columns <= 65535 and bits in (1, 8, 16, 32, 64) and samples in (1, 3, 4)
            and 1 <= frames <= 65535):  # fmt: skip
        raise InputError(
            f"The DICOM file {name} declares an image of {rows} x {columns} pixels, {frames} frame(s), {samples} "
            f"sample(s) of {bits} bits, which no DICOM image has; the file is damaged."
        )
    needed = -(-rows * columns * frames * samples * bits // 8)
    held = _length(pixels)
    if not encapsulated and held is not None and held != 0xFFFFFFFF and held < needed:
        raise InputError(
            f"The DICOM file {name} is truncated: its tags declare {needed:,} bytes of pixel data but it holds "
            f"{held:,}; copy it again."
        )
    return _DicomFile(str(path), series, description, position, orientation)


def is_dicom_file(path: Path | str) -> bool:
    """True if ``path`` starts like a DICOM file (the "DICM" marker after the 128-byte preamble)."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _series_list(folder: Path) -> dict[str, list[_DicomFile]]:
    """The DICOM images of ``folder`` by Series Instance UID (other files are ignored)."""
    found: dict[str, list[_DicomFile]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and (info := _dicom_file(path)) is not None:
            found.setdefault(info.series, []).append(info)
    return found


def _describe_series(uid: str, files: list[_DicomFile]) -> str:
    name = files[0].description.strip()
    return f"{uid or 'no UID'} ({f'{name!r}, ' if name else ''}{len(files)} file{'s' if len(files) > 1 else ''})"


def _series(folder: Path, warn: bool = True) -> _Series:
    """The one series of ``folder``, checked and planned (see the module docstring); ``warn`` says (as an
    :class:`~napari_upfusion.errors.InputWarning`) when it will be resampled."""
    found = _series_list(folder)
    where = short_path(folder)
    if not found:
        raise InputError(f"The folder {where} holds no DICOM series; choose a folder of DICOM slices or an image file.")
    if len(found) > 1:
        listed = "; ".join(_describe_series(uid, files) for uid, files in sorted(found.items()))
        raise InputError(
            f"The folder {where} holds {len(found)} DICOM series ({listed}); put each series in a folder of its own "
            "and give that folder."
        )
    uid, infos = next(iter(found.items()))
    files = tuple(info.path for info in infos)
    _checked_by_gdcm(files)
    first = _information(files[0])  # a checked file: SimpleITK's view of its pixel type
    geometry = [(info.position, info.orientation) for info in infos]
    if len(files) == 1 or any(p is None or o is None for p, o in geometry):
        return _Series(uid, files, None, None, first)
    orientations = np.array([o for _, o in geometry])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise InputError(
            f"The slices of the DICOM series in {where} have different orientations (Image Orientation Patient), so "
            "they do not form one volume; check the series."
        )
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    positions = np.array([p for p, _ in geometry])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    files = tuple(files[i] for i in order)
    steps = np.diff(along)
    if np.ptp(along) < 1e-3:
        raise InputError(
            f"The DICOM series in {where} has all its {len(files)} slices at one position, so it has no slice "
            "spacing; it may be separate images rather than a volume: give one of its files, or fix the series."
        )
    if steps.min() < 1e-3:
        k = int(np.argmin(steps))
        raise InputError(
            f"The DICOM series in {where} has two slices at the same position ({along[k]:.2f} mm along the normal); "
            "it may mix two acquisitions: keep one of them in the folder."
        )
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    if np.abs(offsets).max() > _POSITION_TOL + _TILT_TOL * np.ptp(along):
        raise InputError(
            f"The slices of the DICOM series in {where} are not stacked along their normal (a tilted gantry?), so "
            "they do not form a regular volume; resample the series first (3D Slicer corrects gantry tilt)."
        )
    spacing = float(steps.min())
    if steps.max() - spacing <= max(_POSITION_TOL, 0.01 * spacing):
        return _Series(uid, files, along, None, first)
    regular = _Series(uid, files, along, spacing, first)
    if regular.slices > 4 * len(files):
        raise InputError(
            f"The slice spacing of the DICOM series in {where} is too irregular ({spacing:.3g} to {steps.max():.3g} "
            "mm) to be resampled onto one regular grid; check the series."
        )
    if not warn:
        return regular
    gap = "a slice may be missing" if np.all(np.abs(steps / spacing - np.round(steps / spacing)) < 0.01) else "uneven"
    warnings.warn(
        f"The DICOM series in {where} has non-uniform slice spacing ({spacing:.3g} to {steps.max():.3g} mm; {gap}), "
        f"so it was resampled onto a regular grid of {spacing:.3g} mm along the slices (linear interpolation), as "
        "3D Slicer's acquisition geometry regularisation does.",
        InputWarning,
        stacklevel=4,
    )
    return regular


def header_dicom(path: Path) -> ImageHeader:
    """What a DICOM file or series folder declares, from the headers of its files (no pixel data)."""
    if not path.is_dir():
        if _dicom_file(path) is None:
            raise InputError(
                f"{path.name} is not a DICOM image (pydicom finds no Rows, Columns and Pixel Data in it); give an "
                "image file or a DICOM series folder."
            )
        _checked_by_gdcm([str(path)])
        return _header_of(path, _information(path), "DICOM")
    series = _series(path, warn=False)
    return _header_of(path, series.reader, "DICOM", slices=series.slices if len(series.files) > 1 else None)


def _resampled(volume: Any, series: _Series) -> Any:
    """``volume`` (the series read slice by slice) on a regular grid at ``series.spacing`` along the normal."""
    sitk = simpleitk()
    data = sitk.GetArrayFromImage(volume).astype(np.float32)
    along = series.positions
    targets = along[0] + series.spacing * np.arange(series.slices)
    below = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, len(along) - 2)
    weight = ((targets - along[below]) / (along[below + 1] - along[below])).astype(np.float32)
    shape = (-1,) + (1,) * (data.ndim - 1)
    regular = data[below] * (1 - weight).reshape(shape) + data[below + 1] * weight.reshape(shape)
    image = sitk.GetImageFromArray(regular, isVector=volume.GetNumberOfComponentsPerPixel() > 1)
    image.SetOrigin(volume.GetOrigin())
    image.SetDirection(volume.GetDirection())
    image.SetSpacing(volume.GetSpacing()[:2] + (series.spacing,))
    return image


def read_dicom_series(folder: Path) -> tuple[ImageData, list[str]]:
    """The one DICOM series of ``folder`` as a volume, regular along its normal (see the module docstring), and
    the series' files in slice order."""
    sitk = simpleitk()
    series = _series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    with _native_stderr_caught():
        volume = reader.Execute()
    if series.spacing is not None:
        volume = _resampled(volume, series)
    if volume.GetDimension() not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but this one is {volume.GetDimension()}-D.")
    image = ImageData.from_sitk(volume)
    image.metadata.update(dicom_series_uid=series.uid, dicom_series_in_folder=1)
    return image, list(series.files)


def write_sitk(image: ImageData, path: Path) -> None:
    sitk = simpleitk()
    out = image.with_array(stored_dtype(image.array)).to_sitk()
    if image.rgb:  # float colour is not colour by convention: say so in the file
        out.SetMetaData(COLOUR_KEY, "RGB" if image.array.shape[-1] == 3 else "RGBA")
    with _native_stderr_caught():
        sitk.WriteImage(out, str(path), True)
