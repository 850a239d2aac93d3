"""Loading UP-Fusion weights completely or not at all: the project's own files and the authors' release.

Two layouts are understood:

* the authors' release (``Fuse.pth``): ``{'AWF': state_dict}`` in their module
  names, mapped onto this package's by :func:`~.convert.convert_authors_state_dict`;
* the project's own: a safetensors file whose metadata carries the
  :class:`~napari_upfusion.model.UPFusionConfig` it belongs to and its runtime hints
  (:func:`~.io.save_checkpoint`).

Every missing, unexpected or mis-shaped tensor is reported by name and the load
is refused; nothing is ever loaded partially.  A file is untrusted: its config is
checked against the schema (:func:`~napari_upfusion.model.upfusion.check_config`)
before anything is built, and its tensors must be finite floating-point numbers
(:func:`_check_values`) before any is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError
from ..backbones import pretrained_state_dict
from ..factory import get_config
from ..runtime import RUNTIME_KEY, RuntimeHints, config_runtime, split_runtime
from ..upfusion import UPFusion, UPFusionConfig
from .convert import convert_authors_state_dict
from .io import BACKBONE_PREFIX, FORMAT_NAME, _describe, read_checkpoint_file
from .weights import bundled_names, bundled_weights, find_paper_checkpoint

__all__ = ["LoadReport", "load_model"]


@dataclass
class LoadReport:
    """What happened to every tensor of a checkpoint."""

    source: str
    layout: str
    config: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Tensors in the file: loaded plus deliberately ignored."""
        return len(self.loaded) + len(self.ignored)


