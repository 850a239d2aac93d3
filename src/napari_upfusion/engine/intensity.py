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
values are refused before, with the other input checks (:mod:`.validate`).

The rule is split in two so that a volume too large for memory can be mapped
piece by piece with one range for the whole volume: :func:`intensity_range`
decides ``(low, high)`` from a few statistics of the volume (its data type,
minimum, maximum and percentiles, asked of a :class:`VolumeStatistics`), and
:func:`apply_range` maps any part of it.  :func:`normalize` is the two in a row
on an in-memory array; :mod:`.lazy` supplies statistics of a dask array.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import InputError

__all__ = [
    "CT_WINDOWS",
    "DEFAULT_PERCENTILES",
    "VolumeStatistics",
    "apply_range",
    "as_float32",
    "check_percentiles",
    "intensity_range",
    "looks_like_hounsfield",
    "normalize",
    "window_range",
]

#: Named CT windows as ``(level, width)`` in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "fusion": (700.0, 1600.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft-tissue": (50.0, 400.0),
}
DEFAULT_PERCENTILES = (0.5, 99.5)


def looks_like_hounsfield(minimum: float) -> bool:
    """True if a CT whose smallest value is ``minimum`` is in Hounsfield units (air near -1000, so well below -100)."""
    return minimum < -100.0


def window_range(window: str | tuple[float, float]) -> tuple[float, float]:
    """The ``(low, high)`` HU of a CT window given by name or as ``(level, width)``; anything else (an unknown
    name, NaN or infinite numbers, a width that is not positive) is refused in one sentence."""
    if isinstance(window, str):
        try:
            level, width = CT_WINDOWS[window]
        except KeyError:
            raise InputError(f"Unknown CT window {window!r}; use one of {', '.join(CT_WINDOWS)} or (level, width).") from None
    else:
        try:
            level, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputError(f"A CT window is a name or two numbers (level, width) in HU, not {window!r}.") from None
    if not (np.isfinite(level) and np.isfinite(width) and 0 < width and abs(level) + width < 1e7):
        raise InputError(
            f"The CT window needs a finite level and a positive finite width in HU (within +-1e7), got level {level} "
            f"and width {width}."
        )
    return level - width / 2, level + width / 2


def check_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` percentiles checked: finite numbers with ``0 <= low < high <= 100``."""
    try:
        low, high = (float(v) for v in percentiles)
    except (TypeError, ValueError):
        raise InputError(f"percentiles are two numbers (low, high), not {percentiles!r}.") from None
    if not (0 <= low < high <= 100):
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got ({low}, {high}).")
    return low, high


class VolumeStatistics(Protocol):
    """What :func:`intensity_range` needs to know about a whole volume, asked only when the rule needs it.

    Values are those of the volume cast to float32 (as :func:`normalize` sees them).
    """

    @property
    def dtype(self) -> np.dtype:
        """The volume's data type before any cast."""
        ...

    def minimum(self) -> float:
        """The smallest value."""
        ...

    def maximum(self) -> float:
        """The largest value."""
        ...

    def percentiles(self, q: tuple[float, float]) -> tuple[float, float]:
        """``numpy.percentile(volume.astype(float32), q)`` (linear interpolation), exactly."""
        ...


class _ArrayStatistics:
    """:class:`VolumeStatistics` of an in-memory array, already cast to float32."""

    def __init__(self, data: np.ndarray, dtype: np.dtype) -> None:
        self.data, self.dtype = data, dtype

    def minimum(self) -> float:
        return float(self.data.min())

    def maximum(self) -> float:
        return float(self.data.max())

    def percentiles(self, q: tuple[float, float]) -> tuple[float, float]:
        low, high = np.percentile(self.data, q)
        return float(low), float(high)


def intensity_range(
    volume: np.ndarray | VolumeStatistics,
    modality: str = "MRI",
    *,
    window: str | tuple[float, float] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> tuple[float, float]:
    """The ``(low, high)`` values that the rule of the module docstring maps to 0 and 1.

    Parameters
    ----------
    volume
        The whole image or volume, or statistics of it (see :class:`VolumeStatistics`).
    modality, window, percentiles
        As for :func:`normalize`.

    Returns
    -------
    tuple of float
        ``high <= low`` means "constant": :func:`apply_range` then gives zeros.
    """
    if isinstance(volume, np.ndarray):
        if volume.dtype == np.uint8:
            return 0.0, 255.0
        volume = _ArrayStatistics(as_float32(volume), volume.dtype)
    if volume.dtype == np.uint8:
        return 0.0, 255.0
    if modality.upper() == "CT" and (window is not None or looks_like_hounsfield(volume.minimum())):
        return window_range(window or "fusion")
    low, high = volume.percentiles(check_percentiles(percentiles))
    if high <= low:  # (nearly) constant: fall back to the full range, then to zeros
        low, high = volume.minimum(), volume.maximum()
    return low, high


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as float32; float64 values beyond float32's range saturate instead of becoming infinite."""
    array = np.asarray(array)
    if array.dtype == np.float64 and array.size and max(-float(array.min()), float(array.max())) > _FLOAT32_MAX:
        array = np.clip(array, -_FLOAT32_MAX, _FLOAT32_MAX)
    return np.asarray(array, dtype=np.float32)


def apply_range(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """``array`` (any part of a volume) mapped to float32 with ``low -> 0`` and ``high -> 1``, clipped.

    ``array`` is not modified; ``high <= low`` gives zeros.
    """
    data = as_float32(array)
    if not high > low:
        return np.zeros(data.shape, dtype=np.float32)
    low, high = np.float32(low), np.float32(high)
    with np.errstate(over="ignore"):
        overflows = not np.isfinite(high - low)
    if overflows:  # the widest float32 ranges overflow: halve everything first
        data, low, high = data / 2, low / 2, high / 2
    out = np.subtract(data, low)
    np.divide(out, high - low, out=out)  # in place: one temporary, not two
    return np.clip(out, 0.0, 1.0, out=out)


def normalize(
    array: np.ndarray,
    modality: str = "MRI",
    *,
    window: str | tuple[float, float] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """``array`` mapped to float32 in ``[0, 1]`` by the rule of the module docstring.

    ``array`` is not modified.  ``window`` applies to CT only.  The same as
    ``apply_range(array, *intensity_range(array, ...))``.
    """
    array = np.asarray(array)
    return apply_range(array, *intensity_range(array, modality, window=window, percentiles=percentiles))
