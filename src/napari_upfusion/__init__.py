"""napari-upfusion: fuse co-registered images of two modalities with the UP-Fusion network.

The public Python API::

    from napari_upfusion import fuse, load_model, read_image, write_image
    fused = fuse(mri, pet, modalities=("MRI", "PET"))

``fuse_layers`` (napari) is imported lazily so that the library works without a display.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._gl_guard import protect_from_late_triton as _protect  # noqa: E402

_protect()  # before torch/torchvision: a late triton import crashes next to Mesa's OpenGL (see _gl_guard)

from . import baselines as _baselines  # noqa: E402,F401 - registers the classical fusers
from .engine.api import FusionEngine, FusionResult, fuse, get_engine  # noqa: E402
from .engine.image import ImageData  # noqa: E402
from .engine.io import read_image, write_image  # noqa: E402
from .engine.registry import available_fusers  # noqa: E402
from .errors import FusionCancelled, InputError, UPFusionError  # noqa: E402
from .model import UPFusion, UPFusionConfig, load_model  # noqa: E402

__all__ = [
    "__version__",
    "fuse",
    "fuse_layers",
    "FusionEngine",
    "FusionResult",
    "get_engine",
    "ImageData",
    "read_image",
    "write_image",
    "available_fusers",
    "load_model",
    "UPFusion",
    "UPFusionConfig",
    "UPFusionError",
    "InputError",
    "FusionCancelled",
]


def __getattr__(name: str):
    if name == "fuse_layers":
        from ._layers import fuse_layers

        return fuse_layers
    raise AttributeError(f"module 'napari_upfusion' has no attribute {name!r}")
