"""npe2 writer: an Image layer to NIfTI (or MetaImage / NRRD) with its physical placement.

The layer's ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` become the
file's voxel spacing, origin and direction (:func:`~napari_upfusion.plugin.layers.image_from_layer_state`),
and :func:`~napari_upfusion.engine.io.write_image` writes atomically.  A file read by
this plugin's reader and saved again keeps its geometry.  napari's save dialog asks
before replacing an existing file, so an existing file is overwritten here.
"""

from __future__ import annotations

from typing import Any

from ..engine.io import write_image

__all__ = ["write_image_layer"]


def write_image_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: save image ``data`` with the layer attributes ``meta`` to ``path``.

    Parameters
    ----------
    path
        Target file; the format follows its extension (``.nii``, ``.nii.gz``, ``.mha``, ``.nrrd``).
    data
        The layer's data (level 0 is written for a multiscale layer).
    meta
        The layer's attributes as napari passes them (``scale``, ``translate``, ``rotate``,
        ``shear``, ``affine``, ``rgb``, ``multiscale``, ``name`` ...).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    InputError
        Data the format cannot hold (colour in NIfTI, 4-D data...) or a failed write; nothing is left behind.
    """
    from .layers import image_from_layer_state

    image = image_from_layer_state(
        data,
        scale=meta.get("scale"),
        translate=meta.get("translate"),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        affine=meta.get("affine"),
        rgb=meta.get("rgb"),
        multiscale=bool(meta.get("multiscale", False)),
        name=str(meta.get("name", "layer")),
    )
    return [str(write_image(image, path, overwrite=True))]
