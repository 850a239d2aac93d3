"""Named configurations (JSON files beside this module) and model construction by name."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch

from .backbones import load_pretrained_backbone
from .upfusion import UPFusion, UPFusionConfig

__all__ = ["create_model", "get_config", "list_configs"]


def _config_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files(__package__).joinpath("configs")
    return {item.name[: -len(".json")]: item for item in folder.iterdir() if item.name.endswith(".json")}


def list_configs() -> list[str]:
    """Names of the configurations that ship with the package (``paper``, ``small``, ...)."""
    return sorted(_config_files())


@cache
def get_config(name: str) -> UPFusionConfig:
    """The named configuration; raises ``KeyError`` with the known names if there is none."""
    files = _config_files()
    if name not in files:
        raise KeyError(f"no UP-Fusion config named {name!r}; known: {', '.join(sorted(files))}.")
    data = json.loads(files[name].read_text(encoding="utf-8"))
    return UPFusionConfig.from_dict({"name": name, **data})


def create_model(config: str | UPFusionConfig, device: str | torch.device | None = None) -> UPFusion:
    """A freshly initialised :class:`UPFusion` for a config name or object.

    No trained weights are loaded; a config whose ``backbone_weights`` names a
    pretrained source gets those weights in its frozen backbone.
    """
    cfg = get_config(config) if isinstance(config, str) else config
    with torch.device(device or "cpu"):
        model = UPFusion(cfg)
    if cfg.backbone_weights is not None:
        load_pretrained_backbone(model.scpm.backbone, cfg.backbone_weights, cfg.backbone)
    return model
