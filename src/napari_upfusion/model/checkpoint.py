"""Reading and writing UP-Fusion weights, safely and completely.

Two layouts are understood:

* the authors' release (``Fuse.pth``): ``{'AWF': state_dict}`` with the
  ``module.`` prefix of DataParallel, their module names, and the semantic
  backbone in torchvision's ConvNeXt layout.  :func:`convert_authors_state_dict`
  maps it onto this package's names (and timm's ConvNeXt) and sets aside the
  three ``*_gt`` encoder branches that the forward pass never uses;
* the project's own: a safetensors file whose metadata carries the
  :class:`~napari_upfusion.model.UPFusionConfig` it belongs to.

Files are opened only with ``torch.load(..., weights_only=True)`` or
safetensors, so a checkpoint can never run code.  Every missing, unexpected or
mis-shaped tensor is reported by name and the load is refused; nothing is ever
loaded partially.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from ..errors import CheckpointError, WeightsNotFoundError
from .backbones import pretrained_state_dict
from .cache import cache_dir
from .factory import get_config
from .upfusion import UPFusion, UPFusionConfig

__all__ = [
    "FORMAT_NAME",
    "PAPER_CHECKPOINT_ENV",
    "PAPER_CHECKPOINT_LINKS",
    "LoadReport",
    "bundled_weights",
    "convert_authors_state_dict",
    "find_paper_checkpoint",
    "load_model",
    "read_checkpoint_file",
    "save_checkpoint",
    "torchvision_convnext_to_timm",
]

FORMAT_NAME = "napari-upfusion"
FORMAT_VERSION = "1"
PAPER_CHECKPOINT_ENV = "UPFUSION_PAPER_CHECKPOINT"
PAPER_CHECKPOINT_NAME = "Fuse.pth"
PAPER_CHECKPOINT_LINKS = (
    "https://drive.google.com/file/d/1nOs9xAkjfHSNRqNgYO0CPuY7gpEg8k2X/view",
    "https://pan.baidu.com/s/1U9UjyeNt6y6bDbty3UMrUA?pwd=w74h",
)


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


# --------------------------------------------------------------------------- reading files


def _describe(path: Path) -> str:
    return f"'{path}'"


def _sniff(path: Path) -> str | None:
    """The container kind from the first bytes: 'zip', 'gzip', 'pickle', 'safetensors' or None."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def read_checkpoint_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw content of a weights file and its metadata (safetensors only).

    Accepts safetensors, any ``torch.save`` file (read with
    ``weights_only=True``) and gzip-compressed torch files.  Raises
    :class:`CheckpointError` with one sentence for unsafe, truncated, corrupt
    or foreign files.
    """
    path = Path(path)
    where = _describe(path)
    if not path.is_file():
        raise CheckpointError(f"The checkpoint {where} does not exist or is not a file; check the path.")
    kind = _sniff(path)
    corrupt = f"The checkpoint {where} is truncated or corrupted; download or copy it again."
    if kind is None:
        raise CheckpointError(f"The file {where} is not a PyTorch or safetensors checkpoint; give the path of a weights file.")
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return load_safetensors(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"The checkpoint {where} is not a readable safetensors file ({error}); it may be truncated "
                "or corrupted, so download or copy it again."
            ) from None
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise CheckpointError(corrupt)
    try:
        if kind == "gzip":
            with gzip.open(path, "rb") as handle:
                source: Any = io.BytesIO(handle.read())
            content = torch.load(source, map_location="cpu", weights_only=True)
        else:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise CheckpointError(
                f"The checkpoint {where} contains Python objects that could run code when loaded, so it "
                "was refused; use a file that holds tensors only (a plain state dict or safetensors)."
            ) from None
        raise CheckpointError(corrupt) from None
    except (EOFError, gzip.BadGzipFile, zipfile.BadZipFile):
        raise CheckpointError(corrupt) from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for damaged files; each means "unreadable"
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        problem = "is a TorchScript archive, not a weights file" if "TorchScript" in text else f"could not be read ({text})"
        raise CheckpointError(f"The checkpoint {where} {problem}; download or copy it again.") from None
    if not isinstance(content, dict):
        raise CheckpointError(
            f"The checkpoint {where} holds a {type(content).__name__}, not a dictionary of tensors; "
            "give the path of an UP-Fusion weights file."
        )
    return content, {}


# --------------------------------------------------------------------------- key mapping


def _rules(pairs: list[tuple[str, str | Callable[[re.Match[str]], str] | None]]):
    return [(re.compile(pattern), repl) for pattern, repl in pairs]


def _apply(rules, key: str) -> str | None:
    """Rewrite the start of ``key`` with the first rule that matches; ``None`` means 'known, unused'."""
    for pattern, repl in rules:
        match = pattern.match(key)
        if match is None:
            continue
        if repl is None:
            return None
        head = repl(match) if callable(repl) else match.expand(repl)
        return head + key[match.end() :]
    raise KeyError(key)


# torchvision's convnext: features[0] stem, features[2k] downsample, features[2k+1] stage k blocks.
_TORCHVISION_CONVNEXT = _rules(
    [
        (r"0\.0\.", "stem.0."),
        (r"0\.1\.", "stem.1."),
        (r"([246])\.([01])\.", lambda m: f"stages.{int(m[1]) // 2}.downsample.{m[2]}."),
        (r"([1357])\.(\d+)\.block\.0\.", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}.conv_dw."),
        (r"([1357])\.(\d+)\.block\.2\.", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}.norm."),
        (r"([1357])\.(\d+)\.block\.3\.", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}.mlp.fc1."),
        (r"([1357])\.(\d+)\.block\.5\.", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}.mlp.fc2."),
        (r"([1357])\.(\d+)\.layer_scale$", lambda m: f"stages.{int(m[1]) // 2}.blocks.{m[2]}.gamma"),
    ]
)


def torchvision_convnext_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the keys of torchvision's ``convnext_*().features`` onto timm's ConvNeXt trunk.

    ``layer_scale`` of shape ``[C, 1, 1]`` becomes timm's ``gamma`` of shape ``[C]``.
    Raises ``KeyError`` for a key that is not part of the trunk.
    """
    out = {}
    for key, value in state.items():
        new = _apply(_TORCHVISION_CONVNEXT, key)
        out[new] = value.reshape(-1) if new.endswith(".gamma") else value
    return out


