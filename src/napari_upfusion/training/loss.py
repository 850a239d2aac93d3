"""Training losses: the one that produced the authors' released weights, and its direction-aware variant.

:func:`fusion_loss` is the authors' (their ``fusion_loss_vif``)::

    10 * L1(F, max(A, B)) + 10 * L1(|grad F|, max(|grad A|, |grad B|)) + 10 * (1 - gradient-weighted SSIM)

on the channel mean of each input, where ``|grad|`` is ``|Sobel_x| + |Sobel_y|``
(zero padding) and the SSIM weights of A and B are their shares of the mean
gradient magnitude.  The paper's text names only the first two terms; the code
that trained the weights uses all three.

:func:`edges_loss` keeps the intensity and SSIM terms and changes what the
gradient term asks for.  The authors' term compares gradient *magnitudes*, so
an edge may come out with the right strength but the wrong direction or sign
(for example where a bright CT bone edge meets a dark MRI one).  Here each
pixel's target is the *signed* Sobel gradient ``(Gx, Gy)`` of the source whose
local gradient energy (squared Sobel magnitude, Gaussian-smoothed over
``sigma`` pixels) is larger, the decision-map rule of multi-modal fusion
(SDNet, Zhang and Ma, IJCV 2021, builds its gradient targets the same way)::

    10 * L1(F, max(A, B)) + 10 * (L1(dF/dx, Gx) + L1(dF/dy, Gy)) + 10 * (1 - gradient-weighted SSIM)

Only the targets of the gradient term depend on the decision; no gradient
flows into them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import LOSS_NAMES

__all__ = ["LOSSES", "decision_gradients", "edges_loss", "fusion_loss", "sobel", "sobel_magnitude", "ssim"]

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
    intensity, structure = _intensity_and_structure(a, b, fused)
    gradient = 10 * F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(a), sobel_magnitude(b)))
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


def decision_gradients(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient targets ``(Gx, Gy)`` of :func:`edges_loss`, each ``[B, 1, H, W]``.

    At each pixel, the signed Sobel gradient of ``a`` where ``a``'s gradient energy,
    Gaussian-smoothed over ``sigma`` pixels, is larger than ``b``'s, else of ``b``
    (ties go to ``b``).  No gradient flows into the targets.
    """
    with torch.no_grad():
        ax, ay = sobel(a)
        bx, by = sobel(b)
        take_a = (_gaussian_blur(ax * ax + ay * ay, sigma) > _gaussian_blur(bx * bx + by * by, sigma)).to(a.dtype)
        return take_a * ax + (1 - take_a) * bx, take_a * ay + (1 - take_a) * by


def _intensity_and_structure(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' intensity term and gradient-weighted SSIM term (inputs already channel means)."""
    grad_a, grad_b = sobel_magnitude(a), sobel_magnitude(b)
    intensity = 10 * F.l1_loss(fused, torch.maximum(a, b))
    mean_a, mean_b = grad_a.mean(), grad_b.mean()
    weight_a = mean_a / (mean_a + mean_b)
    structure = 10 * (1 - (weight_a * ssim(a, fused) + (1 - weight_a) * ssim(b, fused)))
    return intensity, structure


def edges_loss(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor, sigma: float = 1.0) -> dict[str, torch.Tensor]:
    """The three weighted terms of the direction-aware loss (module docstring) and their sum (``"total"``)."""
    a, b, fused = (t.mean(dim=1, keepdim=True) for t in (a, b, fused))
    intensity, structure = _intensity_and_structure(a, b, fused)
    gx, gy = decision_gradients(a, b, sigma)
    fx, fy = sobel(fused)
    gradient = 10 * (F.l1_loss(fx, gx) + F.l1_loss(fy, gy))
    return {"intensity": intensity, "gradient": gradient, "ssim": structure, "total": intensity + gradient + structure}


#: Training losses by name (``upfusion train --loss``), in the order of ``training.settings.LOSS_NAMES``.
LOSSES = dict(zip(LOSS_NAMES, (fusion_loss, edges_loss), strict=True))
