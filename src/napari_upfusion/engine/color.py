"""Colour handling: YCbCr (ITU-R BT.601, full range) and pseudo-colour maps.

The network fuses one luminance channel.  Colour inputs are split into Y and
chroma; Y is fused and the chroma of the colour input is put back, the way the
fusion field treats pseudo-colour PET/SPECT and colour visible photographs.
"""

from __future__ import annotations

import numpy as np

from ..utils.colour import LUMA_WEIGHTS

__all__ = ["COLORMAPS", "apply_colormap", "is_grey_rgb", "rgb_to_ycbcr", "ycbcr_to_rgb"]

_RGB_TO_YCBCR = np.array(
    [
        LUMA_WEIGHTS,
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB in ``[0, 1]`` to ``[..., 3]`` (Y in ``[0, 1]``, Cb and Cr in ``[-0.5, 0.5]``)."""
    return (np.asarray(rgb, dtype=np.float32) @ _RGB_TO_YCBCR.T.astype(np.float32)).astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`, clipped to ``[0, 1]``."""
    rgb = np.asarray(ycbcr, dtype=np.float32) @ _YCBCR_TO_RGB.T.astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def is_grey_rgb(rgb: np.ndarray, tol: float = 0.0) -> bool:
    """True if the three channels of ``[..., 3]`` are equal (grey stored as RGB)."""
    r, g, b = (rgb[..., i] for i in range(3))
    if tol == 0:
        return bool(np.array_equal(r, g) and np.array_equal(g, b))
    return bool(np.abs(r.astype(np.float64) - g).max() <= tol and np.abs(g.astype(np.float64) - b).max() <= tol)


# Piecewise-linear colour maps: (position, (r, g, b)) control points on [0, 1].
COLORMAPS: dict[str, list[tuple[float, tuple[float, float, float]]]] = {
    "hot": [(0.0, (0, 0, 0)), (0.375, (1, 0, 0)), (0.75, (1, 1, 0)), (1.0, (1, 1, 1))],
    "jet": [
        (0.0, (0, 0, 0.5)),
        (0.125, (0, 0, 1)),
        (0.375, (0, 1, 1)),
        (0.625, (1, 1, 0)),
        (0.875, (1, 0, 0)),
        (1.0, (0.5, 0, 0)),
    ],
    "pet": [(0.0, (0, 0, 0)), (0.25, (0.4, 0, 0.6)), (0.5, (0.9, 0.1, 0.1)), (0.75, (1, 0.7, 0)), (1.0, (1, 1, 1))],
}


def apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Scalar ``values`` in ``[0, 1]`` to ``[..., 3]`` RGB through the named map of :data:`COLORMAPS`."""
    try:
        points = COLORMAPS[name]
    except KeyError:
        from ..errors import InputError

        raise InputError(f"Unknown colormap {name!r}; use one of {', '.join(COLORMAPS)}.") from None
    xs = np.array([p for p, _ in points])
    channels = [np.interp(values, xs, [c[i] for _, c in points]).astype(np.float32) for i in range(3)]
    return np.stack(channels, axis=-1)
