"""Named configurations (JSON files in ``configs/``) and model construction by name.

``configs/<name>.json`` holds the architecture of config ``<name>``; ``configs/runtime.json``
is not a config but the table of each config's :class:`~.runtime.RuntimeHints`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from .backbones import load_pretrained_backbone
from .runtime import config_runtime, split_runtime
from .upfusion import UPFusion, UPFusionConfig

__all__ = ["config_from", "create_model", "get_config", "list_configs"]


def _config_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files(__package__).joinpath("configs")
    files = {item.name[: -len(".json")]: item for item in folder.iterdir() if item.name.endswith(".json")}
    files.pop("runtime", None)  # the runtime hints of the configs, not a config
    return files


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


def config_from(name_or_file: str | os.PathLike[str]) -> UPFusionConfig:
    """A named configuration, or one read from a JSON file (its fields; ``name`` defaults to the file's stem).

    Runtime hints that a config file written before they had their own place may carry
    (``cpu_precision``, ``gpu_precision``, ``cpu_streams``) are not architecture and are left out.
    Raises ``KeyError`` for an unknown name and ``ValueError`` for an unreadable file.
    """
    path = Path(name_or_file)
    if path.suffix != ".json":
        return get_config(str(name_or_file))
    try:
        data, _ = split_runtime(json.loads(path.read_text(encoding="utf-8")))
        return UPFusionConfig.from_dict({"name": path.stem, **data})
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a readable UP-Fusion config ({error})") from None


def create_model(config: str | UPFusionConfig, device: str | torch.device | None = None) -> UPFusion:
    """A freshly initialised :class:`UPFusion` for a config name or object.

    No trained weights are loaded; a config whose ``backbone_weights`` names a
    pretrained source gets those weights in its frozen backbone.  ``model.runtime``
    holds the config's packaged :class:`~.runtime.RuntimeHints` (:func:`~.runtime.config_runtime`),
    which :func:`~.checkpoint.save_checkpoint` stores with the weights.
    """
    cfg = get_config(config) if isinstance(config, str) else config
    with torch.device(device or "cpu"):
        model = UPFusion(cfg)
    if cfg.backbone_weights is not None:
        load_pretrained_backbone(model.scpm.backbone, cfg.backbone_weights, cfg.backbone)
    model.runtime = config_runtime(cfg.name)
    return model
