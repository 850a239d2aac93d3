"""zarr folders: where a lazy result is streamed slab by slab, and a lazy input is opened from.

The geometry (spacing, origin, direction) and the fusion record are kept in the
array's attributes, so a folder written by :func:`write_zarr` opens again with its
geometry; any other zarr array gets unit geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..image import ImageData
from ..slicing import computed_blocks
from .staging import stored_dtype

__all__ = ["open_zarr", "write_zarr"]


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write_zarr(image: ImageData, target: Path) -> None:
    """A lazy image written slab by slab to a zarr folder, with its geometry and provenance in the attributes."""
    import zarr

    x = image.array
    dtype = stored_dtype(np.empty(0, dtype=x.dtype)).dtype
    z = zarr.create_array(str(target), shape=x.shape, chunks=tuple(max(c) for c in x.chunks), dtype=dtype)
    z.attrs.update(
        _json_safe(
            {
                "upfusion_image": {
                    "spacing": image.spacing,
                    "origin": image.origin,
                    "direction": image.direction.tolist(),
                    "has_geometry": image.has_geometry,
                    "rgb": image.rgb,
                },
                **({"upfusion": image.metadata["upfusion"]} if "upfusion" in image.metadata else {}),
            }
        )
    )
    for starts, block in computed_blocks(x):
        z[tuple(slice(s, s + n) for s, n in zip(starts, block.shape))] = stored_dtype(block)


def open_zarr(path: Path, metadata: dict[str, Any]) -> ImageData:
    """The zarr array in folder ``path`` as an :class:`ImageData` holding a dask array (only attributes are read)."""
    import dask.array as da
    import zarr

    try:
        z = zarr.open_array(str(path), mode="r")
    except Exception as error:
        raise InputError(f"{path} is not a readable zarr array; give the folder of a single zarr array.") from error
    geometry = dict(z.attrs.get("upfusion_image", {}))
    return ImageData(
        da.from_zarr(z),
        geometry.get("spacing"),
        geometry.get("origin"),
        geometry.get("direction"),
        rgb=bool(geometry.get("rgb", False)),
        has_geometry=geometry.get("has_geometry", False) if geometry else False,
        metadata={"format": "zarr", **metadata},
    )