_LEVEL = {"1": 0, "2": 1, "3": 2}
_BLOCK_NORM = (r"(\d+)\.norm([12])\.body\.", r"\1.norm\2.")
_TCPM_INNER = _rules(
    [
        (r"text_fc\.0\.", "text_fc1."),
        (r"text_fc\.2\.", "text_fc2."),
        (r"se_fc\.0\.", "se_fc1."),
        (r"se_fc\.2\.", "se_fc2."),
        (r"conv1x1\.", "select_proj."),
        (r"conv_out\.", "merge."),
        (r"norm1\.body\.", "norm_q."),
        (r"norm2\.body\.", "norm_kv."),
        (r"norm3\.body\.", "norm_out."),
        (r"select_attn\.attn4$", "attn.gain"),
        (r"select_attn\.", "attn."),
        (r"ffn\.", "ffn."),
    ]
)
_SCPM_INNER = _rules(
    [
        (r"fc\.0\.", "se_fc1."),
        (r"fc\.2\.", "se_fc2."),
        (r"suo_conv\.", "to_rgb."),
        (r"convnext_fc\.", "backbone_fc."),
        (r"expand_conv\.", "expand."),
        (r"alpha$", "alpha"),
    ]
)
_STAGE_INNER = _rules([_BLOCK_NORM, (r"", "")])


