"""Image-fusion quality metrics, as the fusion literature computes them.

Every function takes 2-D arrays on the 0..255 grey scale: the fused image
``fused`` and, for the metrics that compare with the sources, the two source
images ``a`` and ``b`` (all three of one shape).  The definitions follow the
evaluators used by CDDFuse-style papers (and the MATLAB code they were ported
from), so that numbers are comparable with published tables:

========  ==============================================================  ===========
name      what                                                            better
========  ==============================================================  ===========
``EN``    Shannon entropy of the 8-bit histogram of F, in bits             higher
``SD``    standard deviation of F (population, ddof=0)                     higher
``SF``    spatial frequency: sqrt(mean row diff^2 + mean column diff^2)    higher
``AG``    average gradient, mean of sqrt((gx^2 + gy^2) / 2)                higher
``MI``    MI(F, A) + MI(F, B), 256-bin joint histograms, natural log       higher
``SCD``   sum of the correlations of differences                           higher
``VIF``   multi-scale VIFF(A, F) + VIFF(B, F), 4 scales, sigma_nsq = 2     higher
``Qabf``  Xydeas-Petrovic edge preservation, Sobel gradients, L = 1        higher
``SSIM``  SSIM(F, A) + SSIM(F, B), data_range 255, 7x7 uniform window      higher
========  ==============================================================  ===========

Rounding: the metric functions use the values they are given, except ``EN``
and ``MI``, which work on histograms and so round to whole grey values
(``np.round``, clipped to 0..255) before counting.  :func:`evaluate` rounds the
fused image the same way first, as the published evaluators do (they score the
fused image after it was written as an 8-bit file); the sources are used as
given.  Exact halves go to even, so for images such as ``(A + B) / 2`` the
result depends on floating-point noise around the halves: with
``Y = 0.299 R + 0.587 G + 0.114 B`` in float64 this reproduces the field's
numbers; :func:`round_grey` is the noise-proof quantisation that
:mod:`napari_upfusion.evaluation.evaluate` applies to a fuser's float32 output before
scoring it.

Pure numpy/scipy: no torch, no napari.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.signal import convolve2d

from ..errors import InputError

__all__ = [
    "AG",
    "EN",
    "METRIC_INFO",
    "METRIC_NAMES",
    "MI",
    "SCD",
    "SD",
    "SF",
    "SSIM",
    "VIF",
    "Qabf",
    "evaluate",
    "round_grey",
]

#: The metrics :func:`evaluate` returns, in the order papers print them (AG last, as it is optional there).
METRIC_NAMES: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

#: Which way each metric is better, and what it measures in one line (F: fused image, A and B: the inputs).
METRIC_INFO: dict[str, tuple[str, str]] = {
    "EN": ("higher", "entropy of F's 8-bit grey histogram, in bits (at most 8): how much information F holds"),
    "SD": ("higher", "standard deviation of F's grey values: its contrast"),
    "SF": ("higher", "spatial frequency, the RMS of F's row and column differences: how much fine detail F has"),
    "AG": ("higher", "average gradient of F: how sharp its edges are"),
    "MI": ("higher", "mutual information MI(F,A) + MI(F,B), in nats: information F carries over from A and B"),
    "SCD": ("higher", "corr(F-B, A) + corr(F-A, B), at most 2: how much of each input's own content F keeps"),
    "VIF": ("higher", "visual information fidelity VIFF(A,F) + VIFF(B,F): what a viewer would see of A and B in F"),
    "Qabf": ("higher", "Xydeas-Petrovic Q^AB/F, 0 to 1: the share of A's and B's edge strength kept in F"),
    "SSIM": ("higher", "SSIM(F,A) + SSIM(F,B), so at most 2: structural similarity of F to both inputs"),
}

Array = NDArray[np.float64]


# ----------------------------------------------------------------------------- input checks
def _as_image(x: ArrayLike, name: str) -> Array:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(
            f"The {name} image has {arr.ndim} dimension(s) but the metrics need one 2-D grey image; "
            "pass a single slice (take Y of a colour image first)."
        )
    if arr.size == 0 or min(arr.shape) < 2:
        raise InputError(f"The {name} image has shape {arr.shape}; the metrics need at least 2x2 pixels.")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"The {name} image contains NaN or infinite values; replace them before computing metrics.")
    return arr


def _check_triplet(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> tuple[Array, Array, Array]:
    f, ia, ib = _as_image(fused, "fused"), _as_image(a, "first source"), _as_image(b, "second source")
    if not (f.shape == ia.shape == ib.shape):
        raise InputError(
            f"The fused image and the two sources have different shapes ({f.shape}, {ia.shape}, {ib.shape}); "
            "the metrics compare pixel by pixel, so resample them onto one grid first."
        )
    return f, ia, ib


def round_grey(x: ArrayLike) -> Array:
    """Quantise float grey values to whole ones, deaf to float32 noise: snap to 1e-3, then halves to even.

    ``round_grey(2.4999999) == round_grey(2.5000001) == 2.0`` and
    ``round_grey(3.4999999) == 4.0``; not clipped.  This is how a fuser's
    output becomes an 8-bit image in :mod:`napari_upfusion.evaluation.evaluate`.
    """
    return np.round(np.round(np.asarray(x, dtype=np.float64), 3))


def _grey_levels(x: Array) -> NDArray[np.intp]:
    """Whole grey values 0..255 (``np.round``, clipped) for the histogram-based metrics."""
    return np.clip(np.round(x), 0, 255).astype(np.intp)


# ----------------------------------------------------------------------------- no-reference metrics
def EN(fused: ArrayLike) -> float:
    """Entropy of the fused image in bits, from its 256-bin histogram of whole grey values.

    ``-sum(p * log2 p)`` over the occupied grey levels; 0 for a constant image,
    at most 8 (a uniform histogram).
    """
    levels = _grey_levels(_as_image(fused, "fused")).ravel()
    p = np.bincount(levels, minlength=256) / levels.size
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def SD(fused: ArrayLike) -> float:
    """Standard deviation of the fused image's grey values (population, ``ddof=0``): its global contrast."""
    return float(np.std(_as_image(fused, "fused")))


