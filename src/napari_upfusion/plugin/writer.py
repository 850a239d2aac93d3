"""npe2 writers: an Image layer to NIfTI (or MetaImage / NRRD), or to a DICOM series folder, with its placement.

The layer's ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` become the
file's voxel spacing, origin and direction (:func:`~napari_upfusion.plugin.layers.image_from_layer_state`),
and :func:`~napari_upfusion.engine.io.write_image` writes atomically.  A file read by
this plugin's reader and saved again keeps its geometry.  napari's save dialog asks
before replacing an existing file, so an existing file is overwritten here.

The DICOM writer (:func:`write_dicom_layer`) has no file extension, as npe2 expects of a
writer of folders: pick "UP-Fusion DICOM series folder" in napari's save dialog and
type a folder name, or call ``viewer.layers.save(folder, plugin="napari-upfusion.write_dicom")``.
It writes a new series; a fused layer made from a layer this plugin read from DICOM
carries that series' headers (``metadata["dicom"]``), so the new series joins its
patient, study and frame of reference and names its slices as sources.
"""

from __future__ import annotations

from typing import Any

from ..engine.image import ImageData
from ..engine.io import write_image

__all__ = ["write_dicom_layer", "write_image_layer"]


def _layer_image(data: Any, meta: dict[str, Any]) -> ImageData:
    """The image a layer with this data and these attributes shows, with the layer's metadata."""
    from .layers import image_from_layer_state

    return image_from_layer_state(
        data,
        scale=meta.get("scale"),
        translate=meta.get("translate"),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        affine=meta.get("affine"),
        rgb=meta.get("rgb"),
        multiscale=bool(meta.get("multiscale", False)),
        metadata=meta.get("metadata"),
        name=str(meta.get("name", "layer")),
    )


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
        ``shear``, ``affine``, ``rgb``, ``multiscale``, ``name``, ``metadata`` ...).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    InputError
        Data the format cannot hold (colour in NIfTI, 4-D data...) or a failed write; nothing is left behind.
    """
    return [str(write_image(_layer_image(data, meta), path, overwrite=True))]


def write_dicom_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: save image ``data`` as a new DICOM series in the folder ``path``.

    Parameters
    ----------
    path
        The folder to write (replaced if it exists); one file per slice.
    data, meta
        As for :func:`write_image_layer`; ``meta["metadata"]`` gives the fusion record (``"upfusion"``)
        and the reference series' headers (``"dicom"``) when the layer is a fusion result.

    Returns
    -------
    list of str
        The folder written.

    Raises
    ------
    InputError
        Data DICOM cannot hold (RGBA, sheared axes, NaN...) or a failed write; nothing is left behind.
    """
    return [str(write_image(_layer_image(data, meta), path, overwrite=True, format="dicom"))]
