"""Mapping each modality's intensities to the ``[0, 1]`` range the network was trained on.

The rule, per input volume (never per slice, so that slices stay comparable):

* ``uint8`` data (PNG photographs, atlas slices) is already a display range:
  ``x / 255``;
* CT in Hounsfield units (any input marked ``CT`` that has values below
  -100) goes through a window, by default ``[-100, 1500]`` HU, which shows bone
  bright and soft tissue dark as fusion benchmarks do; ``window`` takes a
  name from :data:`CT_WINDOWS` or ``(level, width)``;
* everything else is mapped by robust percentiles: the 0.5th percentile to 0
  and the 99.5th to 1, clipped (``percentiles`` changes them).

A constant input maps to all zeros (no division by zero).  NaN and infinite
values are refused by :func:`check_finite`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["CT_WINDOWS", "DEFAULT_PERCENTILES", "check_finite", "looks_like_hounsfield", "normalize"]

#: Named CT windows as ``(level, width)`` in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "fusion": (700.0, 1600.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft-tissue": (50.0, 400.0),
}
DEFAULT_PERCENTILES = (0.5, 99.5)


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise :class:`InputError` if ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = ~np.isfinite(array)
        count = int(bad.sum())
        if count:
            kind = "NaN" if np.isnan(array).any() else "infinite"
            raise InputError(
                f"Input {name} contains {count} {kind} value{'s' if count > 1 else ''}; replace them with a number "
                "(for example 0) before fusing."
            )


def looks_like_hounsfield(array: np.ndarray) -> bool:
    """True if the values look like CT Hounsfield units (air near -1000, so well below -100)."""
    return bool(array.size) and float(array.min()) < -100.0


def _window_range(window: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(window, str):
        try:
            level, width = CT_WINDOWS[window]
        except KeyError:
            raise InputError(f"Unknown CT window {window!r}; use one of {', '.join(CT_WINDOWS)} or (level, width).") from None
    else:
        level, width = (float(v) for v in window)
    if width <= 0:
        raise InputError(f"The CT window width must be positive, got {width}.")
    return level - width / 2, level + width / 2


def normalize(
    array: np.ndarray,
    modality: str = "MRI",
    *,
    window: str | tuple[float, float] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """``array`` mapped to float32 in ``[0, 1]`` by the rule of the module docstring.

    ``array`` is not modified.  ``window`` applies to CT only.
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    # float64 data may hold values beyond float32's range: keep it in float64 until it is in [0, 1]
    work = np.float64 if array.dtype == np.float64 else np.float32
    data = np.asarray(array, dtype=work)
    if modality.upper() == "CT" and (window is not None or looks_like_hounsfield(data)):
        low, high = _window_range(window or "fusion")
    else:
        low, high = (float(v) for v in np.percentile(data, percentiles))
        if not high > low:  # (nearly) constant: fall back to the full range, then to zeros
            low, high = float(data.min()), float(data.max())
    span = high - low  # may overflow to inf for the most extreme float64 ranges
    if not high > low or not np.isfinite(span):
        if np.isfinite(span):
            return np.zeros(data.shape, dtype=np.float32)
        data, low, span = data / 2, low / 2, high / 2 - low / 2
    out = (data - work(low)) / work(span)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