_AUTHORS_TOP: list[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, Any]] | None]] = [
    (re.compile(p), f)
    for p, f in [
        (r"(encoder_level[123]|latent)_gt\.", None),
        (r"patch_embed\.proj\.", lambda m: ("embed_a.", None)),
        (r"ir_imb\.proj\.", lambda m: ("embed_b.", None)),
        (r"encoder_level([123])_vi\.", lambda m: (f"encoder_a.{_LEVEL[m[1]]}.", _STAGE_INNER)),
        (r"encoder_level([123])_ir\.", lambda m: (f"encoder_b.{_LEVEL[m[1]]}.", _STAGE_INNER)),
        (r"latent_vi\.", lambda m: ("encoder_a.3.", _STAGE_INNER)),
        (r"latent_ir\.", lambda m: ("encoder_b.3.", _STAGE_INNER)),
        (r"down(1_2|2_3|3_4)\.body\.0\.", lambda m: (f"down.{'123'.index(m[1][0])}.conv.", None)),
        (r"up(4_3|3_2|2_1)\.body\.0\.", lambda m: (f"up.{'432'.index(m[1][0])}.conv.", None)),
        (r"reduce_chan_level([32])\.", lambda m: (f"reduce.{'32'.index(m[1])}.", None)),
        (r"decoder_level([321])\.", lambda m: (f"decoder.{'321'.index(m[1])}.", _STAGE_INNER)),
        (r"refinement\.", lambda m: ("refinement.", _STAGE_INNER)),
        (r"output\.", lambda m: ("output.", None)),
        (r"expand_conv\.", lambda m: ("split.", None)),
        (r"GEO_(vi|ir)\.affine_fc\.([02])\.", lambda m: (f"gam_{'a' if m[1] == 'vi' else 'b'}.fc{int(m[2]) // 2 + 1}.", None)),
        (r"channel_select\.convnext\.0\.", lambda m: ("scpm.backbone.", _TORCHVISION_CONVNEXT)),
        (r"channel_select\.", lambda m: ("scpm.", _SCPM_INNER)),
        (r"encoder_shuffle_channel([123])\.", lambda m: (f"tcpm.{_LEVEL[m[1]]}.", _TCPM_INNER)),
        (r"latent_shuffle_channel\.", lambda m: ("tcpm.3.", _TCPM_INNER)),
    ]
]


def _map_authors_key(key: str) -> str | None:
    for pattern, action in _AUTHORS_TOP:
        match = pattern.match(key)
        if match is None:
            continue
        if action is None:
            return None
        prefix, inner = action(match)
        rest = key[match.end() :]
        if inner is None:
            return prefix + rest
        mapped = _apply(inner, rest)
        return None if mapped is None else prefix + mapped
    raise KeyError(key)


