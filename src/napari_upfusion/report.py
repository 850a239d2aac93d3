"""Pictures and tables of a fusion result: a slice montage and per-volume metrics.

Used by ``upfusion demo`` and the model card; sits beside the engine (numpy
only, no napari or Qt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .engine import color as colour
from .engine.intensity import normalize
from .metrics import METRIC_NAMES, evaluate, round_grey

__all__ = ["fusion_figures", "montage", "pick_slices", "volume_metrics"]


def pick_slices(volume: np.ndarray, count: int = 3) -> list[int]:
    """``count`` indices along axis 0 spread over the slices that hold most of the content."""
    energy = volume.reshape(volume.shape[0], -1).astype(np.float64).sum(axis=1)
    inside = np.flatnonzero(energy > 0.25 * energy.max()) if energy.max() > 0 else np.arange(volume.shape[0])
    return [int(i) for i in np.linspace(inside[0], inside[-1], count + 2)[1:-1].round()]


def _as_rgb8(panel: np.ndarray, colormap: str | None) -> np.ndarray:
    panel = np.clip(np.asarray(panel, dtype=np.float32), 0, 1)
    if panel.ndim == 2:
        panel = colour.apply_colormap(panel, colormap) if colormap else np.repeat(panel[..., None], 3, axis=-1)
    return np.round(panel[..., :3] * 255).astype(np.uint8)


def montage(rows: Sequence[Sequence[np.ndarray]], colormaps: Sequence[str | None] | None = None, gap: int = 4) -> np.ndarray:
    """An RGB uint8 grid of 2-D panels in ``[0, 1]`` (grey or RGB): ``rows[i][j]`` is row i, column j.

    ``colormaps[j]`` colours the grey panels of column ``j`` (``None``: grey).
    """
    colormaps = list(colormaps or [None] * len(rows[0]))
    height = max(p.shape[0] for row in rows for p in row)
    width = max(p.shape[1] for row in rows for p in row)
    grid = np.zeros((len(rows) * (height + gap) + gap, len(rows[0]) * (width + gap) + gap, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            image = _as_rgb8(panel, colormaps[j])
            top, left = gap + i * (height + gap), gap + j * (width + gap)
            grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


def volume_metrics(
    fused: Mapping[str, np.ndarray], a: np.ndarray, b: np.ndarray, slices: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Mean metrics over ``slices`` (axis 0) of each fused volume, all on the 0..255 grey scale of ``[0, 1]`` data."""
    def grey(x: np.ndarray) -> np.ndarray:
        return round_grey(np.clip(x, 0, 1).astype(np.float64) * 255)

    out = {}
    for name, volume in fused.items():
        scores = [evaluate(grey(volume[i]), grey(a[i]), grey(b[i])) for i in slices]
        out[name] = {m: float(np.mean([s[m] for s in scores])) for m in METRIC_NAMES}
    return out


def fusion_figures(
    a: np.ndarray, b: np.ndarray, modalities: tuple[str, str], fused: Mapping[str, np.ndarray], shown: Sequence[str]
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """The montage and metric table of fused volumes of ``a`` and ``b`` (volumes ``(z, y, x)``, z up).

    ``fused`` maps fuser names to fused luma volumes in ``[0, 1]``. The montage shows three axial
    slices (rows, head up) of ``a``, ``b`` (hot) and each fuser of ``shown``; the metrics are means over
    the central half of the axial slices of every fuser, on the inputs normalised by the engine's rule.
    """
    a, b = normalize(a, modalities[0]), normalize(b, modalities[1])
    rows = [[a[i], b[i], *(fused[name][i] for name in shown)] for i in pick_slices(a)]
    picture = montage([[np.flipud(p) for p in row] for row in rows], colormaps=[None, "hot", *[None] * len(shown)])
    scores = volume_metrics(fused, a, b, range(a.shape[0] // 4, 3 * a.shape[0] // 4))
    return picture, scores
