"""The UP-Fusion network (Li, Li and Jiang, AAAI 2026, arXiv 2511.12432).

A two-branch Restormer encoder (one branch per modality, shared downsampling
convolutions), SCPM and GAM on the shallow features, TCPM at all four levels
to merge the branches under text guidance, and a single Restormer decoder that
produces a one-channel fused image.  The output is not clamped; callers clamp
to ``[0, 1]`` as the authors' test script does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..utils.colour import luma
from ..utils.fields import from_fields
from .blocks import Downsample, Upsample, transformer_stage
from .modules import GeometricAffineModulation, SemanticChannelPruning, TextChannelPerturbation

__all__ = ["CONFIG_LIMITS", "MAX_PARAMETERS", "UPFusion", "UPFusionConfig", "check_config", "luminance"]

#: The schema of a config's whole numbers: ``field -> (smallest, largest)``, per level for the two 4-tuples.
#: A config comes from a checkpoint's metadata, which is untrusted: generous bounds, but finite ones, so
#: that no file can make this tool build for minutes or allocate without end.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "dim": (2, 512),
    "num_blocks": (0, 32),
    "num_refinement_blocks": (0, 32),
    "heads": (1, 64),
    "backbone_input_size": (32, 1024),
    "scpm_reduction": (1, 512),
    "tcpm_reduction": (1, 1024),
    "text_dim": (1, 4096),
    "pad_multiple": (8, 64),
}
#: The most parameters (about) a config may ask for: 25 times the paper network.
MAX_PARAMETERS = 10**9
_FRACTIONS = ("scpm_keep_ratio", "tcpm_keep_ratio", "attn_topk_ratio")
_MAX_PROMPTS, _MAX_PROMPT_CHARS = 1024, 2000


@dataclass(frozen=True)
class UPFusionConfig:
    """Every architectural choice of :class:`UPFusion`.

    The defaults are the paper configuration.  ``backbone`` is SCPM's frozen timm
    trunk; ``backbone_weights`` names where its weights come from: ``None`` for
    the checkpoint itself (the authors' ConvNeXt-Base), or a source of
    :data:`~napari_upfusion.model.backbones.PRETRAINED_SOURCES` (real pretrained
    weights in an installed package, not stored again in the project's
    checkpoints).  ``text_encoder`` names how
    prompts become the ``text_dim``-wide code: ``"clip-vit-b-32"`` (OpenAI CLIP
    text tower, as the authors) or ``"prompt-table"`` (a fixed table of codes
    stored with the weights, one per entry of ``prompts``).  How a set of weights
    was validated to run (precisions, CPU streams) is not architecture: see
    :class:`~napari_upfusion.model.runtime.RuntimeHints`.
    """

    name: str = "paper"
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_with_bias: bool = True
    backbone: str = "convnext_base"
    backbone_weights: str | None = None
    backbone_input_size: int = 224
    scpm_keep_ratio: float = 0.7
    scpm_reduction: int = 8
    scpm_alpha_init: float = 1.0
    tcpm_keep_ratio: float = 0.5
    tcpm_reduction: int = 8
    attn_topk_ratio: float = 0.9
    text_dim: int = 512
    text_encoder: str = "clip-vit-b-32"
    prompts: tuple[str, ...] = field(default_factory=tuple)
    pad_multiple: int = 8

    def __post_init__(self) -> None:
        for name in ("num_blocks", "heads", "prompts"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{name} must be a list, not {value!r}.")
            object.__setattr__(self, name, tuple(value))
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UPFusionConfig:
        """A config from a mapping of field names (unknown fields are an error)."""
        return from_fields(cls, data, "UP-Fusion config")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parameters(cfg: UPFusionConfig) -> float:
    """About how many parameters ``cfg`` builds (transformer blocks dominate: 4 C^2 for attention, 3 f C^2 for the
    gated feed-forward), without building anything."""
    per_block = 4 + 3 * cfg.ffn_expansion_factor
    total = 0.0
    for level in range(4):
        width = cfg.dim * 2**level
        blocks = 2 * cfg.num_blocks[level] + (cfg.num_blocks[level] if level < 3 else 0) + 1  # encoders, decoder, TCPM
        total += blocks * per_block * width**2
    return total + cfg.num_refinement_blocks * per_block * (2 * cfg.dim) ** 2 + 2 * cfg.text_dim**2


def check_config(cfg: UPFusionConfig) -> None:
    """Check a config against its schema; ``ValueError`` says, in one clause, the first field that fails.

    The one place where a config is checked, whether it comes from a named config, a JSON
    file or a checkpoint's metadata (untrusted): every field has its type; whole numbers are
    within :data:`CONFIG_LIMITS`; ratios in ``(0, 1]``; the feed-forward expansion in
    ``(0, 8]``; heads divide each level's channels; every width the network derives (kept
    channels, squeeze-excitation widths, attention's top-k, feed-forward widths) is at least 1;
    the backbone is one of :data:`~napari_upfusion.model.backbones.SUPPORTED_BACKBONES` (never a
    hub name: nothing may make timm or huggingface_hub reach the network), its weights a known
    pretrained source; a known text encoder (CLIP's codes are 512 wide); at most
    :data:`MAX_PARAMETERS` parameters.
    """
    from .backbones import PRETRAINED_SOURCES, SUPPORTED_BACKBONES

    if not isinstance(cfg.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", cfg.name):
        raise ValueError(
            f"name must be a plain name of 1 to 100 letters, digits, '.', '_', '+' or '-', not {cfg.name!r}."
        )
    for name, (low, high) in CONFIG_LIMITS.items():
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and len(value) != 4:
            raise ValueError(f"{name} needs one entry for each of the 4 levels, not {len(value)}.")
        if not all(_whole(v) and low <= v <= high for v in values):
            raise ValueError(f"{name} must be {'whole numbers' if len(values) > 1 else 'a whole number'} from {low} "
                             f"to {high}, not {value!r}.")  # fmt: skip
    for name in ("bias", "layernorm_with_bias"):
        if not isinstance(getattr(cfg, name), bool):
            raise TypeError(f"{name} must be true or false, not {getattr(cfg, name)!r}.")
    for name in _FRACTIONS:
        if not (_number(getattr(cfg, name)) and 0 < getattr(cfg, name) <= 1):
            raise ValueError(f"{name} must be a number in (0, 1], not {getattr(cfg, name)!r}.")
    if not (_number(cfg.ffn_expansion_factor) and 0 < cfg.ffn_expansion_factor <= 8):
        raise ValueError(f"ffn_expansion_factor must be a number in (0, 8], not {cfg.ffn_expansion_factor!r}.")
    if not (_number(cfg.scpm_alpha_init) and abs(cfg.scpm_alpha_init) <= 1000):
        raise ValueError(f"scpm_alpha_init must be a number from -1000 to 1000, not {cfg.scpm_alpha_init!r}.")
    if cfg.pad_multiple % 8:
        raise ValueError(f"pad_multiple must be a multiple of 8 (the network halves a slice three times), not {cfg.pad_multiple}.")
    if cfg.dim % 2:
        raise ValueError(f"dim must be even (the network halves and doubles its channels), not {cfg.dim}.")
    for level, heads in enumerate(cfg.heads):
        width = cfg.dim * 2**level
        if width % heads:
            raise ValueError(f"level {level + 1} has {width} channels, not divisible by {heads} heads.")
        derived = {
            "attention's top-k": int((width // heads) * cfg.attn_topk_ratio),
            "TCPM's kept channels": int(2 * width * cfg.tcpm_keep_ratio),
            "TCPM's squeeze-excitation width": 2 * width // cfg.tcpm_reduction,
            "the feed-forward width": int(width * cfg.ffn_expansion_factor),
        }
        for what, count in derived.items():
            if count < 1:
                raise ValueError(f"level {level + 1} would have {what} of {count}; give larger ratios or widths.")
    if int(cfg.dim * cfg.scpm_keep_ratio) < 1 or cfg.dim // cfg.scpm_reduction < 1:
        raise ValueError("SCPM would keep no channel; give a larger dim, scpm_keep_ratio or a smaller scpm_reduction.")
    if not isinstance(cfg.backbone, str) or cfg.backbone not in SUPPORTED_BACKBONES:
        raise ValueError(f"backbone {cfg.backbone!r} is not one this tool builds; use one of {', '.join(SUPPORTED_BACKBONES)}.")
    if cfg.backbone_weights is not None:
        source = PRETRAINED_SOURCES.get(cfg.backbone_weights) if isinstance(cfg.backbone_weights, str) else None
        if source is None or source.architecture != cfg.backbone:
            raise ValueError(
                f"backbone_weights {cfg.backbone_weights!r} is not a known source of {cfg.backbone} weights; "
                f"known sources: {', '.join(f'{k} ({v.architecture})' for k, v in PRETRAINED_SOURCES.items())}."
            )
    if cfg.text_encoder not in ("clip-vit-b-32", "prompt-table"):
        raise ValueError(f"unknown text_encoder {cfg.text_encoder!r}; use 'clip-vit-b-32' or 'prompt-table'.")
    if cfg.text_encoder == "clip-vit-b-32" and cfg.text_dim != 512:
        raise ValueError(f"text_dim must be 512 for CLIP ViT-B/32 codes, not {cfg.text_dim}.")
    if len(cfg.prompts) > _MAX_PROMPTS or not all(isinstance(p, str) and len(p) <= _MAX_PROMPT_CHARS for p in cfg.prompts):
        raise ValueError(f"prompts must be at most {_MAX_PROMPTS} texts of at most {_MAX_PROMPT_CHARS} characters.")
    if cfg.text_encoder == "prompt-table" and not cfg.prompts:
        raise ValueError("a 'prompt-table' config must list its prompts.")
    if _parameters(cfg) > MAX_PARAMETERS:
        raise ValueError(
            f"this network would have about {_parameters(cfg):.2g} parameters, more than the {MAX_PARAMETERS:.0g} "
            "this tool builds."
        )


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Y = 0.299 R + 0.587 G + 0.114 B of a ``[B, 3, H, W]`` tensor; one-channel input is returned as is.

    The weights are :data:`~napari_upfusion.utils.colour.LUMA_WEIGHTS`.
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}.")
    return luma(*x.unbind(dim=1)).unsqueeze(1)


class UPFusion(nn.Module):
    """UP-Fusion: ``forward(a, b, text_code) -> fused``.

    ``a`` is the anatomical / visible image and ``b`` the functional / infrared
    one, each ``[B, 1 or 3, H, W]`` in ``[0, 1]`` with ``H`` and ``W``
    multiples of ``config.pad_multiple``; 3-channel inputs are reduced to
    luminance.  ``text_code`` is ``[B or 1, text_dim]``.  Returns ``[B, 1, H, W]``.

    For the ``prompt-table`` text encoder the table of codes is the buffer
    ``prompt_codes`` (``[len(config.prompts), text_dim]``).
    """

    def __init__(self, config: UPFusionConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UPFusionConfig()
        widths = [cfg.dim * 2**level for level in range(4)]

        def stage(level: int, depth: int, width: int | None = None) -> nn.Sequential:
            return transformer_stage(
                width or widths[level], depth, cfg.heads[level], cfg.ffn_expansion_factor, cfg.bias, cfg.layernorm_with_bias
            )

        self.embed_a = nn.Conv2d(1, cfg.dim, 3, padding=1, bias=cfg.bias)
        self.embed_b = nn.Conv2d(1, cfg.dim, 3, padding=1, bias=cfg.bias)
        self.scpm = SemanticChannelPruning(
            cfg.dim,
            cfg.backbone,
            keep_ratio=cfg.scpm_keep_ratio,
            reduction=cfg.scpm_reduction,
            alpha_init=cfg.scpm_alpha_init,
            input_size=cfg.backbone_input_size,
        )
        self.split = nn.Conv2d(cfg.dim, 2 * cfg.dim, 1)
        self.gam_a = GeometricAffineModulation(cfg.dim)
        self.gam_b = GeometricAffineModulation(cfg.dim)
        self.encoder_a = nn.ModuleList(stage(i, cfg.num_blocks[i]) for i in range(4))
        self.encoder_b = nn.ModuleList(stage(i, cfg.num_blocks[i]) for i in range(4))
        self.down = nn.ModuleList(Downsample(widths[i]) for i in range(3))
        self.tcpm = nn.ModuleList(
            TextChannelPerturbation(
                widths[i],
                cfg.heads[i],
                cfg.ffn_expansion_factor,
                cfg.bias,
                cfg.layernorm_with_bias,
                text_dim=cfg.text_dim,
                keep_ratio=cfg.tcpm_keep_ratio,
                reduction=cfg.tcpm_reduction,
                attn_topk_ratio=cfg.attn_topk_ratio,
            )
            for i in range(4)
        )
        # Decoder, deepest first: level 4 -> 3 -> 2 -> 1.
        self.up = nn.ModuleList(Upsample(widths[i]) for i in (3, 2, 1))
        self.reduce = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1, bias=cfg.bias) for i in (2, 1))
        self.decoder = nn.ModuleList(
            [stage(2, cfg.num_blocks[2]), stage(1, cfg.num_blocks[1]), stage(0, cfg.num_blocks[0], widths[1])]
        )
        self.refinement = stage(0, cfg.num_refinement_blocks, widths[1])
        self.output = nn.Conv2d(widths[1], 1, 3, padding=1, bias=cfg.bias)
        if cfg.text_encoder == "prompt-table":
            self.register_buffer("prompt_codes", torch.zeros(len(cfg.prompts), cfg.text_dim))

    def encode(self, a: torch.Tensor, b: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Shallow features through SCPM and GAM, then both encoder branches; four levels each."""
        raw_a, raw_b = self.embed_a(luminance(a)), self.embed_b(luminance(b))
        shared = self.split(self.scpm((raw_a + raw_b) / 2))
        half_a, half_b = shared.chunk(2, dim=1)
        x_a, x_b = self.gam_a(half_a, raw_a), self.gam_b(half_b, raw_b)
        feats_a, feats_b = [], []
        for level in range(4):
            if level:
                x_a, x_b = self.down[level - 1](x_a), self.down[level - 1](x_b)
            x_a, x_b = self.encoder_a[level](x_a), self.encoder_b[level](x_b)
            feats_a.append(x_a)
            feats_b.append(x_b)
        return feats_a, feats_b

    def forward(self, a: torch.Tensor, b: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        feats_a, feats_b = self.encode(a, b)
        x = self.tcpm[3](feats_a[3], feats_b[3], text_code)
        for step, level in enumerate((2, 1, 0)):
            skip = self.tcpm[level](feats_a[level], feats_b[level], text_code)
            x = torch.cat([self.up[step](x), skip], dim=1)
            if level:
                x = self.reduce[step](x)
            x = self.decoder[step](x)
        return self.output(self.refinement(x))
