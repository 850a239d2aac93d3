"""Training losses: the one that produced the authors' released weights, and its direction-aware variant.

:func:`fusion_loss` is the authors' (their ``fusion_loss_vif``)::

    10 * L1(F, max(A, B)) + 10 * L1(|grad F|, max(|grad A|, |grad B|)) + 10 * (1 - gradient-weighted SSIM)

on the channel mean of each input, where ``|grad|`` is ``|Sobel_x| + |Sobel_y|``
(zero padding) and the SSIM weights of A and B are their shares of the mean
gradient magnitude.  The paper's text names only the first two terms; the code
that trained the weights uses all three.

:func:`edges_loss` keeps the SSIM term and changes what the other two ask for,
after the decision-map rule of multi-modal fusion (SDNet, Zhang and Ma, IJCV
2021, builds its loss targets the same way): a source's *activity* is its
squared Sobel magnitude, Gaussian-smoothed.

- Gradient term: the authors' compares gradient *magnitudes*, so an edge may
  come out with the right strength but the wrong direction or sign (where a
  bright CT bone edge meets a dark MRI one, say).  Here each pixel's target is
  the *signed* Sobel gradient ``(Gx, Gy)`` of the source whose activity
  (smoothed over ``sigma`` pixels) is larger.
- Intensity term: half the authors' pixel-wise maximum, half the
  activity-weighted mean ``w A + (1 - w) B`` with ``w = act_A / (act_B + act_A)``
  (activities smoothed over ``sigma_weight`` pixels; where neither source has an
  edge nearby, ``w`` is 0 and the mean follows B, the functional or infrared
  image).  The maximum alone makes a patchwork of both sources wherever their
  brightness crosses, as it does inside the brain in MRI-CT; the weighted mean
  keeps the texture of the source that has it.

::

    10 * L1(F, (max(A, B) + w A + (1 - w) B) / 2) + 10 * (L1(dF/dx, Gx) + L1(dF/dy, Gy))
        + 10 * (1 - gradient-weighted SSIM)

No gradient flows into the targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import LOSS_NAMES

__all__ = ["LOSSES", "edges_loss", "edges_targets", "fusion_loss", "sobel", "sobel_magnitude", "ssim"]

_SOBEL = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]])


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed Sobel derivatives ``(d/dx, d/dy)`` of a ``[B, 1, H, W]`` tensor, same size (zero padding)."""
    kx = _SOBEL.to(x).unsqueeze(0)
    ky = kx.transpose(-1, -2).flip(-2)
    return F.conv2d(x, kx, padding=1), F.conv2d(x, ky, padding=1)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x| + |Sobel_y|`` of a ``[B, 1, H, W]`` tensor, same size (zero padding)."""
    gx, gy = sobel(x)
    return gx.abs() + gy.abs()


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).to(like)
    return (g[:, None] * g[None, :]).expand(1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two ``[B, 1, H, W]`` tensors in ``[0, 1]`` (Gaussian 11x11, sigma 1.5, zero padding)."""
    w = _gaussian_window(window, sigma, x)
    pad = window // 2
    mu_x, mu_y = F.conv2d(x, w, padding=pad), F.conv2d(y, w, padding=pad)
    var_x = F.conv2d(x * x, w, padding=pad) - mu_x**2
    var_y = F.conv2d(y * y, w, padding=pad) - mu_y**2
    cov = F.conv2d(x * y, w, padding=pad) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean()


def fusion_loss(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three weighted terms and their sum (``"total"``) for inputs ``a``, ``b`` and output ``fused``."""
    a, b, fused = (t.mean(dim=1, keepdim=True) for t in (a, b, fused))
    intensity = 10 * F.l1_loss(fused, torch.maximum(a, b))
    gradient = 10 * F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(a), sobel_magnitude(b)))
    structure = _weighted_ssim_term(a, b, fused)
    return {"intensity": intensity, "gradient": gradient, "ssim": structure, "total": intensity + gradient + structure}


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` (reflected borders, radius 3 sigma); ``sigma=0`` is the identity."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # tiny images: replicate instead of reflecting
        x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    else:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def edges_targets(
    a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0, sigma_weight: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The targets of :func:`edges_loss`: intensity ``T`` and signed gradient ``(Gx, Gy)``, each ``[B, 1, H, W]``.

    ``(Gx, Gy)`` is ``a``'s Sobel gradient where ``a``'s activity over ``sigma`` pixels is
    larger than ``b``'s, else ``b``'s (ties go to ``b``); ``T`` is the mean of the pixel-wise
    maximum and the activity-weighted mean over ``sigma_weight`` pixels (module docstring).
    """
    with torch.no_grad():
        (ax, ay), (bx, by) = sobel(a), sobel(b)
        energy_a, energy_b = ax * ax + ay * ay, bx * bx + by * by
        take_a = (_gaussian_blur(energy_a, sigma) > _gaussian_blur(energy_b, sigma)).to(a.dtype)
        gx, gy = take_a * ax + (1 - take_a) * bx, take_a * ay + (1 - take_a) * by
        wide_a, wide_b = _gaussian_blur(energy_a, sigma_weight), _gaussian_blur(energy_b, sigma_weight)
        weight = wide_a / (wide_a + wide_b + 1e-6)
        target = 0.5 * torch.maximum(a, b) + 0.5 * (weight * a + (1 - weight) * b)
        return target, gx, gy


def _weighted_ssim_term(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """The authors' SSIM term: ``10 * (1 - SSIM)`` with A and B weighted by their shares of the mean gradient."""
    mean_a, mean_b = sobel_magnitude(a).mean(), sobel_magnitude(b).mean()
    weight_a = mean_a / (mean_a + mean_b)
    return 10 * (1 - (weight_a * ssim(a, fused) + (1 - weight_a) * ssim(b, fused)))


def edges_loss(
    a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor, sigma: float = 1.0, sigma_weight: float = 3.0
) -> dict[str, torch.Tensor]:
    """The three weighted terms of the edges loss (module docstring) and their sum (``"total"``)."""
    a, b, fused = (t.mean(dim=1, keepdim=True) for t in (a, b, fused))
    target, gx, gy = edges_targets(a, b, sigma, sigma_weight)
    fx, fy = sobel(fused)
    intensity = 10 * F.l1_loss(fused, target)
    gradient = 10 * (F.l1_loss(fx, gx) + F.l1_loss(fy, gy))
    structure = _weighted_ssim_term(a, b, fused)
    return {"intensity": intensity, "gradient": gradient, "ssim": structure, "total": intensity + gradient + structure}


#: Training losses by name (``upfusion train --loss``), in the order of ``training.settings.LOSS_NAMES``.
LOSSES = dict(zip(LOSS_NAMES, (fusion_loss, edges_loss), strict=True))
