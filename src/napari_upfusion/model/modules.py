"""The three knowledge-guided modules that UP-Fusion adds to a Restormer backbone.

- :class:`SemanticChannelPruning` (SCPM): keeps the most useful channels of the
  merged shallow features, ranked by squeeze-excitation weights plus a score
  from a frozen pretrained backbone that looks at a 3-channel projection of them.
- :class:`GeometricAffineModulation` (GAM): re-injects each modality's own
  statistics into its branch as a per-channel scale and shift.
- :class:`TextChannelPerturbation` (TCPM): lets a text code reorder the
  channels of the merged features, which then query the unperturbed features
  through channel-wise cross-attention with a top-k mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .blocks import (
    ChannelLayerNorm,
    GatedDconvFFN,
    channel_attention_logits,
    full_precision,
    merge_heads,
    split_heads,
)

__all__ = [
    "GeometricAffineModulation",
    "SemanticChannelPruning",
    "TextChannelPerturbation",
    "TopKCrossAttention",
    "gather_channels",
]


def gather_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick channels of ``x`` ``[B, C, H, W]`` by ``index`` ``[B or 1, K]``; returns ``[B, K, H, W]``."""
    if index.shape[0] == 1:
        return x.index_select(1, index[0])
    b, _, h, w = x.shape
    return x.gather(1, index[:, :, None, None].expand(b, index.shape[1], h, w))


