"""Volumes larger than memory: fusing dask arrays slab by slab.

How it works
------------
:meth:`~.api.FusionEngine.fuse` (and so :func:`~.api.fuse`) takes this path
when either input is a dask or zarr array, bare or inside an
:class:`~.image.ImageData` (:func:`~.io.open_lazy` opens a ``.zarr`` folder or a
NIfTI file that way).  Then:

1. The inputs are checked as the eager path checks them (:mod:`.validate`:
   modalities, data type, matching dimensionality, and here matching grids), and
   one pass over each volume (:func:`value_passes`) refuses NaN, infinite and
   constant volumes and gives its minimum and maximum.
2. One intensity range per volume is decided by the rule of :mod:`.intensity`
   (:func:`~.intensity.intensity_range`); the percentiles it needs are computed
   *exactly* (the same numbers as ``numpy.percentile`` on the whole volume) by
   :func:`exact_percentiles`, in a few more passes of bounded memory
   (:func:`lazy_ranges`).  This is the only work done before
   :meth:`~.api.FusionEngine.fuse` returns.
3. The result is a lazy float32 dask array with ``a``'s shape, chunked along
   the slicing ``axis`` in slabs (:func:`~.slicing.slab_chunks`: the inputs' own
   chunks along ``axis`` when they have several, else slabs of about
   :data:`~.slicing.SLAB_BYTES`) and whole along the other axes
   (:func:`fuse_slabs`).  Each slab is mapped with the global ranges
   (:func:`~.intensity.apply_range`) and fused by one
   :class:`~.runner.SliceRunner` for the whole volume (:class:`SlabFuser`), so
   the result equals the eager result on the same data.  ``progress`` and
   ``cancel`` act while it is computed.
4. :func:`~.io.write_image` writes such a result one slab at a time, streamed to
   a ``.zarr`` folder or a NIfTI file, so peak memory stays at a few slabs
   whatever the volume size.

Limits (each refused with one sentence): grey volumes only (no RGB input, no
``colormap``); the two grids must already match, because resampling and
registration need whole volumes (resample ``b`` onto ``a``'s grid beforehand,
or pass numpy arrays to let the engine do it).  Chunk the inputs along the
slicing axis for the least reading; lazy ``.nii.gz`` inputs are decompressed
from the start for every slab, so prefer ``.nii`` or zarr for large inputs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FusionCancelled
from .image import ImageData, is_lazy_array
from .intensity import apply_range, as_float32, intensity_range
from .runner import CANCELLED, CancelToken, ProgressCallback, SliceRunner, is_cancelled
from .slicing import from_slices, slab_chunks, to_slices
from .validate import constant_error, nonfinite_error

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da

__all__ = [
    "LazyStatistics",
    "SlabFuser",
    "as_lazy_image",
    "exact_percentiles",
    "fuse_slabs",
    "lazy_ranges",
    "order_statistics",
    "value_passes",
]

_BINS = 4096  # histogram bins per refinement pass of exact_percentiles
_GATHER_LIMIT = 1 << 21  # values gathered and sorted in memory at the last pass (8 MB of float32)
_PIECE = 1 << 20  # values scanned at a time within a chunk


# ---------------------------------------------------------------------- exact percentiles
def _scan_block(block: np.ndarray, tasks: list[tuple[np.float32, np.float32, bool, np.ndarray | None]]) -> list:
    """For each interval ``(lo, hi, closed, edges)``: its values in ``block`` (``edges`` None) or their histogram.

    The block is scanned in pieces of :data:`_PIECE` values, so the temporary
    arrays stay small whatever the chunk size.
    """
    flat = np.asarray(block).ravel()
    gathered: list[list[np.ndarray]] = [[] for _ in tasks]
    counts = [None if edges is None else np.zeros(edges.size - 1, np.int64) for *_, edges in tasks]
    low = [np.float32(np.inf)] * len(tasks)
    high = [np.float32(-np.inf)] * len(tasks)
    for start in range(0, flat.size, _PIECE):
        values = as_float32(flat[start : start + _PIECE])
        for t, (lo, hi, closed, edges) in enumerate(tasks):
            inside = values[(values >= lo) & ((values <= hi) if closed else (values < hi))]
            if edges is None:
                gathered[t].append(inside)
            elif inside.size:
                bins = np.minimum(np.searchsorted(edges, inside, side="right") - 1, edges.size - 2)
                counts[t] += np.bincount(bins, minlength=edges.size - 1)
                low[t], high[t] = min(low[t], inside.min()), max(high[t], inside.max())
    return [
        np.concatenate(gathered[t]) if edges is None else (counts[t], low[t], high[t])
        for t, (*_, edges) in enumerate(tasks)
    ]


def order_statistics(x: da.Array, ranks: Sequence[int], minimum: float, maximum: float) -> dict[int, np.float32]:
    """The exact ``rank``-th smallest values (0-based) of ``x`` cast to float32, in a few bounded-memory passes.

    Each pass reads every chunk once and keeps, per rank, the value interval
    known to hold it: a 4096-bin histogram of that interval narrows it, until
    either all its values are equal or few enough (a few million) to be sorted.

    Parameters
    ----------
    x
        A finite, non-empty dask array.
    ranks
        Positions in the sorted values, ``0 <= rank < x.size``.
    minimum, maximum
        ``x``'s smallest and largest values.

    Returns
    -------
    dict
        ``rank -> value`` (float32).
    """
    import dask

    blocks = x.to_delayed().ravel()  # cast to float32 piece by piece in _scan_block
    # rank -> [lo, hi, closed, values below lo, values inside]
    state = {r: [np.float32(minimum), np.float32(maximum), True, 0, int(x.size)] for r in ranks}
    found: dict[int, np.float32] = {}
    for _ in range(64):  # each pass shrinks an interval 4096-fold; float32 needs far fewer passes
        groups: dict[tuple, list[int]] = {}
        for r, (lo, hi, closed, _, _) in state.items():
            if r in found:
                continue
            if lo == hi:
                found[r] = lo
            else:
                groups.setdefault((lo, hi, closed), []).append(r)
        if not groups:
            return found
        tasks = []
        for (lo, hi, closed), members in groups.items():
            gather = state[members[0]][4] <= _GATHER_LIMIT
            edges = None if gather else np.unique(np.linspace(lo, hi, _BINS + 1, dtype=np.float64).astype(np.float32))
            tasks.append((lo, hi, closed, edges))
        partials = dask.compute(*[dask.delayed(_scan_block)(block, tasks) for block in blocks])
        for t, ((lo, hi, closed), members) in enumerate(groups.items()):
            edges = tasks[t][3]
            if edges is None:
                values = np.sort(np.concatenate([p[t] for p in partials]))
                for r in members:
                    found[r] = values[r - state[r][3]]
                continue
            counts = np.sum([p[t][0] for p in partials], axis=0)
            low = min(p[t][1] for p in partials)
            high = max(p[t][2] for p in partials)
            if low == high:
                for r in members:
                    found[r] = np.float32(low)
                continue
            cumulative = np.cumsum(counts)
            for r in members:
                below = state[r][3]
                j = int(np.searchsorted(cumulative, r - below, side="right"))
                last = j == edges.size - 2
                state[r] = [
                    edges[j],
                    edges[j + 1],
                    closed and last,
                    below + (int(cumulative[j - 1]) if j else 0),
                    int(counts[j]),
                ]
    raise RuntimeError("exact percentiles did not converge")  # pragma: no cover - cannot happen for float32


def exact_percentiles(
    x: da.Array, q: Sequence[float], minimum: float | None = None, maximum: float | None = None
) -> tuple[float, ...]:
    """``numpy.percentile(x.astype(float32), q)`` (linear interpolation) of a dask array, bit for bit.

    Unlike ``dask.array.percentile`` (which merges per-chunk estimates), the
    order statistics are found exactly (:func:`order_statistics`) and combined
    with numpy's own interpolation formula.

    Parameters
    ----------
    x
        A finite, non-empty dask array.
    q
        Percentiles in ``[0, 100]``.
    minimum, maximum
        ``x``'s extremes when already known (else computed, one more pass).

    Returns
    -------
    tuple of float
    """
    import dask

    n = int(x.size)
    if minimum is None or maximum is None:
        minimum, maximum = (float(v) for v in dask.compute(x.min(), x.max()))
    # numpy.percentile, method "linear": virtual index (n - 1) * q, neighbours floor and floor + 1 (clamped).
    quantiles = np.true_divide(q, 100)
    virtual = (n - 1) * quantiles
    previous = np.floor(virtual).astype(np.intp)
    following = previous + 1
    above = virtual >= n - 1
    previous[above], following[above] = -1, -1
    gamma = np.asanyarray(virtual - previous, dtype=virtual.dtype)
    previous, following = previous % n, following % n
    values = order_statistics(x, sorted({*previous.tolist(), *following.tolist()}), minimum, maximum)
    low = np.array([values[i] for i in previous], dtype=np.float32)
    high = np.array([values[i] for i in following], dtype=np.float32)
    # numpy's _lerp, operation for operation
    diff = high - low
    lerp = np.add(low, diff * gamma)
    np.subtract(high, diff * (1 - gamma), out=lerp, where=gamma >= 0.5, casting="unsafe", dtype=type(lerp.dtype))
    return tuple(float(v) for v in lerp)


class LazyStatistics:
    """:class:`~.intensity.VolumeStatistics` of a dask array, for :func:`~.intensity.intensity_range`.

    ``minimum`` and ``maximum`` are those of the original values (from the
    validation pass); they are reported cast to float32, as the eager rule sees
    them.  Percentiles are computed only when asked, by :func:`exact_percentiles`.
    """

    def __init__(self, x: da.Array, minimum: Any, maximum: Any) -> None:
        self.x, self.dtype = x, x.dtype
        self._min, self._max = (float(v) for v in as_float32(np.array([minimum, maximum], dtype=np.float64)))

    def minimum(self) -> float:
        return self._min

    def maximum(self) -> float:
        return self._max

    def percentiles(self, q: tuple[float, float]) -> tuple[float, float]:
        low, high = exact_percentiles(self.x, q, self._min, self._max)
        return low, high


# ---------------------------------------------------------------------- fusion
def as_lazy_image(x: Any, modality: str) -> ImageData:
    """``x`` as an ``ImageData`` holding a dask array (a numpy array becomes one chunk)."""
    import dask.array as da

    if not isinstance(x, ImageData):  # ImageData refuses what is neither 2-D nor 3-D
        x = ImageData.from_array(x, rgb=False, metadata={"modality": modality})
    if not is_lazy_array(x.array):
        x = x.with_array(da.from_array(x.array, chunks=-1))
    return x


def value_passes(images: Sequence[tuple[str, ImageData]]) -> list[tuple[Any, Any]]:
    """One pass over each volume: refuse NaN/infinite and constant data; return ``(min, max)`` of each."""
    import dask
    import dask.array as da

    parts = []
    for _, image in images:
        x = image.array
        floating = x.dtype.kind == "f"
        nonfinite = (~da.isfinite(x)).sum() if floating else 0
        parts.append([x.min(), x.max(), nonfinite, da.isnan(x).any() if floating else False])
    results = dask.compute(*parts)
    for (name, _), (low, high, nonfinite, has_nan) in zip(images, results):
        if int(nonfinite):
            raise nonfinite_error(name, int(nonfinite), bool(has_nan))
        if float(low) == float(high):
            raise constant_error(name, low)
    return [(low, high) for low, high, _, _ in results]


def lazy_ranges(
    images: Sequence[ImageData], modalities: Sequence[str], window: str | tuple[float, float] | None
) -> list[tuple[float, float]]:
    """The intensity range of each volume by the rule of :mod:`.intensity`, from :func:`value_passes` and
    :func:`exact_percentiles` (refusing NaN, infinite and constant volumes on the way)."""
    extremes = value_passes([(name, image) for name, image in zip("ab", images)])
    ranges = []
    for image, modality, (low, high) in zip(images, modalities, extremes):
        stats = LazyStatistics(image.array, low, high)
        ranges.append(intensity_range(stats, modality, window=window if modality == "CT" else None))
    return ranges


class SlabFuser:
    """The function applied to each pair of slabs: map with the global ranges, fuse, count progress.

    Every slab is fused by the same :class:`~.runner.SliceRunner`, one slab at a time,
    so that its state holds for the whole volume: a ``torch.compile`` that fails is
    dropped after its first failure, not tried again on every slab (``on_compile_error``
    is then called once, so that the engine stays eager too).
    """

    def __init__(
        self,
        runner: SliceRunner,
        code: Any,
        ranges: list[tuple[float, float]],
        axis: int,
        ndim: int,
        total: int,
        progress: ProgressCallback | None,
        cancel: CancelToken | Callable[[], bool] | None,
        on_compile_error: Callable[[], None] | None = None,
    ) -> None:
        self.runner, self.code, self.ranges, self.axis, self.ndim = runner, code, ranges, axis, ndim
        self.total, self.progress, self.cancel, self.on_compile_error = total, progress, cancel, on_compile_error
        self.done, self.lock, self.token = 0, threading.Lock(), uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:  # never hash the model
        return self.token

    def __call__(self, block_a: np.ndarray, block_b: np.ndarray) -> np.ndarray:
        if is_cancelled(self.cancel):
            raise FusionCancelled(CANCELLED)
        luma_a = to_slices(apply_range(block_a, *self.ranges[0]), self.axis)
        luma_b = to_slices(apply_range(block_b, *self.ranges[1]), self.axis)
        with self.lock:
            had_compiled = self.runner.compiled is not None
            fused = self.runner.run(luma_a, luma_b, self.code, None, self.cancel)
            if had_compiled and self.runner.compile_error and self.on_compile_error is not None:
                self.on_compile_error()
            self.done += fused.shape[0]
            done = min(self.done, self.total)
        if self.progress is not None:
            self.progress(done, self.total)
        return from_slices(fused, self.ndim, self.axis)


def fuse_slabs(a: ImageData, b: ImageData, fuser: SlabFuser, axis: int) -> da.Array:
    """The lazy fused array: ``fuser`` mapped over slabs of ``a`` and ``b`` along ``axis`` (see :func:`slab_chunks`)."""
    import dask.array as da

    chunks = slab_chunks(a.array, axis)
    return da.map_blocks(
        fuser,
        a.array.rechunk(chunks),
        b.array.rechunk(chunks),
        dtype=np.float32,
        meta=np.empty((0,) * a.ndim, dtype=np.float32),
        name=f"upfusion-fuse-{fuser.token}",
    )
