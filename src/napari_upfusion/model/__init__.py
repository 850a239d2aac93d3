"""Floor 1: the UP-Fusion network in pure PyTorch, its configs, weights files, runtime hints and text codes.

Nothing here knows about numpy images, napari or Qt; it imports only the ground floor
(:mod:`napari_upfusion.errors`, :mod:`napari_upfusion.utils`).
"""

from .checkpoint.convert import convert_authors_state_dict, torchvision_convnext_to_timm
from .checkpoint.io import read_checkpoint_file, save_checkpoint
from .checkpoint.load import LoadReport, load_model
from .checkpoint.weights import bundled_weights, find_paper_checkpoint
from .factory import create_model, get_config, list_configs
from .runtime import RuntimeHints, config_runtime
from .upfusion import UPFusion, UPFusionConfig, luminance

__all__ = [
    "LoadReport",
    "RuntimeHints",
    "UPFusion",
    "UPFusionConfig",
    "bundled_weights",
    "config_runtime",
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
