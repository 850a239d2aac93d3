"""Larger than memory: dask inputs fused slab by slab must give the eager result, in bounded pieces."""

from __future__ import annotations

import threading
from pathlib import Path

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import torch
from dask.callbacks import Callback

import napari_upfusion as nu
from napari_upfusion.engine import intensity, lazy
from napari_upfusion.engine.io import open_lazy
from napari_upfusion.engine.lazy import exact_percentiles
from napari_upfusion.errors import FusionCancelled, InputError

RNG = np.random.default_rng(7)
AFFINE = np.array([[0.9, 0.1, 0.0, 10.0], [0.0, 1.2, 0.2, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])


def pair(shape=(20, 40, 36)) -> tuple[nu.ImageData, nu.ImageData]:
    """An int16 MRI-like and a float PET-like volume on one oblique grid."""
    a = RNG.integers(0, 3000, shape).astype(np.int16)
    b = (RNG.random(shape) ** 3 * 5).astype(np.float32)
    return nu.ImageData.from_affine(a, AFFINE), nu.ImageData.from_affine(b, AFFINE)


def as_lazy(image: nu.ImageData, chunks) -> nu.ImageData:
    """``image`` as a dask array; an integer ``chunks`` means slabs of that many along axis 0."""
    chunks = (chunks, -1, -1) if isinstance(chunks, int) else chunks
    return image.with_array(da.from_array(np.asarray(image.array), chunks=chunks))


# ---------------------------------------------------------------------- intensity split
@pytest.mark.parametrize(
    "array, modality, window, expected",
    [
        (np.array([[0, 51], [255, 102]], np.uint8), "MRI", None, lambda x: x / np.float32(255)),
        (np.array([[-1000, 0], [700, 2000]], np.int16), "CT", None, lambda x: np.clip((x + 100) / 1600, 0, 1)),
        (np.array([[-1000, 0], [40, 2000]], np.int16), "CT", "brain", lambda x: np.clip(x / 80, 0, 1)),
    ],
)
def test_normalize_keeps_its_rule(array, modality, window, expected):
    out = intensity.normalize(array, modality, window=window)
    np.testing.assert_allclose(out, expected(array.astype(np.float32)), atol=1e-6)
    assert out.dtype == np.float32


def test_normalize_is_range_then_apply():
    data = RNG.normal(size=(6, 30, 30)) * 100
    low, high = np.percentile(data.astype(np.float32), (0.5, 99.5))
    assert intensity.intensity_range(data, "PET") == (float(low), float(high))
    np.testing.assert_array_equal(
        intensity.normalize(data, "PET"), intensity.apply_range(data, *intensity.intensity_range(data, "PET"))
    )
    spike = np.r_[np.zeros(999), 4.0]  # percentiles equal: falls back to min and max
    assert intensity.intensity_range(spike, "MRI") == (0.0, 4.0)
    assert not intensity.apply_range(np.ones(5), 1.0, 1.0).any()


# ---------------------------------------------------------------------- exact percentiles
@pytest.mark.parametrize(
    "array",
    [
        RNG.normal(size=(7, 33, 41)).astype(np.float32),
        RNG.integers(-1024, 3000, (9, 50, 50)).astype(np.int16),
        np.r_[np.zeros(20000), RNG.random(7)],  # heavy ties
        np.array([3.5]),
        np.array([2.0, -1.0]),
    ],
    ids=["normal", "int16", "ties", "one", "two"],
)
@pytest.mark.parametrize("gather_limit, piece", [(lazy._GATHER_LIMIT, lazy._PIECE), (100, 300)],
                         ids=["sort", "histogram"])
def test_exact_percentiles_equal_numpy(array, gather_limit, piece, monkeypatch):
    monkeypatch.setattr(lazy, "_GATHER_LIMIT", gather_limit)
    monkeypatch.setattr(lazy, "_PIECE", piece)
    x = da.from_array(array.ravel(), chunks=997)
    for q in [(0.5, 99.5), (0.0, 100.0), (63.0, 12.5)]:
        expected = tuple(float(v) for v in np.percentile(array.astype(np.float32), q))
        assert exact_percentiles(x, q) == expected


# ---------------------------------------------------------------------- lazy equals eager
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_lazy_fusion_equals_eager(axis):
    a, b = pair()
    eager = nu.fuse(a, b, model="average", device="cpu", axis=axis)
    chunks = [-1, -1, -1]
    chunks[axis] = 7
    calls = []
    result = nu.fuse(
        as_lazy(a, tuple(chunks)), as_lazy(b, 5), model="average", device="cpu", axis=axis,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert isinstance(result.array, da.Array) and not calls  # nothing fused yet
    assert result.array.chunks[axis][:2] == (7, 7) and result.array.dtype == np.float32
    assert result.same_grid(eager) and result.metadata["upfusion"]["lazy"] is True
    np.testing.assert_array_equal(result.array.compute(), eager.array)
    assert calls[-1] == (a.shape[axis], a.shape[axis])


def test_lazy_float64_beyond_float32_saturates_like_eager():
    """Values beyond float32's range saturate in the ranges as in the eager path (they used to make NaN)."""
    a = RNG.random((8, 32, 32)) * 1e300
    b = RNG.random((8, 32, 32)).astype(np.float32)
    eager = nu.get_engine("average", device="cpu").fuse(a, b)
    result = nu.get_engine("average", device="cpu").fuse(da.from_array(a, chunks=(3, 32, 32)), b)
    fused = result.image.array.compute()
    assert np.isfinite(fused).all() and np.isfinite(result.info["intensity_ranges"]).all()
    np.testing.assert_array_equal(fused, eager.image.array)
    assert result.luma is result.image.array  # a lazy result is grey: its luma is the fused array


def test_lazy_fusion_of_bare_dask_arrays_with_the_small_model():
    a, b = pair((6, 32, 32))
    eager = nu.fuse(np.asarray(a.array), np.asarray(b.array), model="small", device="cpu")
    result = nu.fuse(da.from_array(np.asarray(a.array), chunks=(2, 32, 32)), np.asarray(b.array), model="small",
                     device="cpu")
    assert isinstance(result, da.Array)
    np.testing.assert_allclose(result.compute(), eager, atol=1e-5)  # batches differ, so float rounding may


def test_lazy_ct_window_matches_eager():
    mri = RNG.integers(0, 900, (10, 32, 32)).astype(np.int16)
    ct = RNG.integers(-1024, 2000, (10, 32, 32)).astype(np.int16)
    for window in (None, "bone"):
        eager = nu.fuse(mri, ct, modalities=("MRI", "CT"), window=window, model="average", device="cpu")
        lazy_mri = da.from_array(mri, chunks=(3, 32, 32))
        result = nu.fuse(lazy_mri, ct, modalities=("MRI", "CT"), window=window, model="average", device="cpu")
        np.testing.assert_array_equal(result.compute(), eager)


# ---------------------------------------------------------------------- writing and reading
@pytest.mark.parametrize("axis", [0, 2])
def test_lazy_writes_equal_eager_writes(tmp_path: Path, axis):
    a, b = pair()
    eager = nu.fuse(a, b, model="average", device="cpu", axis=axis)
    result = nu.fuse(as_lazy(a, {axis: 6}), as_lazy(b, -1), model="average", device="cpu", axis=axis)
    assert len(result.array.chunks[axis]) > 1
    nu.write_image(eager, tmp_path / "eager.nii")
    nu.write_image(result, tmp_path / "lazy.nii")
    assert (tmp_path / "lazy.nii").read_bytes() == (tmp_path / "eager.nii").read_bytes()
    nu.write_image(eager, tmp_path / "eager.nii.gz")
    nu.write_image(result, tmp_path / "lazy.nii.gz")
    written, expected = nib.load(tmp_path / "lazy.nii.gz"), nib.load(tmp_path / "eager.nii.gz")
    assert written.header.binaryblock == expected.header.binaryblock
    np.testing.assert_array_equal(written.get_fdata(), expected.get_fdata())
    nu.write_image(result, tmp_path / "lazy.zarr")
    back = open_lazy(tmp_path / "lazy.zarr")
    assert isinstance(back.array, da.Array) and back.same_grid(eager) and back.has_geometry
    np.testing.assert_array_equal(back.array.compute(), eager.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "eager.nii", "eager.nii.gz", "lazy.nii", "lazy.nii.gz", "lazy.zarr"
    ]  # no staging or uncompressed leftovers
    with pytest.raises(InputError, match="already exists"):
        nu.write_image(result, tmp_path / "lazy.zarr")
    nu.write_image(result, tmp_path / "lazy.zarr", overwrite=True)


def test_open_lazy_nifti_equals_read_image(tmp_path: Path):
    data = RNG.integers(-5, 300, (36, 40, 20)).astype(np.int16)  # NIfTI (i, j, k)
    nifti = nib.Nifti1Image(data, AFFINE)
    nifti.header.set_slope_inter(0.5, 2.0)
    nib.save(nifti, tmp_path / "v.nii")
    eager, opened = nu.read_image(tmp_path / "v.nii"), open_lazy(tmp_path / "v.nii", modality="MRI")
    assert isinstance(opened.array, da.Array) and opened.same_grid(eager)
    assert opened.array.dtype == eager.array.dtype == np.float64  # scaled by nibabel, as read_image does
    np.testing.assert_array_equal(opened.array.compute(), eager.array)
    assert opened.metadata["modality"] == "MRI"


# ---------------------------------------------------------------------- bounded memory
class LargestResult(Callback):
    """Records the largest array any dask task returns (lists of arrays are summed)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.lock = 0, threading.Lock()

    @staticmethod
    def size(value) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, (list, tuple)):
            return sum(LargestResult.size(v) for v in value)
        return 0

    def _posttask(self, key, result, dsk, state, worker_id):
        with self.lock:
            self.largest = max(self.largest, self.size(result))


def test_lazy_path_never_holds_a_whole_volume(tmp_path: Path):
    shape = (64, 48, 48)
    slab = 8 * 48 * 48 * 4  # bytes of one float32 input slab
    a, b = pair(shape)
    with LargestResult() as watch:
        result = nu.fuse(as_lazy(a, (8, 48, 48)), as_lazy(b, (8, 48, 48)), model="average", device="cpu")
        nu.write_image(result, tmp_path / "out.nii.gz")
        nu.write_image(result, tmp_path / "out.zarr")
    volume = int(np.prod(shape)) * 4
    assert 0 < watch.largest <= slab < volume / 4


class _BrokenCompile(torch.nn.Module):
    """Stands in for a ``torch.compile`` whose compilation fails; counts how often it is tried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, a, b, code):
        self.calls += 1
        raise RuntimeError("backend compiler failed: C++ compile error")


def test_a_failing_compile_is_tried_once_for_a_whole_lazy_volume():
    """As on the eager path, the first failure turns compilation off for the later slabs and later fusions."""
    from napari_upfusion.fusers.classical import AverageFuser

    a, b = pair((12, 32, 32))
    engine = nu.FusionEngine(AverageFuser(), device="cpu")
    engine.compiled = broken = _BrokenCompile()
    result = engine.fuse(as_lazy(a, 3), as_lazy(b, 3))
    assert len(result.image.array.chunks[0]) == 4  # four slabs
    fused = result.image.array.compute()
    np.testing.assert_array_equal(fused, nu.fuse(a, b, model="average", device="cpu").array)
    assert broken.calls == 1 and engine.compiled is None
    engine.fuse(as_lazy(a, 3), as_lazy(b, 3)).image.array.compute()
    engine.fuse(np.asarray(a.array), np.asarray(b.array))
    assert broken.calls == 1


# ---------------------------------------------------------------------- refusals
def test_lazy_refusals_are_one_sentence():
    a, b = pair((8, 32, 32))
    la, lb = as_lazy(a, 4), as_lazy(b, 4)
    with pytest.raises(InputError, match="share a grid"):
        nu.fuse(la, da.zeros((8, 32, 31)) + 1, model="average", device="cpu")
    shifted = nu.ImageData(lb.array, b.spacing, (1.0, 2.0, 3.0), b.direction, has_geometry=True)
    with pytest.raises(InputError, match="other spacing, origin or direction"):
        nu.fuse(la, shifted, model="average", device="cpu")
    with pytest.raises(InputError, match="Registration needs whole volumes"):
        nu.fuse(la, lb, model="average", device="cpu", register=True)
    with pytest.raises(InputError, match="grey volumes only"):
        nu.fuse(la, lb, model="average", device="cpu", colormap="hot")
    with pytest.raises(InputError, match="same image"):
        nu.fuse(la, la, model="average", device="cpu")
    with pytest.raises(InputError, match="Input a is 3-D but input b is 2-D"):  # the eager path's sentence
        nu.fuse(la, da.ones((32, 32)), model="average", device="cpu")


@pytest.mark.parametrize("problem", ["nan", "constant"])
def test_lazy_value_errors_read_like_eager_ones(problem):
    a, b = pair((8, 32, 32))
    bad = np.asarray(b.array).copy()
    if problem == "nan":
        bad[1, 2, 3] = np.nan
    else:
        bad[:] = 2.5
    with pytest.raises(InputError) as eager:
        nu.fuse(np.asarray(a.array), bad, model="average", device="cpu")
    with pytest.raises(InputError) as lazy_error:
        nu.fuse(da.from_array(np.asarray(a.array), chunks=(3, 16, 32)), da.from_array(bad, chunks=(3, 32, 32)),
                model="average", device="cpu")
    assert str(lazy_error.value) == str(eager.value)


def test_lazy_fusion_can_be_cancelled():
    a, b = pair((8, 32, 32))
    cancel = threading.Event()
    result = nu.fuse(as_lazy(a, 2), as_lazy(b, 2), model="average", device="cpu", cancel=cancel)
    cancel.set()
    with pytest.raises(FusionCancelled):
        dask.compute(result.array, scheduler="synchronous")
