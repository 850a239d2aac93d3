"""Property-based tests of the engine: any shape, dtype, value range and axis.

For every generated pair the result has the reference's shape and geometry,
is finite float32 in [0, 1], and neither input is modified.  The numbers of
examples are fixed (``max_examples``) so docs/reliability.md can state them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_upfusion as nu
from napari_upfusion.errors import InputError

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float16", "float32", "float64"]
EXAMPLES_CLASSICAL = 120
EXAMPLES_NETWORK = 15


def _values(draw, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A non-constant array of ``dtype``: a random field over a value range the dtype can hold."""
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else np.finfo(dtype)
    low = draw(st.sampled_from([float(info.min), -1000.0, 0.0])) if info.min < 0 else 0.0
    high = draw(st.sampled_from([1.0, 255.0, 4095.0, float(min(info.max, 1e6))]))
    low, high = max(low, float(info.min)), min(high, float(info.max))
    seed = draw(st.integers(0, 2**31 - 1))
    unit = np.random.default_rng(seed).random(shape)
    unit.flat[0], unit.flat[-1] = 0.0, 1.0  # never constant
    data = low + unit * (high - low)
    if np.issubdtype(np.dtype(dtype), np.integer):
        data = np.clip(np.round(data), info.min, info.max)
    return data.astype(dtype)


@st.composite
def pairs(draw):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(16, 28)) for _ in range(2))
    if ndim == 3:
        shape = (draw(st.integers(16, 20)), *shape)
    a = _values(draw, draw(st.sampled_from(DTYPES)), shape)
    b = _values(draw, draw(st.sampled_from(DTYPES)), shape)
    if draw(st.booleans()):  # a colour second input (pseudo-colour), RGB or RGBA, 8-bit
        b = _values(draw, "uint8", (*shape, draw(st.sampled_from([3, 4]))))
    axis = draw(st.integers(0, ndim - 1)) if ndim == 3 else 0
    modalities = draw(st.sampled_from([("MRI", "CT"), ("MRI", "PET"), ("MRI", "SPECT"), ("VIS", "IR")]))
    geometry = None
    if draw(st.booleans()):
        geometry = {
            "spacing": tuple(draw(st.floats(0.3, 3.0)) for _ in range(ndim)),
            "origin": tuple(draw(st.floats(-200, 200)) for _ in range(ndim)),
        }
    return a, b, axis, modalities, geometry


def _check(a, b, axis, modalities, geometry, model):
    a_before, b_before = a.copy(), b.copy()
    colour_b = b.ndim == a.ndim + 1
    if a.shape == b.shape and np.array_equal(a, b):  # the same image twice, drawn by chance: refused (issue 17)
        with pytest.raises(nu.InputError, match="are the same image"):
            nu.fuse(a, b, modalities=modalities, model=model, axis=axis, device="cpu")
        return
    if geometry is None:
        out = nu.fuse(a, b, modalities=modalities, model=model, axis=axis, device="cpu")
        array = out
    else:
        ia = nu.ImageData.from_array(a, **geometry)
        ib = nu.ImageData.from_array(b, **geometry, rgb=colour_b)
        out = nu.fuse(ia, ib, modalities=modalities, model=model, axis=axis, device="cpu")
        assert out.spacing == ia.spacing and out.origin == ia.origin
        np.testing.assert_array_equal(out.direction, ia.direction)
        array = out.array
    expected_shape = a.shape + ((3,) if colour_b and not _grey(b) else ())
    assert array.shape == expected_shape
    assert array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


def _grey(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


@settings(max_examples=EXAMPLES_CLASSICAL, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs(), st.sampled_from(["average", "maximum", "laplacian"]))
def test_classical_fusion_keeps_shape_geometry_and_inputs(pair, model):
    _check(*pair, model)


@settings(max_examples=EXAMPLES_NETWORK, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_network_fusion_keeps_shape_geometry_and_inputs(pair):
    _check(*pair, "small")


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(DTYPES),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.integers(0, 16 * 16 - 1),
)
def test_any_non_finite_value_is_refused(dtype, bad, where):
    if not np.issubdtype(np.dtype(dtype), np.floating):
        dtype = "float32"
    a = np.random.default_rng(0).random((16, 16)).astype(dtype)
    a.flat[where] = bad
    with pytest.raises(InputError, match="Input a contains 1 (NaN|infinite) value"):
        nu.fuse(a, np.random.default_rng(1).random((16, 16)), model="average")


def test_second_run_is_bit_identical_on_cpu():
    rng = np.random.default_rng(7)
    a, b = rng.random((4, 40, 40)).astype(np.float32), rng.random((4, 40, 40)).astype(np.float32)
    first = nu.fuse(a, b, model="small", device="cpu")
    second = nu.fuse(a, b, model="small", device="cpu")
    np.testing.assert_array_equal(first, second)
