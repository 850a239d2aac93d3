"""DICOM in (a series folder or a file) and out (a new, derived series linked to the series it came from).

Reading
-------
Pixels and geometry come through SimpleITK after pydicom's checks (:mod:`.sitk`): a
folder must hold one DICOM series (several are refused with their list), a file is a
one-slice volume (or the volume of a multi-frame file).  pydicom then reads the headers, and the image keeps
in ``metadata["dicom"]`` what a derived series needs, and nothing more: ``"header"``,
the attributes :data:`KEPT_ATTRIBUTES` of the first file in pydicom's JSON form
(never private tags), and ``"slices"``, the SOP Class and Instance UID and the
position (LPS, mm) of every file.  A header that pydicom cannot read leaves the image
without ``metadata["dicom"]``.  The engine carries this entry from the reference
input (``a``) to the fused result, whose grid is the reference's.

Writing (:func:`write_dicom_series`)
------------------------------------
One file per slice along array axis 0 (a 2-D image is one file), Explicit VR Little
Endian, in a new folder, built on highdicom's :class:`~highdicom.SOPClass` (file
meta, patient, study, series, equipment and SOP common modules) with pydicom.

- SOP Class: MR Image Storage when the reference is MR (DICOM modality ``MR``, or the
  project's modality ``MRI``), CT Image Storage when it is CT, both with Image Type
  ``DERIVED\\SECONDARY``; Secondary Capture Image Storage (modality ``OT``, conversion
  type ``WSD``) for colour results, for images without physical geometry and for
  any other reference.  The modality IODs are the ones that viewers rebuild volumes
  from (OHIF's MPR, for one, only rebuilds MR, CT, PT and NM series).
- With a DICOM reference: the same patient and study (the Patient and Study
  modules copied with :meth:`highdicom.SOPClass.copy_patient_and_study_information`),
  the same Frame of Reference UID, body part, laterality and patient position; a new
  Series Instance UID (series number: the reference's plus 1000) and new SOP Instance
  UIDs (pydicom's :func:`~pydicom.uid.generate_uid`); each slice lists the reference
  slice at the same place as its Source Image Sequence item (purpose: DCM 121322,
  source image for image processing operation) and in the Referenced Series
  Sequence.  An MR series copies the reference's Scanning Sequence and Sequence
  Variant, the two MR Image attributes that must have a value.
- Without one (NIfTI, MetaImage, NRRD, plain arrays): a standalone series whose
  identifiers say they are generated: patient name ``ANONYMOUS^UPFUSION``, patient ID
  ``UPFUSION-`` and 12 hexadecimal digits, study ID ``UPFUSION``, new study and frame
  of reference UIDs, empty birth date, sex and accession number, the study dated
  when it was written.  An MR series says that its sequence is not known (Scanning
  Sequence ``RM``, Sequence Variant ``NONE``).
- Series Description ``UP-Fusion <model> <A>+<B>``; Derivation Description: the
  package version, model, modalities, prompt and the reference series.
- Geometry from the grid: Image Orientation and Position (Patient), Pixel Spacing,
  Slice Thickness and Spacing Between Slices (both the slice step), Slice Location.
  Image axes must be at right angles.
- Pixels: grey values as 16-bit integers, ``stored = round((value - intercept) /
  slope)`` with one Rescale Slope and Intercept for the series that map the
  stored range 0-65535 onto the image's range, so values come back within
  ``range / 131070`` (integer images that fit 16 bits are stored as they are);
  Window Center/Width cover the range when it is at least 1 (DICOM's linear window
  is never narrower; for a fused image in ``[0, 1]`` viewers take the full range).
  Colour as 8-bit RGB (Samples per Pixel 3, Planar Configuration 0): values in
  ``[0, 1]`` as ``round(x * 255)``, or integers within 0-255.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from ...errors import InputError
from ..image import ImageData
from .plain import eight_bit
from .sitk import read_dicom_series as _read_series
from .sitk import read_sitk

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["KEPT_ATTRIBUTES", "dicom_reference", "read_dicom_file", "read_dicom_series", "write_dicom_series"]

#: The attributes of a read series' first file that an image keeps (``metadata["dicom"]["header"]``), by keyword.
KEPT_ATTRIBUTES: tuple[str, ...] = (
    # which series and instance it is
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    # Patient module
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    # General Study module
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription",
    # where the slices are: Frame of Reference, the body part and how the patient lay
    "FrameOfReferenceUID", "PositionReferenceIndicator", "BodyPartExamined", "Laterality", "PatientPosition",
    "ImageOrientationPatient",
    # the MR Image attributes that an MR series must give a value
    "ScanningSequence", "SequenceVariant",
)  # fmt: skip

#: The standalone series' patient name: says that nobody's data is in it.
STANDALONE_PATIENT = "ANONYMOUS^UPFUSION"
_MANUFACTURER = "napari-upfusion"
_MAX_STORED = 65535  # 16-bit unsigned
_SAME_PLACE = 0.01  # a reference slice is at the same place within this share of the smallest pixel spacing
_AT_RIGHT_ANGLES = 1e-4  # |cosine| between two image axes that counts as perpendicular


# ---------------------------------------------------------------------------------------------- reading
def dicom_reference(files: Sequence[str | Path]) -> dict[str, Any] | None:
    """What a derived series needs of the DICOM files of a series (``metadata["dicom"]``), or None.

    Parameters
    ----------
    files
        The series' files; the first gives the header.

    Returns
    -------
    dict or None
        ``{"header": <pydicom JSON of KEPT_ATTRIBUTES>, "slices": [{"class", "uid", "position"}, ...]}``,
        ``position`` the Image Position (Patient) in mm or None; None when pydicom cannot read the headers.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        first = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        header = pydicom.Dataset()
        for keyword in KEPT_ATTRIBUTES:
            if keyword in first:
                header.add(first.data_element(keyword))
        slices = []
        for path in files:
            ds = first if path is files[0] else pydicom.dcmread(path, stop_before_pixels=True, force=True)
            position = ds.get("ImagePositionPatient")
            slices.append(
                {
                    "class": str(ds.get("SOPClassUID", first.get("SOPClassUID", ""))),
                    "uid": str(ds.get("SOPInstanceUID", "")),
                    "position": [float(v) for v in position] if position is not None and len(position) == 3 else None,
                }
            )
        return {"header": header.to_json_dict(), "slices": slices}
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def _with_reference(image: ImageData, files: Sequence[str | Path]) -> ImageData:
    reference = dicom_reference(files)
    if reference is not None:
        image.metadata["dicom"] = reference
    return image


