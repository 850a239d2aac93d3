"""napari-upfusion: fuse co-registered images of two modalities with the UP-Fusion network.

The public Python API::

    import napari_upfusion as nu
    mri, pet = nu.read_image("mri.nii.gz"), nu.read_image("pet.nii.gz")
    fused = nu.fuse(mri, pet, modalities=("MRI", "PET"))
    nu.write_image(fused, "fused.nii.gz")

Names are imported on first use, so ``import napari_upfusion`` (and napari's
reader or sample data) does not load torch; ``fuse_layers`` needs napari.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._gl_guard import protect_from_late_triton
from .engine.registry import available_fusers, register_fuser
from .errors import FusionCancelled, InputError, UPFusionError

protect_from_late_triton()  # see _gl_guard: torch must not pull in triton next to Mesa's OpenGL

__version__ = "0.1.0"

_LAZY = {
    "fuse": "engine.api",
    "FusionEngine": "engine.api",
    "FusionResult": "engine.api",
    "get_engine": "engine.api",
    "ImageData": "engine.image",
    "read_image": "engine.io",
    "write_image": "engine.io",
    "load_model": "model",
    "UPFusion": "model",
    "UPFusionConfig": "model",
    "fuse_layers": "_layers",
}

__all__ = [
    "FusionCancelled",
    "FusionEngine",
    "FusionResult",
    "ImageData",
    "InputError",
    "UPFusion",
    "UPFusionConfig",
    "UPFusionError",
    "__version__",
    "available_fusers",
    "fuse",
    "fuse_layers",
    "get_engine",
    "load_model",
    "read_image",
    "write_image",
]

if TYPE_CHECKING:
    from ._layers import fuse_layers
    from .engine.api import FusionEngine, FusionResult, fuse, get_engine
    from .engine.image import ImageData
    from .engine.io import read_image, write_image
    from .model import UPFusion, UPFusionConfig, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        protect_from_late_triton()  # a viewer may have started OpenGL since this package was imported
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_upfusion' has no attribute {name!r}")


def _network(source: str):
    def build(device):
        from .model import load_model

        return load_model(source, device)

    return build


def _classical(class_name: str):
    def build(device):
        from . import baselines

        return getattr(baselines, class_name)().to(device).eval()

    return build


register_fuser(
    "small",
    _network("small"),
    "the project's own small UP-Fusion, shipped in the package (CPU-friendly)",
    prompt="table",
    config="small",
)
register_fuser(
    "paper",
    _network("paper"),
    "the authors' released UP-Fusion weights (Fuse.pth, which you download)",
    needs_weights=True,
    config="paper",
)
for _name, _class, _what in [
    ("average", "AverageFuser", "the pixel-wise mean of the two images"),
    ("maximum", "MaximumFuser", "the pixel-wise maximum of the two images"),
    ("laplacian", "LaplacianFuser", "Laplacian-pyramid fusion (larger detail per level, averaged base)"),
]:
    register_fuser(_name, _classical(_class), f"classical: {_what}", prompt="none")
