"""The loss that produced the authors' released weights (their ``fusion_loss_vif``).

``10 * L1(F, max(A, B)) + 10 * L1(|grad F|, max(|grad A|, |grad B|)) + 10 * (1 - gradient-weighted SSIM)``
on the channel mean of each input, where ``|grad|`` is ``|Sobel_x| + |Sobel_y|``
(zero padding) and the SSIM weights of A and B are their shares of the mean
gradient magnitude.  The paper's text names only the first two terms; the code
that trained the weights uses all three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fusion_loss", "sobel_magnitude", "ssim"]

_SOBEL = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x| + |Sobel_y|`` of a ``[B, 1, H, W]`` tensor, same size (zero padding)."""
    kx = _SOBEL.to(x).unsqueeze(0)
    ky = kx.transpose(-1, -2).flip(-2)
    return F.conv2d(x, kx, padding=1).abs() + F.conv2d(x, ky, padding=1).abs()


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
