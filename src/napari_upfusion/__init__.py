"""napari-upfusion: fuse co-registered images of two modalities with the UP-Fusion network.

The public Python API::

    import napari_upfusion as nu
    mri, pet = nu.read_image("mri.nii.gz"), nu.read_image("pet.nii.gz")
    fused = nu.fuse(mri, pet, modalities=("MRI", "PET"))
    nu.write_image(fused, "fused.nii.gz")

Names are imported on first use, so ``import napari_upfusion`` (and napari's
reader or sample data) does not load torch; ``fuse_layers`` needs napari.  This
file only names things: it registers nothing (the built-in fusers are a table in
:mod:`napari_upfusion.engine.registry`), and no module of the package imports it.
The package's floors are described in ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .engine.registry import available_fusers, register_fuser
from .errors import FusionCancelled, InputError, UPFusionError
from .plugin.gl_guard import protect_from_late_triton

protect_from_late_triton()  # see plugin.gl_guard: torch must not pull in triton next to Mesa's OpenGL

_LAZY = {
    "fuse": "engine.api",
    "fuse_files": "engine.api",
    "FusionEngine": "engine.api",
    "FusionResult": "engine.provenance",
    "get_engine": "engine.api",
    "ImageData": "engine.image",
    "read_image": "engine.io",
    "write_image": "engine.io",
    "load_model": "model",
    "UPFusion": "model",
    "UPFusionConfig": "model",
    "fuse_layers": "plugin.layers",
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
    "fuse_files",
    "fuse_layers",
    "get_engine",
    "load_model",
    "read_image",
    "register_fuser",
    "write_image",
]

if TYPE_CHECKING:
    from .engine.api import FusionEngine, fuse, fuse_files, get_engine
    from .engine.image import ImageData
    from .engine.io import read_image, write_image
    from .engine.provenance import FusionResult
    from .model import UPFusion, UPFusionConfig, load_model
    from .plugin.layers import fuse_layers


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        protect_from_late_triton()  # a viewer may have started OpenGL since this package was imported
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_upfusion' has no attribute {name!r}")
