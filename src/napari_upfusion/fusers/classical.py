"""Classical slice fusers, the quality bar every learned fuser must clear.

Each is a ``torch.nn.Module`` that follows the slice-fuser protocol of
:mod:`napari_upfusion.engine.registry` (``forward(a, b, text_code=None)`` on
``[B, 1, H, W]`` tensors in ``[0, 1]``, ``uses_text = False``, no weights).
The registry's table of built-in fusers names each class by its
``"napari_upfusion.fusers.classical:<class>"`` path, so this module is imported
only when one of them is built:

``average``
    ``(A + B) / 2``.
``maximum``
    ``max(A, B)`` pixel by pixel.
``laplacian``
    Laplacian-pyramid fusion (Burt and Adelson's pyramid, Toet's fusion rule):
    on every detail level keep the coefficient of larger magnitude, average the
    coarsest (base) level, and collapse the pyramid.

They sit beside the engine: they import nothing of it, nor napari or Qt, and
nothing in the engine imports them by code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["AverageFuser", "LaplacianFuser", "MaximumFuser", "pyramid_levels"]

#: The pyramid never goes deeper than this (a base of 1/16 of the image is coarse enough to average).
MAX_LEVELS = 4
#: Nor does it halve a side below this many pixels (the 5-tap filter needs a few pixels to reflect on).
MIN_BASE_SIZE = 4

_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"The two images to fuse have different shapes ({tuple(a.shape)} and {tuple(b.shape)}); "
            "resample the second onto the first one's grid first."
        )
    if a.ndim != 4:
        raise InputError(f"A slice fuser takes [batch, channel, height, width] tensors, not {a.ndim}-D ones.")


class _ClassicalFuser(nn.Module):
    """Base of the classical fusers: no weights, no text."""

    uses_text = False

    def forward(self, a: torch.Tensor, b: torch.Tensor, text_code: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse ``a`` and ``b`` (``[B, C, H, W]`` in ``[0, 1]``); ``text_code`` is ignored."""
        _check_pair(a, b)
        return self.fuse(a, b)

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class AverageFuser(_ClassicalFuser):
    """The pixel-wise mean ``(A + B) / 2``."""

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b) / 2


class MaximumFuser(_ClassicalFuser):
    """The pixel-wise maximum ``max(A, B)``."""

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)


def pyramid_levels(height: int, width: int, max_levels: int = MAX_LEVELS) -> int:
    """How many detail levels a Laplacian pyramid of an ``height x width`` image gets.

    One per halving of the shorter side while the halved side keeps at least
    :data:`MIN_BASE_SIZE` pixels, at most ``max_levels``: 256 x 256 gets 4,
    16 x 16 gets 2, 8 x 8 gets 1, anything shorter than 8 pixels gets 0 (the
    fusion is then the plain average).
    """
    side, levels = min(height, width), 0
    while levels < max_levels and (side + 1) // 2 >= MIN_BASE_SIZE:
        side = (side + 1) // 2
        levels += 1
    return levels


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5-tap binomial filter with reflection at the borders (``gain`` scales the kernel)."""
    channels = x.shape[1]
    k = torch.tensor(_BINOMIAL_5, dtype=x.dtype, device=x.device)
    k = k / k.sum() * gain**0.5
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)
    return F.conv2d(x, k.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)


def _reduce(x: torch.Tensor) -> torch.Tensor:
    """Blur, then keep every second row and column (odd sides round up)."""
    return _blur(x)[..., ::2, ::2]


def _expand(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Insert zeros between the samples, crop to ``size`` and interpolate with the blur (gain 4)."""
    up = x.new_zeros(*x.shape[:2], 2 * x.shape[-2], 2 * x.shape[-1])
    up[..., ::2, ::2] = x
    return _blur(up[..., : size[0], : size[1]], gain=4.0)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` detail images, finest first, then the base (the coarsest Gaussian level)."""
    pyramid = []
    for _ in range(levels):
        coarse = _reduce(x)
        pyramid.append(x - _expand(coarse, (x.shape[-2], x.shape[-1])))
        x = coarse
    pyramid.append(x)
    return pyramid


def collapse_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid`: exact up to floating-point rounding."""
    x = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        x = detail + _expand(x, (detail.shape[-2], detail.shape[-1]))
    return x


class LaplacianFuser(_ClassicalFuser):
    """Laplacian-pyramid fusion: max-abs selection on the detail levels, the mean on the base.

    ``levels`` fixes the depth; by default it follows the image size
    (:func:`pyramid_levels`).  The result is not clamped (the engine clamps to
    ``[0, 1]``); for identical inputs it is the input.
    """

    def __init__(self, levels: int | None = None) -> None:
        super().__init__()
        if levels is not None and levels < 0:
            raise InputError(f"A Laplacian pyramid needs 0 or more levels, not {levels}.")
        self.levels = levels

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        height, width = a.shape[-2:]
        levels = pyramid_levels(height, width) if self.levels is None else self.levels
        levels = min(levels, pyramid_levels(height, width, max_levels=levels))  # never deeper than fits
        pa, pb = laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)
        fused = [torch.where(da.abs() >= db.abs(), da, db) for da, db in zip(pa[:-1], pb[:-1])]
        fused.append((pa[-1] + pb[-1]) / 2)
        return collapse_pyramid(fused)
