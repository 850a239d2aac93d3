"""npe2 reader: NIfTI, MetaImage, NRRD files and DICOM folders as Image layers in physical space.

Reading is :func:`~napari_upfusion.engine.io.read_image`; placement is
:meth:`ImageData.napari_geometry <napari_upfusion.engine.image.ImageData.napari_geometry>`
(``scale`` = spacing, ``translate`` = origin, plus an ``affine`` when the axes are
rotated or flipped), so a file opened here overlays any other file of the same
patient in millimetres.  PNG, TIFF and JPEG are left to napari's own reader.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..engine.io import read_image
from ..engine.io.formats import FORMATS, is_dicom_file

__all__ = ["SUFFIXES", "get_reader", "read_layers"]

#: Files this reader claims (lower case): the formats that keep physical geometry; folders are claimed when they
#: hold DICOM files.  PNG, TIFF and JPEG are left to napari's own reader.
SUFFIXES: tuple[str, ...] = tuple(ext for fmt in FORMATS.values() if fmt.geometry for ext in fmt.extensions)

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]


def _is_dicom_folder(folder: Path, limit: int = 64) -> bool:
    """Whether ``folder`` holds DICOM files (looks at up to ``limit`` of its files)."""
    try:
        files = list(itertools.islice((p for p in folder.iterdir() if p.is_file()), limit))
        return any(item.suffix.lower() == ".dcm" or is_dicom_file(item) for item in files)
    except OSError:
        return False


def _readable(path: PathLike) -> bool:
    path = Path(path)
    if path.is_dir():
        return _is_dicom_folder(path)
    name = path.name.lower()
    return name.endswith(SUFFIXES) and path.is_file()


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def read_layers(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read one file or DICOM folder (or several) into napari image layer-data tuples.

    Parameters
    ----------
    path
        A NIfTI / MetaImage / NRRD / DICOM file, a folder with a DICOM series, or a list of them.

    Returns
    -------
    list of (data, kwargs, "image")
        One layer per path, named after the file, with ``scale``, ``translate`` (and ``affine``
        for rotated axes) in mm, grey colormap, and ``metadata`` holding ``path``, ``format`` and,
        for DICOM, ``dicom`` (the headers a fused layer's DICOM series is linked to the series with).

    Raises
    ------
    InputError
        A file that cannot be read as an image of its format (one sentence, shown by napari).
    """
    from .layers import image_layer_data

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for item in paths:
        image = read_image(item)
        metadata = {key: image.metadata[key] for key in ("path", "format", "dicom") if key in image.metadata}
        layers.append(image_layer_data(image, _layer_name(Path(item)), metadata=metadata))
    return layers


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader``: :func:`read_layers` when every path is a file type or DICOM folder it reads, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_readable(item) for item in paths):
        return None
    return read_layers
