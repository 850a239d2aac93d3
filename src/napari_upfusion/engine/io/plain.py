"""PNG, TIFF and JPEG through imageio and tifffile: pictures without physical geometry.

2-D images (TIFF also 3-D stacks): grey, RGB, RGBA, 8 or 16 bit.  They carry no
physical geometry: unit spacing and ``has_geometry=False``; geometry is dropped
when writing them.

Data types when writing: float data within ``[0, 1]`` is written as 8 bit,
``round(clip(x, 0, 1) * 255)``.  Other float data is kept as float32 in TIFF and
refused by PNG and JPEG.  Integers go to PNG as uint8/uint16 and to JPEG as uint8
when their values fit; TIFF keeps them as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from ..image import ImageData

__all__ = ["eight_bit", "plain_array", "read_plain", "write_plain"]


def read_plain(path: Path, fmt: str) -> ImageData:
    """A PNG, JPEG (imageio) or TIFF (``fmt="TIFF"``, tifffile) image: grey or colour, 2-D or a TIFF stack."""
    if fmt == "TIFF":
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


def eight_bit(array: np.ndarray) -> np.ndarray | None:
    """``array`` as 8 bit: floats within ``[0, 1]`` as ``round(x * 255)``, integers within 0-255 as they are; else
    None."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if np.all(np.isfinite(array)) and array.min(initial=0) >= 0 and array.max(initial=0) <= 1:
            return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
        return None
    if array.size == 0 or (array.min() >= 0 and array.max() <= 255):
        return array.astype(np.uint8, copy=False)
    return None


def plain_array(image: ImageData, path: Path, fmt: str) -> np.ndarray:
    """The array converted to what format ``fmt`` can store (see the module docstring)."""
    array = image.array
    keep = f"save {path.name} as .tif, .nii.gz or .mha instead"
    if fmt != "TIFF" and image.ndim != 2:
        raise InputError(f"{fmt} holds a single 2-D image, not a {image.shape} volume; {keep}.")
    if fmt == "JPEG" and image.rgb and array.shape[-1] == 4:
        raise InputError(f"JPEG cannot hold transparency (RGBA); save {path.name} as .png or .tif instead.")
    if array.dtype == bool or array.dtype.kind == "f":
        small = eight_bit(array)
        if small is not None:
            return small
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


def write_plain(image: ImageData, path: Path, fmt: str) -> None:
    """Write ``image`` as ``fmt`` (PNG, JPEG or TIFF), converted by :func:`plain_array`."""
    array = plain_array(image, path, fmt)
    if fmt == "TIFF":
        import tifffile

        tifffile.imwrite(path, array, photometric="rgb" if image.rgb else "minisblack")
    else:
        import imageio.v3 as iio

        iio.imwrite(path, array, **({"quality": 95} if fmt == "JPEG" else {}))
