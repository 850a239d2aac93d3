"""Image files in and out: :func:`read_image`, :func:`write_image` and :func:`open_lazy` (:mod:`.api`).

One module per family of formats (:mod:`.nifti`, :mod:`.sitk`, :mod:`.plain`,
:mod:`.zarr_array`), the registry that picks them by extension (:mod:`.formats`),
what a file declares before its pixels are read (:mod:`.header`, :func:`image_header`)
and what every writer shares (:mod:`.staging`).
"""

from .api import image_header, open_lazy, read_image, write_image
from .formats import SUPPORTED_EXTENSIONS, is_dicom_file
from .header import ImageHeader
from .nifti import array_affine_to_nifti_affine, nifti_affine_to_array_affine
from .staging import staged_output

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageHeader",
    "array_affine_to_nifti_affine",
    "image_header",
    "is_dicom_file",
    "nifti_affine_to_array_affine",
    "open_lazy",
    "read_image",
    "staged_output",
    "write_image",
]
