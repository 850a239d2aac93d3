"""File > Open Sample > UP-Fusion: two aligned image pairs built from data shipped inside pip packages.

Provenance (see :mod:`napari_upfusion.data.samples` for every step):

* **Brain MRI + PET** (:func:`brain_mri_pet`): the MRI is the real ICBM 2009a
  MNI152 T1 template bundled with the ``nilearn`` package, with a simulated skull
  and scalp around it; the PET is **simulated** (FDG-like uptake from the
  template's grey/white-matter maps, 6 mm FWHM, 3 % noise).  2 mm voxels, placed in
  MNI152 space in mm.
* **Visible + infrared** (:func:`infrared_visible`): the visible image is
  scikit-image's bundled "astronaut" photograph (real); the infrared image is
  **simulated** from its colours and brightness (a thermal proxy).  Pixel units.

Nothing is downloaded: both are built from files inside the installed packages.
The functional / infrared images are not measurements and have no diagnostic meaning.
"""

from __future__ import annotations

from typing import Any

from ..data import samples
from ..engine.image import ImageData
from .layers import image_layer_data

__all__ = ["brain_mri_pet", "infrared_visible"]

LayerData = tuple[Any, dict[str, Any], str]


def _metadata(pair: samples.SamplePair, modality: str, role: str) -> dict[str, Any]:
    return {"modality": modality, "sample": role, "description": pair.description}


def brain_mri_pet() -> list[LayerData]:
    """Layers ``MRI`` (real MNI152 T1 template) and ``PET`` (simulated, FDG-like), aligned, 2 mm, in MNI mm.

    Returns
    -------
    list of (data, kwargs, "image")
        Both layers record ``metadata["modality"]`` (``"MRI"``, ``"PET"``), so the
        UP-Fusion widget and :func:`~napari_upfusion.fuse_layers` know the pair.
    """
    pair = samples.brain_mri_pet()
    mri = ImageData.from_array(pair.a, pair.spacing, pair.origin)
    pet = ImageData.from_array(pair.b, pair.spacing, pair.origin)
    return [
        image_layer_data(
            mri, "MRI", colormap="gray", contrast_limits=(0.0, 1.0), metadata=_metadata(pair, "MRI", "real")
        ),
        image_layer_data(
            pet,
            "PET",
            colormap="inferno",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            opacity=0.6,
            metadata=_metadata(pair, "PET", "simulated"),
        ),
    ]


def infrared_visible() -> list[LayerData]:
    """Layers ``visible`` (scikit-image's astronaut photograph, RGB) and ``infrared`` (simulated), 512 x 512.

    Returns
    -------
    list of (data, kwargs, "image")
        ``metadata["modality"]`` is ``"VIS"`` and ``"IR"``.  No physical geometry (pixel units).
    """
    pair = samples.infrared_visible()
    visible = ImageData.from_array(pair.a, rgb=True)
    infrared = ImageData.from_array(pair.b, rgb=False)
    return [
        image_layer_data(visible, "visible", metadata=_metadata(pair, "VIS", "real")),
        image_layer_data(
            infrared,
            "infrared",
            colormap="gray",
            contrast_limits=(0.0, 1.0),
            opacity=0.5,
            metadata=_metadata(pair, "IR", "simulated"),
        ),
    ]
