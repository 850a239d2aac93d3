"""MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``) and DICOM through SimpleITK, with spacing,
origin and direction.

A single DICOM file is a one-slice volume; a folder is read as the largest DICOM
series in it.  DICOM is read only.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..image import ImageData
from .staging import stored_dtype

__all__ = ["read_dicom_series", "read_sitk", "write_sitk"]


def read_sitk(path: Path | list[str]) -> ImageData:
    import SimpleITK as sitk

    image = sitk.ReadImage(path if isinstance(path, list) else str(path))
    if image.GetDimension() not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but this one is {image.GetDimension()}-D.")
    return ImageData.from_sitk(image)


def read_dicom_series(folder: Path) -> ImageData:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader
    series = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in reader.GetGDCMSeriesIDs(str(folder))}
    if not series:
        raise InputError(
            f"The folder {folder} holds no DICOM series; choose a folder of DICOM slices or an image file."
        )
    uid = max(series, key=lambda key: len(series[key]))
    image = read_sitk(list(series[uid]))
    image.metadata.update(dicom_series_uid=uid, dicom_series_in_folder=len(series))
    return image


def write_sitk(image: ImageData, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image.with_array(stored_dtype(image.array)).to_sitk(), str(path), True)