def convert_authors_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map a state dict of the authors' ``UPFusion`` onto this package's names.

    Accepts keys with or without the ``module.`` prefix.  Returns
    ``(mapped, ignored, unknown)``: the converted tensors, the authors' keys of
    branches that the forward pass never uses (``*_gt``), and keys that belong
    to no known module.
    """
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        bare = key.removeprefix("module.")
        try:
            new = _map_authors_key(bare)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            ignored.append(key)
        else:
            mapped[new] = value.reshape(-1) if new.endswith(".gamma") and value.dim() == 3 else value
    return mapped, ignored, unknown


# --------------------------------------------------------------------------- loading


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
    model.load_state_dict(state, strict=True, assign=True)
    return sorted(state)


_BACKBONE_PREFIX = "scpm.backbone."


def _with_pretrained_backbone(content: dict[str, torch.Tensor], cfg: UPFusionConfig, where: str) -> dict[str, torch.Tensor]:
    """``content`` plus the backbone weights of ``cfg.backbone_weights`` (a file must not hold them itself)."""
    if cfg.backbone_weights is None:
        return content
    stored = sorted(k for k in content if k.startswith(_BACKBONE_PREFIX))
    if stored:
        raise CheckpointError(
            f"{where} holds {len(stored)} backbone tensors although its config takes the backbone from "
            f"{cfg.backbone_weights!r}, so nothing was loaded; save it again with save_checkpoint.",
            unexpected=stored,
        )
    backbone = pretrained_state_dict(cfg.backbone_weights, cfg.backbone)
    return {**content, **{_BACKBONE_PREFIX + k: v for k, v in backbone.items()}}


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
      :func:`find_paper_checkpoint` and never downloaded;
    * a path to the authors' ``Fuse.pth`` (or any file in their layout, also
      gzip-compressed) or to a safetensors file written by :func:`save_checkpoint`;
    * an :class:`UPFusion` instance, returned as it is.

    ``config`` overrides the configuration assumed for the authors' layout
    (default ``"paper"``).  The returned model carries a :class:`LoadReport` as
    ``model.load_report``.
    """
    if isinstance(source, UPFusion):
        return source
    if isinstance(source, str) and source == "paper":
        path = find_paper_checkpoint()
    elif isinstance(source, str) and source in _bundled_names():
        path = bundled_weights(source)
    else:
        path = Path(source)
        if not path.exists() and isinstance(source, str) and os.sep not in source and "." not in source:
            known = ", ".join(["paper", *_bundled_names()])
            raise CheckpointError(f"There is no model named {source!r}; use one of {known} or a checkpoint path.")
    content, metadata = read_checkpoint_file(path)
    where = _describe(path)
    if metadata.get("format") == FORMAT_NAME:
        try:
            cfg = UPFusionConfig.from_dict(json.loads(metadata["config"]))
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{where} has an unreadable UP-Fusion config in its metadata ({error}).") from None
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
    model = _finish(model, device)
    model.load_report = report
    return model


def save_checkpoint(
    model: UPFusion,
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float16,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` in the project's format: safetensors (``dtype``) with its config in the metadata.

    A backbone whose weights come from a pretrained source (``config.backbone_weights``)
    is left out; :func:`load_model` takes it from that source again.

    The file is written to a temporary name and renamed, so it is never half-written.
    """
    path = Path(path)
    pretrained = model.config.backbone_weights is not None  # those weights come from their package when loading
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
        if not (pretrained and k.startswith(_BACKBONE_PREFIX))
    }
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_safetensors(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- where weights live


def _bundled_names() -> list[str]:
    folder = resources.files(__package__).joinpath("weights")
    return sorted(p.name[: -len(".safetensors")].removeprefix("upfusion_") for p in folder.iterdir() if p.name.endswith(".safetensors"))


def bundled_weights(name: str = "small") -> Path:
    """Path of weights shipped inside the package (``upfusion_<name>.safetensors``)."""
    path = Path(str(resources.files(__package__).joinpath("weights", f"upfusion_{name}.safetensors")))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"The bundled '{name}' weights are missing from the installation ({path}); reinstall napari-upfusion."
        )
    return path


def default_paper_checkpoint_path() -> Path:
    """Where the authors' checkpoint is looked for when no path or environment variable is given."""
    return cache_dir() / PAPER_CHECKPOINT_NAME


def find_paper_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the authors' ``Fuse.pth``: ``path``, then ``$UPFUSION_PAPER_CHECKPOINT``, then the user cache.

    Never downloads.  When absent, raises :class:`WeightsNotFoundError` saying
    where to get the file and where to put it.
    """
    if path is not None:
        origin, candidate = "the given path", Path(path).expanduser()
    elif os.environ.get(PAPER_CHECKPOINT_ENV):
        origin, candidate = f"${PAPER_CHECKPOINT_ENV}", Path(os.environ[PAPER_CHECKPOINT_ENV]).expanduser()
    else:
        origin, candidate = "the user cache", default_paper_checkpoint_path()
    if candidate.is_file():
        return candidate
    raise WeightsNotFoundError(
        f"The authors' UP-Fusion checkpoint was not found at {candidate} ({origin}); download Fuse.pth from "
        f"{PAPER_CHECKPOINT_LINKS[0]} or {PAPER_CHECKPOINT_LINKS[1]} and save it as {default_paper_checkpoint_path()} "
        f"or set {PAPER_CHECKPOINT_ENV} to its path."
    )
