"""Volumes larger than memory: fusing dask arrays slab by slab, and writing them slab by slab.

How it works
------------
:meth:`~.api.FusionEngine.fuse` (and so :func:`~.api.fuse`) sends a pair here
when either input is a dask or zarr array, bare or inside an
:class:`~.image.ImageData` (:func:`open_lazy` opens a ``.zarr`` folder or a
NIfTI file that way).  Then:

1. The inputs are checked as the eager path checks them (modalities, data
   type, matching dimensionality, NaN and infinite values, constant volumes),
   from one pass over each volume that also gives its minimum and maximum.
2. One intensity range per volume is decided by the rule of :mod:`.intensity`
   (:func:`~.intensity.intensity_range`); the percentiles it needs are computed
   *exactly* (the same numbers as ``numpy.percentile`` on the whole volume) by
   :func:`exact_percentiles`, in a few more passes of bounded memory.  This is
   the only work done before :meth:`~.api.FusionEngine.fuse` returns.
3. The result is a lazy float32 dask array with ``a``'s shape, chunked along
   the slicing ``axis`` in slabs (the inputs' own chunks along ``axis`` when they
   have several, else slabs of about :data:`SLAB_BYTES`) and whole along the
   other axes.  Each slab is mapped with the global ranges
   (:func:`~.intensity.apply_range`) and fused by the engine's
   :class:`~.runner.SliceRunner`, so the result equals the eager result on the
   same data.  ``progress`` and ``cancel`` act while it is computed.
4. :func:`write_lazy` (used by :func:`~.io.write_image` for lazy images) computes
   one slab at a time in this process and streams it to a ``.zarr`` folder or a
   NIfTI file (an uncompressed ``.nii`` written in place through its data
   offset, gzip-compressed afterwards for ``.nii.gz``), atomically, so peak
   memory stays at a few slabs whatever the volume size.

Limits (each refused with one sentence): grey volumes only (no RGB input, no
``colormap``); the two grids must already match, because resampling and
registration need whole volumes (resample ``b`` onto ``a``'s grid beforehand,
or pass numpy arrays to let the engine do it).  Chunk the inputs along the
slicing axis for the least reading; lazy ``.nii.gz`` inputs are decompressed
from the start for every slab, so prefer ``.nii`` or zarr for large inputs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FusionCancelled, InputError
from .image import ImageData, is_lazy_array
from .intensity import apply_range, as_float32, intensity_range, nonfinite_error
from .runner import CancelToken, ProgressCallback, SliceRunner, _is_cancelled

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da

    from .api import FusionEngine, FusionResult

__all__ = [
    "SLAB_BYTES",
    "LazyStatistics",
    "exact_percentiles",
    "fuse_lazy",
    "open_lazy",
    "order_statistics",
    "slab_chunks",
    "write_lazy",
]

#: Size of one input slab (as float32) when the inputs are not chunked along the slicing axis.
SLAB_BYTES = 16 << 20
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
def _as_lazy_image(x: Any, modality: str) -> ImageData:
    """``x`` as an ``ImageData`` holding a dask array (a numpy array becomes one chunk)."""
    import dask.array as da

    if not isinstance(x, ImageData):  # ImageData refuses what is neither 2-D nor 3-D
        x = ImageData.from_array(x, rgb=False, metadata={"modality": modality})
    if not is_lazy_array(x.array):
        x = x.with_array(da.from_array(x.array, chunks=-1))
    return x


def slab_chunks(x: da.Array, axis: int) -> tuple[tuple[int, ...], ...]:
    """Chunks for fusing along ``axis``: whole along the other axes, slabs along ``axis``.

    The slabs are ``x``'s own chunks along ``axis`` when it has several there,
    otherwise slabs of about :data:`SLAB_BYTES` as float32.
    """
    along = x.chunks[axis]
    if len(along) == 1:
        plane = int(np.prod([n for i, n in enumerate(x.shape) if i != axis]))
        slab = max(1, min(x.shape[axis], SLAB_BYTES // (4 * max(1, plane))))
        full, rest = divmod(x.shape[axis], slab)
        along = (slab,) * full + ((rest,) if rest else ())
    return tuple(along if i == axis else (n,) for i, n in enumerate(x.shape))


class _SlabFuser:
    """The function applied to each pair of slabs: map with the global ranges, fuse, count progress."""

    def __init__(
        self,
        engine: FusionEngine,
        code: Any,
        ranges: list[tuple[float, float]],
        axis: int,
        ndim: int,
        total: int,
        progress: ProgressCallback | None,
        cancel: CancelToken | Callable[[], bool] | None,
    ) -> None:
        self.engine, self.code, self.ranges, self.axis, self.ndim = engine, code, ranges, axis, ndim
        self.total, self.progress, self.cancel = total, progress, cancel
        self.done, self.lock, self.token = 0, threading.Lock(), uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:  # never hash the model
        return self.token

    def __call__(self, block_a: np.ndarray, block_b: np.ndarray) -> np.ndarray:
        from .api import _slices, _unslice

        if _is_cancelled(self.cancel):
            raise FusionCancelled("Fusion was cancelled; nothing was returned or written.")
        luma_a = _slices(apply_range(block_a, *self.ranges[0]), self.axis)
        luma_b = _slices(apply_range(block_b, *self.ranges[1]), self.axis)
        engine = self.engine
        runner = SliceRunner(engine.fuser, engine.device, engine.precision, engine.batch_size, compiled=engine.compiled)
        fused = runner.run(luma_a, luma_b, self.code, None, self.cancel)
        with self.lock:
            self.done += fused.shape[0]
            done = min(self.done, self.total)
        if self.progress is not None:
            self.progress(done, self.total)
        return _unslice(fused, self.ndim, self.axis)


def _value_passes(images: Sequence[tuple[str, ImageData]]) -> list[tuple[Any, Any]]:
    """One pass over each volume: refuse NaN/infinite and constant data; return ``(min, max)`` of each."""
    import dask
    import dask.array as da

    from .api import _constant_error

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
            raise _constant_error(name, low)
    return [(low, high) for low, high, _, _ in results]


def fuse_lazy(
    engine: FusionEngine,
    a: Any,
    b: Any,
    *,
    modalities: tuple[str, str],
    prompt: str | None = None,
    axis: int = 0,
    colormap: str | None = None,
    window: str | tuple[float, float] | None = None,
    register: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | Callable[[], bool] | None = None,
) -> FusionResult:
    """The lazy path of :meth:`~.api.FusionEngine.fuse` (see the module docstring); arguments as there.

    Returns
    -------
    FusionResult
        ``image.array`` is a lazy float32 dask array with ``a``'s shape and
        geometry; ``info`` records the settings, with ``"lazy": True`` and the slab
        sizes (``"seconds"`` covers only the checks and intensity ranges).
    """
    import dask.array as da

    from .api import _SAME_IMAGE, FusionResult, _check_kind, _check_modalities, _describe, _slice_axis
    from .geometry import _check_pair

    started = time.perf_counter()
    _check_modalities(modalities)
    img_a, img_b = _as_lazy_image(a, modalities[0]), _as_lazy_image(b, modalities[1])
    if img_a.rgb or img_b.rgb or colormap is not None:
        raise InputError(
            "Lazy (dask or zarr) inputs are fused as grey volumes only; give single-channel volumes without a "
            "colormap, or pass numpy arrays for colour fusion."
        )
    if register:
        raise InputError(
            "Registration needs whole volumes in memory, so it is not available for lazy (dask or zarr) inputs; "
            "register and resample b onto a's grid first, or pass numpy arrays."
        )
    for name, image in (("a", img_a), ("b", img_b)):
        _check_kind(name, image.array)
    _check_pair(img_a, img_b)
    if img_a.array is img_b.array or img_a.array.name == img_b.array.name:
        raise InputError(_SAME_IMAGE)
    if img_a.shape != img_b.shape or (img_a.has_geometry and img_b.has_geometry and not img_a.same_grid(img_b)):
        raise InputError(
            f"Lazy (dask or zarr) inputs must already share a grid, but a is {img_a.shape} and b is {img_b.shape}"
            f"{' with other spacing, origin or direction' if img_a.shape == img_b.shape else ''}; resample b onto "
            "a's grid first, or pass numpy arrays to let the engine resample."
        )
    ndim = img_a.ndim
    axis = _slice_axis(img_a.shape, axis)
    extremes = _value_passes([("a", img_a), ("b", img_b)])
    ranges = []
    for image, modality, (low, high) in zip((img_a, img_b), modalities, extremes):
        stats = LazyStatistics(image.array, low, high)
        ranges.append(intensity_range(stats, modality, window=window if modality == "CT" else None))
    prompt, code = engine.text(modalities, prompt)
    chunks = slab_chunks(img_a.array, axis)
    fuser = _SlabFuser(engine, code, ranges, axis, ndim, img_a.shape[axis] if ndim == 3 else 1, progress, cancel)
    fused = da.map_blocks(
        fuser,
        img_a.array.rechunk(chunks),
        img_b.array.rechunk(chunks),
        dtype=np.float32,
        meta=np.empty((0,) * ndim, dtype=np.float32),
        name=f"upfusion-fuse-{fuser.token}",
    )
    info = engine.provenance(
        modalities,
        prompt,
        batch_size=engine.batch_size,
        axis=axis,
        colormap=None,
        window=window,
        registered=False,
        color_output=False,
        compiled=engine.compiled is not None,
        inputs=[_describe(img_a), _describe(img_b)],
        lazy=True,
        slab_slices=list(chunks[axis]) if ndim == 3 else [1],
        intensity_ranges=[list(r) for r in ranges],
        seconds=round(time.perf_counter() - started, 3),
    )
    result = dataclasses.replace(img_a.with_array(fused, rgb=False), metadata={"upfusion": info})
    return FusionResult(result, info, fused)  # grey only: the fused array is its own luma


# ---------------------------------------------------------------------- writing
def _blocks(x: da.Array):
    """``(starts, block)`` of each chunk of ``x``, computed one after the other in this process (threads)."""
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in x.chunks]
    for index in np.ndindex(*x.numblocks):
        starts = tuple(int(offsets[d][i]) for d, i in enumerate(index))
        yield starts, np.asarray(x.blocks[index].compute(scheduler="threads"))


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_zarr(image: ImageData, target: Path) -> None:
    import zarr

    from .io import _stored_dtype

    x = image.array
    dtype = _stored_dtype(np.empty(0, dtype=x.dtype)).dtype
    z = zarr.create_array(str(target), shape=x.shape, chunks=tuple(max(c) for c in x.chunks), dtype=dtype)
    z.attrs.update(
        _json_safe(
            {
                "upfusion_image": {
                    "spacing": image.spacing,
                    "origin": image.origin,
                    "direction": image.direction.tolist(),
                    "has_geometry": image.has_geometry,
                    "rgb": image.rgb,
                },
                **({"upfusion": image.metadata["upfusion"]} if "upfusion" in image.metadata else {}),
            }
        )
    )
    for starts, block in _blocks(x):
        z[tuple(slice(s, s + n) for s, n in zip(starts, block.shape))] = _stored_dtype(block)


def _write_region(handle, offset: int, shape: tuple[int, ...], starts: tuple[int, ...], block: np.ndarray) -> None:
    """Write ``block`` at index ``starts`` of a C-ordered ``shape`` array stored from byte ``offset`` of ``handle``.

    One write per contiguous run: a single one for a slab along axis 0, one per
    row segment for slabs along the last axis.
    """
    block = np.ascontiguousarray(block)
    t = len(shape) - 1  # the runs span axes t.. (whole along the axes after t)
    while t > 0 and block.shape[t] == shape[t]:
        t -= 1
    strides = [int(np.prod(shape[d + 1 :])) for d in range(len(shape))]  # in elements
    base = sum(s * stride for s, stride in zip(starts, strides))
    for lead in np.ndindex(*block.shape[:t]):
        handle.seek(offset + (base + sum(i * stride for i, stride in zip(lead, strides))) * block.itemsize)
        handle.write(memoryview(block[lead]).cast("B"))


def _write_nifti_streamed(image: ImageData, target: Path) -> None:
    """NIfTI written by :func:`~.io._write_nifti` with a placeholder (the eager header), then filled in."""
    import nibabel as nib

    from .io import _stored_dtype, _write_nifti

    x = image.array
    dtype = _stored_dtype(np.empty(0, dtype=x.dtype)).dtype
    placeholder = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=x.shape, strides=(0,) * x.ndim)
    compressed = target.name.lower().endswith(".gz")
    raw = target.with_name(target.name[:-3]) if compressed else target  # uncompressed, beside the target
    try:
        _write_nifti(image.with_array(placeholder), raw)
        written = nib.load(str(raw), mmap=False)
        offset, disk = int(written.dataobj.offset), written.header.get_data_dtype()
        shape = x.shape if x.ndim == 3 else (1,) + x.shape
        with open(raw, "r+b") as handle:
            for starts, block in _blocks(x):
                if x.ndim == 2:
                    starts, block = (0,) + starts, block[None]
                _write_region(handle, offset, shape, starts, _stored_dtype(block).astype(disk, copy=False))
        if compressed:
            with open(raw, "rb") as source, gzip.open(target, "wb", compresslevel=1) as sink:
                shutil.copyfileobj(source, sink, 16 << 20)
    finally:
        if compressed:
            raw.unlink(missing_ok=True)


def write_lazy(image: ImageData, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write an image whose array is lazy, computing it slab by slab (see the module docstring).

    Parameters
    ----------
    image
        An :class:`~.image.ImageData` holding a dask array (such as the result of a lazy fusion).
    path
        ``.zarr`` (a zarr folder with the geometry and provenance in its attributes),
        ``.nii`` or ``.nii.gz`` (streamed); any other format of :func:`~.io.write_image`
        is computed whole first.
    overwrite
        Replace an existing file or folder.

    Returns
    -------
    pathlib.Path
        The path written.  Like :func:`~.io.write_image`, the write is atomic:
        an interrupted write leaves only a ``.<name>.<random>.partial`` folder.
    """
    from .io import _extension, staged_output, write_image

    path = Path(path).expanduser().absolute()
    if path.name.lower().endswith(".zarr"):
        writer = _write_zarr
    elif _extension(path) in (".nii", ".nii.gz"):
        if image.rgb:
            raise InputError(
                f"NIfTI cannot hold this colour image; save {path.name} as .mha, .nrrd, .png or .tif instead."
            )
        writer = _write_nifti_streamed
    else:
        computed = np.asarray(image.array.compute(scheduler="threads"))
        return write_image(image.with_array(computed), path, overwrite=overwrite)
    with staged_output(path, overwrite=overwrite) as staging:
        writer(image, staging / path.name)
    return path


