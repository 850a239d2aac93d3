"""Restormer-style building blocks shared by every level of the UP-Fusion network.

All tensors are ``[batch, channels, height, width]``.  Attention here is the
"transposed" kind: the attention matrix is ``channels x channels`` per head, so
its cost grows linearly with the number of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelLayerNorm",
    "Downsample",
    "GatedDconvFFN",
    "TransformerBlock",
    "TransposedAttention",
    "Upsample",
    "merge_heads",
    "split_heads",
    "transformer_stage",
]


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channel axis of an image tensor.

    ``with_bias=False`` gives the bias-free variant that rescales by the
    standard deviation without centring (Restormer's ``BiasFree`` option).
    """

    def __init__(self, channels: int, with_bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.with_bias = with_bias
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_bias:
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)


class GatedDconvFFN(nn.Module):
    """Feed-forward network with a depth-wise 3x3 convolution and a GELU gate."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, heads*c, H, W]`` -> ``[B, heads, c, H*W]``."""
    b, ch, h, w = x.shape
    return x.reshape(b, heads, ch // heads, h * w)


def merge_heads(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, heads, c, H*W]`` -> ``[B, heads*c, H, W]``."""
    b, heads, c, _ = x.shape
    return x.reshape(b, heads * c, height, width)


def full_precision(device_type: str):
    """A context in which autocast is off, for the few decisions (top-k rankings) that must not see bf16 noise."""
    return torch.autocast(device_type, enabled=False)


def channel_attention_logits(q: torch.Tensor, k: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query channel with every key channel, scaled per head."""
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    return (q @ k.transpose(-2, -1)) * temperature


class TransposedAttention(nn.Module):
    """Multi-head self-attention across channels (Restormer's MDTA)."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = (split_heads(t, self.heads) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        attn = channel_attention_logits(q, k, self.temperature).softmax(dim=-1)
        return self.project_out(merge_heads(attn @ v, h, w))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm_with_bias: bool) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, norm_with_bias)
        self.attn = TransposedAttention(dim, heads, bias)
        self.norm2 = ChannelLayerNorm(dim, norm_with_bias)
        self.ffn = GatedDconvFFN(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(
    dim: int, depth: int, heads: int, expansion: float, bias: bool, norm_with_bias: bool
) -> nn.Sequential:
    """``depth`` transformer blocks of one width, applied in sequence."""
    return nn.Sequential(*(TransformerBlock(dim, heads, expansion, bias, norm_with_bias) for _ in range(depth)))


class Downsample(nn.Module):
    """Halve the resolution and double the channels: 3x3 conv to ``dim/2``, then pixel-unshuffle."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(self.conv(x), 2)


class Upsample(nn.Module):
    """Double the resolution and halve the channels: 3x3 conv to ``2*dim``, then pixel-shuffle."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, 2 * dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)
