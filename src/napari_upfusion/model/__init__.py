"""Layer 1: the UP-Fusion network in pure PyTorch, its configs, checkpoints and text codes.

Nothing here knows about numpy images, napari or Qt.
"""

from .checkpoint import (
    LoadReport,
    bundled_weights,
    convert_authors_state_dict,
    find_paper_checkpoint,
    load_model,
    read_checkpoint_file,
    save_checkpoint,
    torchvision_convnext_to_timm,
)
from .factory import create_model, get_config, list_configs
from .upfusion import UPFusion, UPFusionConfig, luminance

__all__ = [
    "LoadReport",
    "UPFusion",
    "UPFusionConfig",
    "bundled_weights",
    "convert_authors_state_dict",
    "create_model",
    "find_paper_checkpoint",
    "get_config",
    "list_configs",
    "load_model",
    "luminance",
    "read_checkpoint_file",
    "save_checkpoint",
    "torchvision_convnext_to_timm",
]
