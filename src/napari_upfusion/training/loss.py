"""Training losses: the one that produced the authors' released weights, and an activity-decision loss.

:func:`fusion_loss` is the authors' (their ``fusion_loss_vif``)::

    10 * L1(F, max(A, B)) + 10 * L1(|grad F|, max(|grad A|, |grad B|)) + 10 * (1 - gradient-weighted SSIM)

on the channel mean of each input, where ``|grad|`` is ``|Sobel_x| + |Sobel_y|``
(zero padding) and the SSIM weights of A and B are their shares of the mean
gradient magnitude.  The paper's text names only the first two terms; the code
that trained the weights uses all three.

:func:`decision_loss` replaces the pixel-wise maximum by a *decision map*, the
classic rule of multi-focus and multi-modal fusion that SDNet (Zhang and Ma,
IJCV 2021) also uses to build its loss targets: at each pixel the source whose
local gradient energy (squared Sobel magnitude, Gaussian-smoothed) is larger
wins.  The intensity target is the winning source's pixel (decision smoothed
over ``sigma_target`` pixels) and the gradient target is the winning source's
*signed* Sobel gradient (decided over ``sigma_gradient`` pixels), so the fused
image is asked to keep each edge's strength and direction from the source
that has it, rather than to copy the brighter pixel::

    10 * L1(F, T) + 10 * (L1(dF/dx, Gx) + L1(dF/dy, Gy)) + 10 * (1 - SSIM(F, T))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import LOSS_NAMES

__all__ = ["LOSSES", "decision_loss", "decision_targets", "fusion_loss", "sobel", "sobel_magnitude", "ssim"]

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
    grad_a, grad_b, grad_f = sobel_magnitude(a), sobel_magnitude(b), sobel_magnitude(fused)
    intensity = 10 * F.l1_loss(fused, torch.maximum(a, b))
    gradient = 10 * F.l1_loss(grad_f, torch.maximum(grad_a, grad_b))
    mean_a, mean_b = grad_a.mean(), grad_b.mean()
    weight_a = mean_a / (mean_a + mean_b)
    structure = 10 * (1 - (weight_a * ssim(a, fused) + (1 - weight_a) * ssim(b, fused)))
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


def decision_targets(
    a: torch.Tensor, b: torch.Tensor, sigma_target: float = 3.0, sigma_gradient: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The targets of :func:`decision_loss`: intensity ``T`` and signed gradient ``(Gx, Gy)``, each ``[B, 1, H, W]``.

    A pixel takes ``a`` where ``a``'s Gaussian-smoothed gradient energy is larger
    than ``b``'s, else ``b`` (ties go to ``b``).  No gradient flows into the targets.
    """
    with torch.no_grad():
        ax, ay = sobel(a)
        bx, by = sobel(b)
        energy_a, energy_b = ax * ax + ay * ay, bx * bx + by * by
        take_a = (_gaussian_blur(energy_a, sigma_target) > _gaussian_blur(energy_b, sigma_target)).to(a.dtype)
        target = take_a * a + (1 - take_a) * b
        take_a = (_gaussian_blur(energy_a, sigma_gradient) > _gaussian_blur(energy_b, sigma_gradient)).to(a.dtype)
        return target, take_a * ax + (1 - take_a) * bx, take_a * ay + (1 - take_a) * by


def decision_loss(
    a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor, sigma_target: float = 3.0, sigma_gradient: float = 1.0
) -> dict[str, torch.Tensor]:
    """The three weighted terms of the activity-decision loss (module docstring) and their sum (``"total"``)."""
    a, b, fused = (t.mean(dim=1, keepdim=True) for t in (a, b, fused))
    target, gx, gy = decision_targets(a, b, sigma_target, sigma_gradient)
    fx, fy = sobel(fused)
    intensity = 10 * F.l1_loss(fused, target)
    gradient = 10 * (F.l1_loss(fx, gx) + F.l1_loss(fy, gy))
    structure = 10 * (1 - ssim(fused, target))
    return {"intensity": intensity, "gradient": gradient, "ssim": structure, "total": intensity + gradient + structure}


#: Training losses by name (``upfusion train --loss``), in the order of ``training.settings.LOSS_NAMES``.
LOSSES = dict(zip(LOSS_NAMES, (fusion_loss, decision_loss), strict=True))