def read_dicom_file(path: Path) -> ImageData:
    """One DICOM file (a one-slice volume, or a multi-frame volume) with the headers a derived series needs."""
    return _with_reference(read_sitk(path), [path])


def read_dicom_series(folder: Path) -> ImageData:
    """The one DICOM series in ``folder`` (:func:`~.sitk.read_dicom_series` checks it), with the headers a derived
    series needs."""
    image, files = _read_series(folder)
    return _with_reference(image, files)


# ---------------------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class _Grid:
    """An image as a stack of slices in DICOM's terms: LPS millimetres, one plane per slice."""

    stack: np.ndarray  # (slices, rows, columns[, samples])
    axes: np.ndarray  # 3x3, columns: the LPS unit vectors of the slice, row (y) and column (x) axes
    spacing: tuple[float, float, float]  # slice step, row spacing, column spacing
    origin: np.ndarray  # LPS position of the first pixel of the first slice
    volume: bool  # a 3-D image (else a 2-D image, one slice without a thickness)

    @classmethod
    def of(cls, image: ImageData) -> _Grid:
        array = np.asarray(image.array)
        direction = np.asarray(image.direction, dtype=float)
        if image.ndim == 3:  # array order (z, y, x), coordinates in reversed LPS (S, P, L)
            axes, spacing, origin = direction[::-1, :], image.spacing, np.asarray(image.origin[::-1])
        else:  # (y, x) in (P, L): a slice in the plane S = 0, whose normal is the slice axis
            axes = np.zeros((3, 3))
            axes[:2, 1:] = direction[::-1, :]
            axes[:, 0] = np.cross(axes[:, 2], axes[:, 1])
            axes[:, 0] /= np.linalg.norm(axes[:, 0])
            spacing, origin = (1.0, *image.spacing), np.array([image.origin[1], image.origin[0], 0.0])
            array = array[None]
        grid = cls(array, axes, tuple(float(s) for s in spacing), origin, image.ndim == 3)
        if image.has_geometry:
            grid.check_right_angles()
        return grid

    def check_right_angles(self) -> None:
        pairs = [(1, 2)] + ([(0, 1), (0, 2)] if self.volume and len(self.stack) > 1 else [])
        if any(abs(self.axes[:, i] @ self.axes[:, j]) > _AT_RIGHT_ANGLES for i, j in pairs):
            raise InputError(
                "A DICOM series needs image axes at right angles, but this image's grid is sheared; resample it "
                "onto a rectilinear grid first or write NIfTI (.nii.gz) instead."
            )

    def position(self, k: int) -> np.ndarray:
        """Image Position (Patient) of slice ``k``."""
        return self.origin + self.axes[:, 0] * self.spacing[0] * k

    @property
    def orientation(self) -> list[float]:
        """Image Orientation (Patient): the row direction (along x), then the column direction (along y)."""
        return [*self.axes[:, 2], *self.axes[:, 1]]


