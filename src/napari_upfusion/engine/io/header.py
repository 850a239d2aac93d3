"""What an image file declares before its pixels are read: :class:`ImageHeader`.

Each family of formats reads its headers (:func:`~.nifti.header_nifti`,
:func:`~.sitk.header_sitk`, :func:`~.sitk.header_dicom`, :func:`~.plain.header_plain`)
without touching the pixel data, and refuses there whatever its reader would refuse
(4-D data, vector images that are not colour, TIFF pages of different sizes, a
truncated file), so that every check that needs only the header runs before any data
is read (:func:`~.api.image_header`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageHeader"]


@dataclass(frozen=True)
class ImageHeader:
    """The image a file declares, as :func:`~.api.read_image` would return it.

    Attributes
    ----------
    shape
        Spatial shape in array axis order (a NIfTI file is always 3-D: a 2-D one is one slice).
    rgb
        Whether the image is read as colour (RGB or RGBA).
    dtype
        The data type of the stored values.
    nbytes
        About how many bytes of memory reading the file takes at its peak.
    format
        The format's name (``"NIfTI"``, ``"DICOM"``...).
    """

    shape: tuple[int, ...]
    rgb: bool
    dtype: np.dtype
    nbytes: int
    format: str

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    def describe(self) -> str:
        """``"a 2000 x 2000 x 500 int16 volume"``: what the header declares, for a message."""
        kind = "colour " if self.rgb else ""
        noun = "volume" if self.ndim == 3 else "image"
        return f"a {' x '.join(map(str, self.shape))} {np.dtype(self.dtype).name} {kind}{noun}"