def SF(fused: ArrayLike) -> float:
    """Spatial frequency: ``sqrt(RF^2 + CF^2)`` with RF^2, CF^2 the mean squared horizontal and vertical differences.

    Each mean is over the differences that exist (``W-1`` per row, ``H-1`` per
    column); 0 for a constant image.
    """
    f = _as_image(fused, "fused")
    rf2 = np.mean(np.diff(f, axis=1) ** 2)
    cf2 = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def AG(fused: ArrayLike) -> float:
    """Average gradient: mean over pixels of ``sqrt((gx^2 + gy^2) / 2)`` with forward differences.

    ``gx`` and ``gy`` are the forward differences along columns and rows, on
    the common ``(H-1) x (W-1)`` grid where both exist; 0 for a constant image.
    """
    f = _as_image(fused, "fused")
    gx = f[:-1, 1:] - f[:-1, :-1]
    gy = f[1:, :-1] - f[:-1, :-1]
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2.0)))


# ----------------------------------------------------------------------------- mutual information
def mutual_information(x: ArrayLike, y: ArrayLike) -> float:
    """Mutual information (natural log, nats) of two images' whole grey values, from their 256x256 joint histogram.

    Symmetric in ``x`` and ``y``; equals the entropy (in nats) of ``x`` when ``y`` is ``x``.
    """
    ix, iy = _grey_levels(_as_image(x, "first")), _grey_levels(_as_image(y, "second"))
    if ix.shape != iy.shape:
        raise InputError(f"The two images have different shapes ({ix.shape} and {iy.shape}); resample them first.")
    joint = np.bincount((ix * 256 + iy).ravel(), minlength=256 * 256).reshape(256, 256).astype(np.float64)
    joint /= joint.sum()
    px = joint.sum(axis=1, keepdims=True)
    py = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * (np.log(joint[nz]) - np.log((px @ py)[nz]))))