class SemanticChannelPruning(nn.Module):
    """SCPM: keep ``keep_ratio`` of the channels, chosen by SE weights plus a frozen backbone's semantics.

    The backbone (ConvNeXt in the paper; see :mod:`.backbones`) sees a bilinear
    ``input_size`` x ``input_size`` resize of a 1x1 projection of the features to 3 channels, with no ImageNet
    normalisation, and runs without gradient.  Its globally pooled features go
    through a linear layer and a sigmoid, scaled by the learnt ``alpha``.
    """

    def __init__(
        self,
        channels: int,
        backbone: str,
        keep_ratio: float = 0.7,
        reduction: int = 8,
        alpha_init: float = 1.0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.keep = int(channels * keep_ratio)
        self.input_size = input_size
        self.se_fc1 = nn.Linear(channels, channels // reduction)
        self.se_fc2 = nn.Linear(channels // reduction, channels)
        self.to_rgb = nn.Conv2d(channels, 3, 1, bias=False)
        self.backbone = build_backbone(backbone)
        self.backbone.requires_grad_(False)
        self.backbone_fc = nn.Linear(self.backbone.num_features, channels)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.expand = nn.Conv2d(self.keep, channels, 1, bias=False)

    def train(self, mode: bool = True) -> SemanticChannelPruning:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout or drop-path, whatever the mode
        return self

    def semantic_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, num_features]`` of the 3-channel projection of ``x``."""
        rgb = F.interpolate(self.to_rgb(x), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return self.backbone.forward_features(rgb).mean(dim=(2, 3))

    def channel_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel keep scores ``[B, C]``, computed in float32 even under autocast (they feed a top-k)."""
        with full_precision(x.device.type):
            x = x.float()
            se = torch.sigmoid(self.se_fc2(F.relu(self.se_fc1(x.mean(dim=(2, 3))))))
            semantic = torch.sigmoid(self.backbone_fc(self.semantic_features(x)))
            return se + self.alpha * semantic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = self.channel_scores(x).topk(self.keep, dim=1).indices
        return self.expand(gather_channels(x, index))


class GeometricAffineModulation(nn.Module):
    """GAM: ``fused * (1 + gamma) + beta`` with gamma, beta from the pooled raw modality features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, fused: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc2(F.relu(self.fc1(raw.mean(dim=(2, 3), keepdim=True)))).chunk(2, dim=1)
        return fused * (1 + gamma) + beta


class TopKCrossAttention(nn.Module):
    """Channel-wise cross-attention in which each query channel attends to its top-k key channels.

    Scores outside the ``topk_ratio`` largest of each row are set to ``-inf``
    before the softmax; the result is scaled by a learnt ``gain``.
    """

    def __init__(self, dim: int, heads: int, topk_ratio: float = 0.9, bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.topk = int((dim // heads) * topk_ratio)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.gain = nn.Parameter(torch.tensor([0.2]))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h, w = query.shape[-2:]
        q = split_heads(self.q_dwconv(self.q(query)), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.kv_dwconv(self.kv(context)).chunk(2, dim=1))
        with full_precision(q.device.type):  # the top-k mask is a ranking: float32 keeps it stable
            logits = channel_attention_logits(q.float(), k.float(), self.temperature)
            top = logits.topk(self.topk, dim=-1)
            masked = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
            weights = masked.softmax(dim=-1)
        out = (weights.to(v.dtype) @ v) * self.gain
        return self.project_out(merge_heads(out, h, w))


class TextChannelPerturbation(nn.Module):
    """TCPM for one encoder level with ``dim`` channels per modality.

    1. Concatenate both modalities (``2*dim`` channels); SE weights pick the top
       ``keep_ratio`` of them; a 1x1 conv maps those back to ``2*dim``.
    2. The text code, through a two-layer MLP, scores the ``2*dim`` channels;
       the channels are reordered by descending score (the perturbation).
    3. A shared 1x1 conv ``merge`` takes both the perturbed and the plain
       concatenation to ``dim`` channels; the perturbed one queries the plain
       one through :class:`TopKCrossAttention`, followed by a residual FFN.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        expansion: float,
        bias: bool,
        norm_with_bias: bool,
        text_dim: int = 512,
        keep_ratio: float = 0.5,
        reduction: int = 8,
        attn_topk_ratio: float = 0.9,
    ) -> None:
        super().__init__()
        both = 2 * dim
        self.keep = int(both * keep_ratio)
        self.text_fc1 = nn.Linear(text_dim, text_dim)
        self.text_fc2 = nn.Linear(text_dim, both)
        self.se_fc1 = nn.Linear(both, both // reduction, bias=False)
        self.se_fc2 = nn.Linear(both // reduction, both, bias=False)
        self.select_proj = nn.Conv2d(self.keep, both, 1)
        self.merge = nn.Conv2d(both, dim, 1)
        self.norm_q = ChannelLayerNorm(dim, norm_with_bias)
        self.norm_kv = ChannelLayerNorm(dim, norm_with_bias)
        self.norm_out = ChannelLayerNorm(dim, norm_with_bias)
        self.attn = TopKCrossAttention(dim, heads, attn_topk_ratio, bias=False)
        self.ffn = GatedDconvFFN(dim, expansion, bias)

    def channel_order(self, text_code: torch.Tensor) -> torch.Tensor:
        """Permutation ``[B, 2*dim]`` of the concatenated channels that the text code asks for (float32)."""
        with full_precision(text_code.device.type):
            scores = self.text_fc2(F.relu(self.text_fc1(text_code.float())))
            return scores.topk(scores.shape[1], dim=1).indices

    def se_keep(self, both: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, keep]`` of the concatenated channels with the largest SE weights (float32)."""
        with full_precision(both.device.type):
            se = torch.sigmoid(self.se_fc2(F.relu(self.se_fc1(both.float().mean(dim=(2, 3))))))
            return se.topk(self.keep, dim=1).indices

    def forward(self, feat_a: torch.Tensor, feat_b: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        both = torch.cat([feat_a, feat_b], dim=1)
        selected = self.select_proj(gather_channels(both, self.se_keep(both)))
        perturbed = gather_channels(selected, self.channel_order(text_code))
        attended = self.attn(self.norm_q(self.merge(perturbed)), self.norm_kv(self.merge(both)))
        return attended + self.ffn(self.norm_out(attended))
