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
from .header import ImageHeader

__all__ = ["check_plain_output", "eight_bit", "header_plain", "plain_array", "read_plain", "write_plain"]


#: The fewest bytes a TIFF page takes: its tag count, one 12-byte tag and the offset of the next page.
_SMALLEST_PAGE = 18


def _one_series(tif, path: Path):
    """The one image (series) of a TIFF file; pages of different sizes or kinds are refused, and so is a chain of
    pages longer than the file could hold (found by fuzzing: a 284-byte file whose page offsets loop, on which
    tifffile walks pages for ever)."""
    size = path.stat().st_size
    most = max(1, size // _SMALLEST_PAGE)
    for count, _ in enumerate(tif.pages, start=1):
        if count > most:
            raise InputError(
                f"{path.name} is a damaged TIFF: its chain of pages is longer than a file of {size} bytes could hold "
                f"(more than {most}); save the image again."
            )
    if len(tif.series) != 1:
        shapes = " and ".join(" x ".join(map(str, s.shape)) for s in tif.series[:4])
        raise InputError(
            f"{path.name} holds {len(tif.series)} images of different sizes or kinds ({shapes}"
            f"{' and more' if len(tif.series) > 4 else ''}); save one image per file, or a stack of equal pages."
        )
    return tif.series[0]


def _layout(shape: tuple[int, ...], axes: str) -> tuple[tuple[int, ...], bool, int]:
    """The spatial shape, colour flag and values per pixel that :func:`read_plain` gives ``shape`` with ``axes``."""
    shape, channels = list(shape), 1
    if "S" in axes:
        channels = shape.pop(axes.index("S"))
    if channels > 4:
        raise InputError(f"This file holds {channels} values per pixel; give grey, RGB or RGBA images.")
    rgb = channels not in (1, 2)  # grey, or grey + alpha: the grey is kept
    while len(shape) > 2 and shape[0] == 1:
        shape.pop(0)
    if len(shape) not in (2, 3):
        raise InputError(
            f"Only 2-D images and 3-D stacks are supported, but this file holds {len(shape)}-D data of shape "
            f"{tuple(shape)}; save a single image or stack."
        )
    return tuple(shape), rgb, channels if rgb else 1


def header_plain(path: Path, fmt: str) -> ImageHeader:
    """What a PNG, JPEG (Pillow reads the header only) or TIFF (tifffile reads its tags only) declares."""
    if fmt == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = _one_series(tif, path)
            shape, rgb, channels = _layout(tuple(series.shape), series.axes)
            dtype = np.dtype(series.dtype)
    else:
        import warnings

        from PIL import Image

        with warnings.catch_warnings():  # Pillow's size warning: the memory check below says it in one sentence
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                picture = Image.open(path)
            except Image.DecompressionBombError:
                most = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
                raise InputError(
                    f"{path.name} declares more than {most:.0f} megapixels, which Pillow refuses to decode from a {fmt} "
                    "file (a small file that claims that many is a decompression bomb); crop or downscale the image, "
                    "or save it as TIFF."
                ) from None
            with picture:
                width, height = picture.size
                bands = len(picture.getbands()) if picture.mode != "P" else 3
                dtype = np.dtype(np.uint16 if picture.mode.startswith("I;16") else np.uint8)
                if picture.mode in ("I", "F"):
                    dtype = np.dtype(np.int32 if picture.mode == "I" else np.float32)
        shape, rgb, channels = _layout((height, width, bands), "YXS")
    nbytes = int(np.prod(shape, dtype=np.float64)) * channels * dtype.itemsize * 2  # decoded, and one copy
    return ImageHeader(shape, rgb, dtype, nbytes, fmt)


def read_plain(path: Path, fmt: str) -> ImageData:
    """A PNG, JPEG (imageio) or TIFF (``fmt="TIFF"``, tifffile) image: grey or colour, 2-D or a TIFF stack."""
    if fmt == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = _one_series(tif, path)
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


def check_plain_output(shape: tuple[int, ...], rgb: bool, path: Path, fmt: str) -> None:
    """Refuse what format ``fmt`` cannot hold whatever the values: a volume in PNG or JPEG."""
    if fmt != "TIFF" and len(shape) != 2:
        keep = f"save {path.name} as .tif, .nii.gz or .mha instead"
        raise InputError(f"{fmt} holds a single 2-D image, not a {tuple(shape)} volume; {keep}.")


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
    check_plain_output(image.shape, image.rgb, path, fmt)
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
