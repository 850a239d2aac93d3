"""Foreign checkpoint layouts mapped onto this package's names: filter functions in the manner of timm's.

Each function takes a state dict in someone else's layout and returns one in
timm's or this package's names (as timm's ``checkpoint_filter_fn`` does), raising
``KeyError`` (or listing the key as unknown) for a tensor that belongs to no known
module, so that nothing is ever dropped silently:

* :func:`convert_authors_state_dict`: the authors' released ``UPFusion`` (their
  module names, DataParallel's ``module.`` prefix, the semantic backbone in
  torchvision's layout; the three ``*_gt`` encoder branches that the forward pass
  never uses are set aside);
* :func:`torchvision_convnext_to_timm`: torchvision's ConvNeXt ``features`` trunk;
* :func:`efficientnet_pytorch_to_timm`: ``lukemelas/EfficientNet-PyTorch`` weights
  (the pretrained EfficientNet-Lite0 backbone of :mod:`~napari_upfusion.model.backbones`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["convert_authors_state_dict", "efficientnet_pytorch_to_timm", "torchvision_convnext_to_timm"]


# --------------------------------------------------------------------------- rule tables


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


# --------------------------------------------------------------------------- EfficientNet-PyTorch -> timm

# Inside one block: (EfficientNet-PyTorch name, timm name) for blocks with an expansion convolution
# (timm's InvertedResidual) and for those without (DepthwiseSeparableConv, the first stage).
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"(_\w+?)\.(\w+)$")


def efficientnet_pytorch_to_timm(
    state: Mapping[str, torch.Tensor], stage_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch state dict onto timm's EfficientNet names.

    ``_blocks.N`` (numbered through all stages) becomes ``blocks.S.I`` by
    ``stage_depths`` (timm's ``[len(stage) for stage in model.blocks]``); the
    stem, head and classifier are renamed.  Raises ``KeyError`` for a key that
    belongs to no known module.
    """
    starts = [sum(stage_depths[:s]) for s in range(len(stage_depths))]
    expanded = {int(m[1]) for key in state if (m := _BLOCK_KEY.match(key)) and m[2] == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if match := _BLOCK_KEY.match(key):
            flat, module, leaf = int(match[1]), match[2], match[3]
            stage = max(s for s, start in enumerate(starts) if start <= flat)
            names = _EXPANDED if flat in expanded else _SEPARABLE
            if module not in names or flat >= sum(stage_depths):
                raise KeyError(key)
            out[f"blocks.{stage}.{flat - starts[stage]}.{names[module]}.{leaf}"] = value
        elif (match := _TOP_KEY.match(key)) and match[1] in _TOP:
            out[f"{_TOP[match[1]]}.{match[2]}"] = value
        else:
            raise KeyError(key)
    return out