def MI(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """``MI(F, A) + MI(F, B)`` in nats, see :func:`mutual_information`."""
    f, ia, ib = _check_triplet(fused, a, b)
    return mutual_information(f, ia) + mutual_information(f, ib)


# ----------------------------------------------------------------------------- SCD
def _corr(x: Array, y: Array) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if den == 0.0:
        return 0.0  # a constant image correlates with nothing
    return float(np.sum(dx * dy)) / den


def SCD(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Sum of the correlations of differences (Aslantas and Bendes): ``r(F - B, A) + r(F - A, B)``.

    ``r`` is Pearson's correlation; a term whose difference image (or source) is
    constant counts as 0.  Ranges over [-2, 2].
    """
    f, ia, ib = _check_triplet(fused, a, b)
    return _corr(f - ib, ia) + _corr(f - ia, ib)


# ----------------------------------------------------------------------------- VIF
def _gaussian_1d(n: int) -> Array:
    """Normalised 1-D factor of MATLAB's ``fspecial('gaussian', n, n / 5)``, which is separable."""
    sd = n / 5.0
    r = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sd * sd))
    return g / g.sum()


def _filter_valid(x: Array, g: Array) -> Array:
    """``conv2(x, g g^T, 'valid')`` for a symmetric separable window, computed as two exact 1-D passes."""
    n = g.size
    h = (n - 1) // 2
    y = ndimage.correlate1d(x, g, axis=0, mode="constant")[h : x.shape[0] - (n - 1 - h), :]
    y = ndimage.correlate1d(y, g, axis=1, mode="constant")[:, h : x.shape[1] - (n - 1 - h)]
    return y


def _vif_parts(ref: Array, dist: Array, sigma_nsq: float = 2.0, eps: float = 1e-10) -> tuple[float, float]:
    """Numerator and denominator of the pixel-domain multi-scale VIF of ``dist`` against ``ref``."""
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1  # 17, 9, 5, 3
        g = _gaussian_1d(n)
        if scale > 1:
            ref = _filter_valid(ref, g)[::2, ::2]
            dist = _filter_valid(dist, g)[::2, ::2]
        if min(ref.shape) < n or min(dist.shape) < n:
            break  # image too small for this scale: the coarser scales have nothing to add
        mu1, mu2 = _filter_valid(ref, g), _filter_valid(dist, g)
        s1 = _filter_valid(ref * ref, g) - mu1 * mu1
        s2 = _filter_valid(dist * dist, g) - mu2 * mu2
        s12 = _filter_valid(ref * dist, g) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0

        gain = s12 / (s1 + eps)
        sv = s2 - gain * s12
        flat1 = s1 < eps
        gain[flat1] = 0
        sv[flat1] = s2[flat1]
        s1[flat1] = 0
        flat2 = s2 < eps
        gain[flat2] = 0
        sv[flat2] = 0
        neg = gain < 0
        sv[neg] = s2[neg]
        gain[neg] = 0
        sv[sv <= eps] = eps

        num += float(np.sum(np.log10(1 + gain * gain * s1 / (sv + sigma_nsq))))
        den += float(np.sum(np.log10(1 + s1 / sigma_nsq)))
    return num, den


def vif_pair(ref: ArrayLike, dist: ArrayLike) -> float:
    """Multi-scale pixel-domain visual information fidelity of ``dist`` with respect to ``ref``.

    Four scales with Gaussian windows of 17, 9, 5 and 3 pixels (sigma = size/5),
    'valid' filtering and 2x decimation between scales, sigma_nsq = 2 (Sheikh and
    Bovik's ``vifp_mscale`` as used by Han et al.'s VIFF).  1 when ``dist`` is
    ``ref``; 1 as well, by convention, when ``ref`` is constant (0/0).
    """
    r, d = _as_image(ref, "reference"), _as_image(dist, "distorted")
    if r.shape != d.shape:
        raise InputError(f"The two images have different shapes ({r.shape} and {d.shape}); resample them first.")
    num, den = _vif_parts(r, d)
    if den == 0.0:
        return 1.0
    return num / den


def VIF(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """``VIF(A -> F) + VIF(B -> F)``, see :func:`vif_pair`; 2 when F, A and B are one image."""
    f, ia, ib = _check_triplet(fused, a, b)
    return vif_pair(ia, f) + vif_pair(ib, f)


# ----------------------------------------------------------------------------- Qabf
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)