def _letters(vector: np.ndarray) -> str:
    """Patient Orientation of a direction in LPS: its main patient direction first, then the others it leans to."""
    names = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(vector))
    return "".join(names[i][int(vector[i] < 0)] for i in order if abs(vector[i]) > _AT_RIGHT_ANGLES)


# ---------------------------------------------------------------------------------------------- the pixels
@dataclass(frozen=True)
class _Pixels:
    """Pixel values as DICOM stores them, and how they map back to the image's values."""

    stored: np.ndarray  # (slices, rows, columns) uint16/int16, or (slices, rows, columns, 3) uint8
    photometric: str
    bits: int
    rescale: tuple[str, str] | None  # (slope, intercept) as written (decimal strings); None: identity
    window: tuple[str, str] | None  # (center, width) in the image's values; None: the viewer's choice


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _pixels(stack: np.ndarray, rgb: bool) -> _Pixels:
    if rgb:
        if stack.shape[-1] != 3:
            raise InputError(
                "DICOM colour images are RGB, but this image has an alpha channel (RGBA); drop it (keep the first "
                "three channels) or write PNG/TIFF instead."
            )
        stored = eight_bit(stack)
        if stored is None:
            raise InputError(
                "A DICOM colour image holds 8-bit RGB, but this image's values are neither within [0, 1] nor whole "
                "numbers within 0-255; scale it to [0, 1] first."
            )
        return _Pixels(stored, "RGB", 8, None, None)
    if stack.dtype == bool:
        stack = stack.astype(np.uint8)
    if stack.dtype.kind in "iu" and stack.size:
        low, high = int(stack.min()), int(stack.max())
        for dtype in (np.uint16, np.int16):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                window = (_ds((low + high) / 2), _ds(max(high - low, 1)))
                return _Pixels(stack.astype(dtype), "MONOCHROME2", 16, None, window)
    values = stack.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(
            "DICOM stores whole numbers, but this image holds NaN or infinite values; replace them (for example "
            "with 0) or write NIfTI (.nii.gz) instead."
        )
    low, high = float(values.min()), float(values.max())
    intercept = _ds(low)
    slope = _ds((high - low) / _MAX_STORED if high > low else 1.0)
    stored = np.clip(np.round((values - float(intercept)) / float(slope)), 0, _MAX_STORED).astype(np.uint16)
    window = (_ds((low + high) / 2), _ds(high - low)) if high - low >= 1 else None  # narrower: viewers take the range
    return _Pixels(stored, "MONOCHROME2", 16, (slope, intercept), window)


# ---------------------------------------------------------------------------------------------- the series
def _reference(image: ImageData) -> tuple[Dataset | None, list[dict[str, Any]]]:
    """The reference header (a pydicom dataset) and slices an image carries, or (None, [])."""
    from pydicom import Dataset

    entry = image.metadata.get("dicom")
    if not isinstance(entry, dict) or not entry.get("header"):
        return None, []
    header = Dataset.from_json(entry["header"])
    linked = "StudyInstanceUID" in header and "SeriesInstanceUID" in header
    return (header, list(entry.get("slices") or [])) if linked else (None, [])


def _dicom_modality(image: ImageData, header: Dataset | None) -> str | None:
    """The reference's DICOM modality: its header's, else the project's modality of input a (MRI -> MR)."""
    if header is not None and header.get("Modality"):
        return str(header.Modality)
    record = image.metadata.get("upfusion") or {}
    name = (record.get("modalities") or [image.metadata.get("modality")])[0]
    return {"MRI": "MR", "MR": "MR", "CT": "CT"}.get(str(name).upper()) if name else None


def _descriptions(image: ImageData, header: Dataset | None) -> tuple[str, str]:
    """Series Description (at most 64 characters) and Derivation Description (at most 1024)."""
    record = image.metadata.get("upfusion")
    if record:
        model = Path(str(record.get("model", "?"))).name
        modalities = [str(m) for m in record.get("modalities") or ["?", "?"]]
        series = f"UP-Fusion {model} {'+'.join(modalities)}"
        derivation = (
            f"Fused by napari-upfusion {record.get('version', __version__)} (UP-Fusion, AAAI 2026) with the {model} "
            f"model from {modalities[0]} (the reference, whose grid this series has) and {modalities[-1]}"
        )
        if record.get("prompt"):
            derivation += f"; prompt: {record['prompt']}"
    else:
        series = "napari-upfusion image"
        derivation = f"Written by napari-upfusion {__version__} from an image without a fusion record"
    if header is not None:
        described = f" ({header.SeriesDescription})" if header.get("SeriesDescription") else ""
        derivation += f"; reference series {header.get('SeriesInstanceUID', '?')}{described}"
    return series[:64], (derivation + ".")[:1024]


