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
    "UPFusion",
    "UPFusionConfig",
    "luminance",
    "create_model",
    "get_config",
    "list_configs",
    "load_model",
    "save_checkpoint",
    "read_checkpoint_file",
    "convert_authors_state_dict",
    "torchvision_convnext_to_timm",
    "find_paper_checkpoint",
    "bundled_weights",
    "LoadReport",
]