def _few(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _check_values(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse tensors that are not floating-point (an integer counter of batch norm aside) or hold NaN or
    infinite values: a damaged file, or one quantised for another program."""
    kinds = sorted(
        {str(v.dtype).removeprefix("torch.") for k, v in state.items()
         if not v.is_floating_point() and not k.endswith("num_batches_tracked")}
    )  # fmt: skip
    if kinds:
        names = sorted(k for k, v in state.items() if not v.is_floating_point() and not k.endswith("num_batches_tracked"))
        raise CheckpointError(
            f"{where} holds tensors of type {', '.join(kinds)} ({_few(names)}), but UP-Fusion weights are "
            "floating-point numbers, so nothing was loaded; use a float16 or float32 checkpoint.",
            unexpected=names,
        )
    damaged = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items() if v.is_floating_point()}
    damaged = {k: n for k, n in damaged.items() if n}
    if damaged:
        count = sum(damaged.values())
        raise CheckpointError(
            f"{where} holds {count} non-finite weight{'s' if count > 1 else ''} (NaN or infinite) in "
            f"{_few(sorted(damaged))}, so nothing was loaded; the file is damaged (a training run may have "
            "diverged): use another checkpoint."
        )


def _check_and_load(model: UPFusion, state: dict[str, torch.Tensor], where: str, unknown: list[str]) -> list[str]:
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected)) + unknown
    mismatched = sorted(
        f"{k} (file {tuple(v.shape)}, network {tuple(expected[k])})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} with another shape: {', '.join(mismatched)}")
        raise CheckpointError(
            f"{where} does not fit the {model.config.name!r} UP-Fusion configuration, so nothing was loaded "
            f"({'; '.join(parts)}).",
            missing=missing,
            unexpected=unexpected + mismatched,
        )
    _check_values(state, where)
    model.load_state_dict(state, strict=True, assign=True)
    return sorted(state)


def _with_pretrained_backbone(content: dict[str, torch.Tensor], cfg: UPFusionConfig, where: str) -> dict[str, torch.Tensor]:
    """``content`` plus the backbone weights of ``cfg.backbone_weights`` (a file must not hold them itself)."""
    if cfg.backbone_weights is None:
        return content
    stored = sorted(k for k in content if k.startswith(BACKBONE_PREFIX))
    if stored:
        raise CheckpointError(
            f"{where} holds {len(stored)} backbone tensors although its config takes the backbone from "
            f"{cfg.backbone_weights!r}, so nothing was loaded; save it again with save_checkpoint.",
            unexpected=stored,
        )
    backbone = pretrained_state_dict(cfg.backbone_weights, cfg.backbone)
    return {**content, **{BACKBONE_PREFIX + k: v for k, v in backbone.items()}}


def _unwrap_authors(content: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The authors' state dict inside ``content``, or ``None`` if the layout is not theirs."""
    state = content.get("AWF", content)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    bare = {k.removeprefix("module.") for k in state}
    return state if "patch_embed.proj.weight" in bare and "ir_imb.proj.weight" in bare else None


def _finish(model: UPFusion, device: str | torch.device) -> UPFusion:
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    return model


def load_model(
    source: str | os.PathLike[str] | UPFusion = "small",
    device: str | torch.device = "cpu",
    config: str | UPFusionConfig | None = None,
) -> UPFusion:
    """The UP-Fusion network in eval mode, float32, on ``device``.

    ``source`` is one of:

    * ``"small"`` (default): the project's own weights, shipped in the package;
    * ``"paper"``: the authors' released checkpoint, looked up by
      :func:`~.weights.find_paper_checkpoint` and never downloaded;
    * a path to the authors' ``Fuse.pth`` (or any file in their layout, also
      gzip-compressed) or to a safetensors file written by :func:`~.io.save_checkpoint`;
    * an :class:`UPFusion` instance, returned as it is.

    ``config`` overrides the configuration assumed for the authors' layout
    (default ``"paper"``).  The returned model carries a :class:`LoadReport` as
    ``model.load_report`` and its :class:`~napari_upfusion.model.runtime.RuntimeHints`
    as ``model.runtime``: a project file's ``"runtime"`` metadata, or the hints an
    older project file's config still carries, or for the authors' layout the
    packaged hints of the config (:func:`~napari_upfusion.model.runtime.config_runtime`).
    """
    if isinstance(source, UPFusion):
        return source
    if isinstance(source, str) and source == "paper":
        path = find_paper_checkpoint()
    elif isinstance(source, str) and source in bundled_names():
        path = bundled_weights(source)
    else:
        path = Path(source)
        if not path.exists() and isinstance(source, str) and os.sep not in source and "." not in source:
            known = ", ".join(["paper", *bundled_names()])
            raise CheckpointError(f"There is no model named {source!r}; use one of {known} or a checkpoint path.")
    content, metadata = read_checkpoint_file(path)
    where = _describe(path)
    if metadata.get("format") == FORMAT_NAME:
        try:
            if "config" not in metadata:
                raise KeyError("it has no 'config' entry")
            config_data = json.loads(metadata["config"])
            if not isinstance(config_data, dict):
                raise TypeError(f"the config is a {type(config_data).__name__}, not a mapping of fields")
            architecture, legacy = split_runtime(config_data)
            cfg = UPFusionConfig.from_dict(architecture)
        except (KeyError, ValueError, TypeError, RecursionError) as error:
            reason = (error.args[0] if isinstance(error, KeyError) else str(error)).rstrip(".") or type(error).__name__
            raise CheckpointError(
                f"{where} has an unusable UP-Fusion config in its metadata ({reason}), so nothing was built or loaded; "
                "use a checkpoint written by this tool or the authors' Fuse.pth."
            ) from None
        try:
            hints = json.loads(metadata[RUNTIME_KEY]) if RUNTIME_KEY in metadata else None
            if hints is not None and not isinstance(hints, dict):
                raise TypeError(f"the runtime hints are a {type(hints).__name__}, not a mapping of fields")
            runtime = RuntimeHints.from_dict(hints) if hints is not None else legacy
        except (ValueError, TypeError, RecursionError) as error:
            raise CheckpointError(f"{where} has unreadable runtime hints in its metadata ({error}).") from None
        with torch.device("meta"):
            model = UPFusion(cfg)
        content = _with_pretrained_backbone(content, cfg, where)
        loaded = _check_and_load(model, content, where, [])
        report = LoadReport(str(path), "napari-upfusion", cfg.name, loaded=loaded, metadata=metadata)
    else:
        authors = _unwrap_authors(content)
        if authors is None:
            raise CheckpointError(
                f"{where} is neither in the authors' UP-Fusion layout ({{'AWF': state_dict}}) nor a napari-upfusion "
                "safetensors file; give the path of an UP-Fusion checkpoint."
            )
        cfg = config if isinstance(config, UPFusionConfig) else get_config(config or "paper")
        mapped, ignored, unknown = convert_authors_state_dict(authors)
        with torch.device("meta"):
            model = UPFusion(cfg)
        loaded = _check_and_load(model, mapped, where, unknown)
        report = LoadReport(str(path), "authors", cfg.name, loaded=loaded, ignored=ignored)
        runtime = config_runtime(cfg.name)
    model = _finish(model, device)
    model.load_report = report
    model.runtime = runtime or RuntimeHints()
    return model