def _sobel_strength_angle(x: Array) -> tuple[Array, Array]:
    """Sobel edge strength and orientation (``arctan(gy / gx)``, pi/2 where gx = 0); zero padding, 'same' size."""
    gx = convolve2d(x, _SOBEL_X, mode="same")
    gy = convolve2d(x, _SOBEL_Y, mode="same")
    strength = np.sqrt(gx * gx + gy * gy)
    angle = np.full_like(x, math.pi / 2)
    nz = gx != 0
    angle[nz] = np.arctan(gy[nz] / gx[nz])
    return strength, angle


def _edge_preservation(g_s: Array, a_s: Array, g_f: Array, a_f: Array) -> Array:
    """Per-pixel edge preservation Q^{SF} of a source S in F (Xydeas and Petrovic's sigmoids)."""
    tg, kg, dg = 0.9994, -15.0, 0.5
    ta, ka, da = 0.9879, -22.0, 0.8
    # Relative strength min/max: 1 for equal non-zero strengths, 0 where both are 0.  (The CDDFuse
    # port sets it to g_f where g_s == g_f; the sigmoid saturates there, so the two differ by < 0.1%.)
    rel = np.zeros_like(g_s)
    hi = np.maximum(g_s, g_f)
    nz = hi > 0
    rel[nz] = np.minimum(g_s, g_f)[nz] / hi[nz]
    orient = 1.0 - np.abs(a_s - a_f) / (math.pi / 2)
    q_g = tg / (1.0 + np.exp(kg * (rel - dg)))
    q_a = ta / (1.0 + np.exp(ka * (orient - da)))
    return q_g * q_a


def Qabf(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """Xydeas-Petrovic gradient-based fusion quality Q^{AB/F} (L = 1), in [0, 1].

    Edge strength and orientation come from 3x3 Sobel filters ('same' size, zero
    padding); each source pixel's edge preservation in F (sigmoids with
    Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8) is averaged with the
    source's edge strength as weight.  0 when neither source has any edge.
    """
    f, ia, ib = _check_triplet(fused, a, b)
    g_a, a_a = _sobel_strength_angle(ia)
    g_b, a_b = _sobel_strength_angle(ib)
    g_f, a_f = _sobel_strength_angle(f)
    q_af = _edge_preservation(g_a, a_a, g_f, a_f)
    q_bf = _edge_preservation(g_b, a_b, g_f, a_f)
    den = float(np.sum(g_a + g_b))
    if den == 0.0:
        return 0.0
    return float(np.sum(q_af * g_a + q_bf * g_b)) / den


# ----------------------------------------------------------------------------- SSIM
def ssim_pair(x: ArrayLike, y: ArrayLike) -> float:
    """Mean structural similarity of two grey images (skimage defaults: 7x7 uniform window, data_range 255)."""
    from skimage.metrics import structural_similarity

    ix, iy = _as_image(x, "first"), _as_image(y, "second")
    if ix.shape != iy.shape:
        raise InputError(f"The two images have different shapes ({ix.shape} and {iy.shape}); resample them first.")
    if min(ix.shape) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels; these are {ix.shape}.")
    return float(structural_similarity(ix, iy, data_range=255.0))


def SSIM(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> float:
    """``SSIM(F, A) + SSIM(F, B)``, see :func:`ssim_pair`; 2 when F, A and B are one image."""
    f, ia, ib = _check_triplet(fused, a, b)
    return ssim_pair(f, ia) + ssim_pair(f, ib)


# ----------------------------------------------------------------------------- all at once
def evaluate(fused: ArrayLike, a: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one fused image and its two sources, on the 0..255 scale.

    ``fused`` is rounded to whole grey values (``np.round``, halves to even)
    and clipped to 0..255 first, as writing it as an 8-bit image would; ``a``
    and ``b`` are used as given.  Quantise float32 results with
    :func:`round_grey` before calling this, as :mod:`napari_upfusion.evaluation.evaluate` does.
    """
    f, ia, ib = _check_triplet(fused, a, b)
    f = np.clip(np.round(f), 0.0, 255.0)
    return {
        "EN": EN(f),
        "SD": SD(f),
        "SF": SF(f),
        "AG": AG(f),
        "MI": MI(f, ia, ib),
        "SCD": SCD(f, ia, ib),
        "VIF": VIF(f, ia, ib),
        "Qabf": Qabf(f, ia, ib),
        "SSIM": SSIM(f, ia, ib),
    }
