"""MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``) through SimpleITK, with spacing, origin and
direction; :func:`read_sitk` also reads DICOM's pixels and geometry for :mod:`.dicom`."""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..image import ImageData
from .staging import stored_dtype

__all__ = ["read_sitk", "write_sitk"]


def read_sitk(path: Path | list[str]) -> ImageData:
    import SimpleITK as sitk

    image = sitk.ReadImage(path if isinstance(path, list) else str(path))
    if image.GetDimension() not in (2, 3):
        raise InputError(f"Only 2-D and 3-D images are supported, but this one is {image.GetDimension()}-D.")
    return ImageData.from_sitk(image)


def write_sitk(image: ImageData, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image.with_array(stored_dtype(image.array)).to_sitk(), str(path), True)