def _referenced(slice_: dict[str, Any], **more: Any) -> Dataset:
    """A sequence item naming one reference slice (its SOP Class and Instance UID), with ``more`` attributes."""
    from pydicom import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = slice_["class"]
    item.ReferencedSOPInstanceUID = slice_["uid"]
    for keyword, value in more.items():
        setattr(item, keyword, value)
    return item


@dataclass
class _Series:
    """Everything the files of one derived series share, and how to make the file of each slice."""

    grid: _Grid
    pixels: _Pixels
    geometry: bool
    header: Dataset | None
    slices: list[dict[str, Any]]
    sop_class: str
    modality: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    series_number: int
    descriptions: tuple[str, str]
    created: datetime.datetime

    @classmethod
    def of(cls, image: ImageData) -> _Series:
        from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

        grid = _Grid.of(image)
        header, slices = _reference(image)
        modality = _dicom_modality(image, header)
        iods = {"MR": MRImageStorage, "CT": CTImageStorage}
        if image.rgb or not image.has_geometry or modality not in iods:
            sop_class, modality = SecondaryCaptureImageStorage, "OT"
        else:
            sop_class = iods[modality]
        frame = (header.get("FrameOfReferenceUID") if header is not None else None) or generate_uid()
        number = int(header.SeriesNumber) + 1000 if header is not None and header.get("SeriesNumber") else 1
        return cls(
            grid=grid,
            pixels=_pixels(grid.stack, image.rgb),
            geometry=image.has_geometry,
            header=header,
            slices=slices,
            sop_class=sop_class,
            modality=modality,
            study_uid=str(header.StudyInstanceUID) if header is not None else generate_uid(),
            series_uid=generate_uid(),
            frame_of_reference_uid=str(frame) if image.has_geometry else None,
            series_number=number,
            descriptions=_descriptions(image, header),
            created=datetime.datetime.now(),
        )

    def _patient_and_study(self) -> dict[str, Any]:
        """highdicom's patient and study arguments: generated ones for a standalone series, else none (copied)."""
        if self.header is not None:
            return {}
        digest = hashlib.sha256(self.study_uid.encode()).hexdigest()[:12].upper()
        return {
            "patient_name": STANDALONE_PATIENT,
            "patient_id": f"UPFUSION-{digest}",
            "study_id": "UPFUSION",
            "study_date": self.created.date(),
            "study_time": self.created.time(),
        }

    def _source(self, k: int) -> list[dict[str, Any]]:
        """The reference slices at the place of slice ``k``, in the same orientation."""
        if self.header is None or not self.geometry:
            return []
        reference = self.header.get("ImageOrientationPatient")
        if reference is None or len(reference) != 6:
            return []
        reference = np.asarray([float(v) for v in reference])
        ours = np.asarray(self.grid.orientation)
        if abs(reference[:3] @ ours[:3]) < 1 - _AT_RIGHT_ANGLES or abs(reference[3:] @ ours[3:]) < 1 - _AT_RIGHT_ANGLES:
            return []
        here = self.grid.position(k)
        tolerance = _SAME_PLACE * min(self.grid.spacing[1:])
        near = [s for s in self.slices if s.get("uid") and s.get("class") and s.get("position")]
        return [s for s in near if np.linalg.norm(np.subtract(s["position"], here)) <= tolerance]

    def instance(self, k: int) -> Dataset:
        """The dataset of slice ``k`` (instance number ``k + 1``)."""
        import highdicom as hd
        from pydicom import Dataset
        from pydicom.sr.codedict import codes
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
        from pydicom.valuerep import DS

        ds = hd.SOPClass(
            study_instance_uid=self.study_uid,
            series_instance_uid=self.series_uid,
            series_number=self.series_number,
            sop_instance_uid=generate_uid(),
            sop_class_uid=self.sop_class,
            instance_number=k + 1,
            modality=self.modality,
            manufacturer=_MANUFACTURER,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=self.descriptions[0],
            manufacturer_model_name="UP-Fusion",
            software_versions=__version__,
            content_date=self.created.date(),
            content_time=self.created.time(),
            series_date=self.created.date(),
            series_time=self.created.time(),
            **self._patient_and_study(),
        )
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the reference's text, decoded by pydicom, and ours
        if self.header is not None:  # the reference's Patient and Study modules, as our IOD defines them
            source = Dataset(self.header)
            source.SOPClassUID = self.sop_class
            ds.copy_patient_and_study_information(source)
        header = self.header if self.header is not None else Dataset()
        # General Series: where the body part is and how the patient lay (type 2C: present, empty when not known)
        ds.Laterality = header.get("Laterality", "")
        if "BodyPartExamined" in header:
            ds.BodyPartExamined = header.BodyPartExamined
        if self.sop_class in (CTImageStorage, MRImageStorage):
            ds.PatientPosition = header.get("PatientPosition", "")
        # General Image and General Reference
        third = {CTImageStorage: "AXIAL"}.get(self.sop_class, "OTHER")
        ds.ImageType = ["DERIVED", "SECONDARY", third]
        ds.DerivationDescription = self.descriptions[1]
        ds.BurnedInAnnotation = "NO"
        sources = self._source(k)
        if sources:  # the reference slices at this place: the source images, and their series
            purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
            ds.SourceImageSequence = [_referenced(s, PurposeOfReferenceCodeSequence=[purpose]) for s in sources]
            series = Dataset()
            series.SeriesInstanceUID = header.SeriesInstanceUID
            series.ReferencedInstanceSequence = [_referenced(s) for s in sources]
            ds.ReferencedSeriesSequence = [series]
        # Frame of Reference, Image Plane
        grid = self.grid
        if self.geometry:
            ds.FrameOfReferenceUID = self.frame_of_reference_uid
            ds.PositionReferenceIndicator = header.get("PositionReferenceIndicator", "")
            ds.PatientOrientation = [_letters(grid.axes[:, 2]), _letters(grid.axes[:, 1])]
            ds.ImagePositionPatient = [DS(v, auto_format=True) for v in grid.position(k)]
            ds.ImageOrientationPatient = [DS(v, auto_format=True) for v in grid.orientation]
            ds.PixelSpacing = [DS(v, auto_format=True) for v in grid.spacing[1:]]
            ds.SliceThickness = DS(grid.spacing[0], auto_format=True) if grid.volume else ""
            if grid.volume:
                ds.SpacingBetweenSlices = DS(grid.spacing[0], auto_format=True)
            ds.SliceLocation = DS(grid.position(k) @ grid.axes[:, 0], auto_format=True)
        else:
            ds.PatientOrientation = ""
        # modality-specific modules
        if self.sop_class == CTImageStorage:
            ds.KVP = ""
            ds.AcquisitionNumber = ""
        elif self.sop_class == MRImageStorage:
            ds.ScanningSequence = header.get("ScanningSequence", "RM")
            ds.SequenceVariant = header.get("SequenceVariant", "NONE")
            ds.ScanOptions = ""
            ds.MRAcquisitionType = ""
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
            ds.RepetitionTime = ""
            if "IR" in ds.ScanningSequence:
                ds.InversionTime = ""
        else:
            ds.ConversionType = "WSD"
        # Image Pixel, Modality LUT, VOI LUT
        pixels = self.pixels
        ds.set_pixel_data(pixels.stored[k], pixels.photometric, pixels.bits, generate_instance_uid=False)
        identity = pixels.rescale is None
        if not identity or self.sop_class == CTImageStorage:
            ds.RescaleSlope, ds.RescaleIntercept = pixels.rescale or ("1", "0")
            if self.sop_class != MRImageStorage:
                ds.RescaleType = "US"  # unspecified: fused values are not Hounsfield units
        if pixels.window is not None:
            ds.WindowCenter, ds.WindowWidth = pixels.window
        return ds


def write_dicom_series(image: ImageData, folder: Path) -> None:
    """Write ``image`` as a new DICOM series into the new folder ``folder`` (see the module docstring).

    Parameters
    ----------
    image
        The image, usually a fusion result (its ``metadata["upfusion"]`` names the model and
        modalities, its ``metadata["dicom"]`` the reference series); any grey or RGB image works.
    folder
        The folder to create; one file per slice, ``IM00001.dcm``, ``IM00002.dcm`` ...

    Raises
    ------
    InputError
        Sheared axes, RGBA, colour values that are not 8-bit, NaN or infinite values.
    """
    series = _Series.of(image)
    folder.mkdir()
    for k in range(len(series.grid.stack)):
        series.instance(k).save_as(folder / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