# ---------------------------------------------------------------------- reading
def open_lazy(path: str | Path, modality: str | None = None) -> ImageData:
    """Open a ``.zarr`` folder or a NIfTI file as an :class:`~.image.ImageData` holding a dask array.

    Nothing is read but the header (NIfTI) or the attributes (zarr).  A zarr
    folder written by :func:`write_lazy` keeps its geometry; any other zarr array
    gets unit geometry.  NIfTI is chunked in slabs along array axis 0 (NIfTI's k).

    Parameters
    ----------
    path
        A ``.zarr`` folder holding one array, or a ``.nii`` / ``.nii.gz`` grey volume.
    modality
        Stored as ``metadata["modality"]`` when given.

    Returns
    -------
    ImageData
    """
    import dask.array as da

    from .io import _read_nifti

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path and try again.")
    extra = {"path": str(path), **({"modality": modality} if modality else {})}
    if path.name.lower().endswith(".zarr"):
        import zarr

        try:
            z = zarr.open_array(str(path), mode="r")
        except Exception as error:
            raise InputError(f"{path} is not a readable zarr array; give the folder of a single zarr array.") from error
        geometry = dict(z.attrs.get("upfusion_image", {}))
        x = da.from_zarr(z)
        return ImageData(
            x,
            geometry.get("spacing"),
            geometry.get("origin"),
            geometry.get("direction"),
            rgb=bool(geometry.get("rgb", False)),
            has_geometry=geometry.get("has_geometry", False) if geometry else False,
            metadata={"format": "zarr", **extra},
        )
    try:
        image = _read_nifti(path, lazy=True)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{path} is not a readable NIfTI image; check that the file is complete.") from error
    image.metadata.update(format="NIfTI", **extra)
    return image
