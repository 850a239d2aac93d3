"""The engine: arrays or images in, fused array out, with geometry, colour, batching and faults handled."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import napari_upfusion as nu
from napari_upfusion.engine import color as colour
from napari_upfusion.engine.api import FusionEngine
from napari_upfusion.engine.intensity import normalize
from napari_upfusion.engine.runner import SliceRunner, pad_to_multiple
from napari_upfusion.errors import FusionCancelled, InputError, UPFusionError
from napari_upfusion.model import load_model
from napari_upfusion.model.text.codes import encode_prompt


def _pair(shape=(5, 40, 44), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    a = (np.sin(x / 3.0) + np.cos(y / 4.0) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    b = np.exp(-(((y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2) / 60.0)).astype(np.float32) * (1 + z)
    return a, b


@pytest.fixture(scope="module")
def small():
    return load_model("small")


def test_engine_equals_direct_network_call_on_padded_slices(small):
    """No drift from batching, padding or slicing: each slice is the network's own answer."""
    a, b = _pair()
    fused = nu.fuse(a, b, modalities=("MRI", "PET"), model=small, batch_size=2, device="cpu", precision="fp32")
    code = encode_prompt(small, nu.engine.api.default_prompt("MRI", "PET"))
    na, nb = normalize(a, "MRI"), normalize(b, "PET")
    for i in range(a.shape[0]):
        ta = pad_to_multiple(torch.from_numpy(na[i])[None, None], 8)
        tb = pad_to_multiple(torch.from_numpy(nb[i])[None, None], 8)
        assert ta.shape[-2:] == (40, 48)
        with torch.no_grad():
            expected = small(ta, tb, code)[0, 0, :40, :44].clamp(0, 1).numpy()
        np.testing.assert_allclose(fused[i], expected, atol=2e-6)
    assert fused.dtype == np.float32 and fused.shape == a.shape
    assert 0.0 <= fused.min() and fused.max() <= 1.0


def test_slicing_axis_and_batch_size_do_not_change_the_numbers():
    a, b = _pair((20, 24, 32))
    along0 = nu.fuse(a, b, model="laplacian", axis=0, batch_size=1)
    along0_batched = nu.fuse(a, b, model="laplacian", axis=0, batch_size=7)
    np.testing.assert_allclose(along0, along0_batched, atol=1e-6)
    along2 = nu.fuse(a, b, model="laplacian", axis=2)
    direct = nu.fuse(np.moveaxis(a, 2, 0).copy(), np.moveaxis(b, 2, 0).copy(), model="laplacian")
    np.testing.assert_allclose(along2, np.moveaxis(direct, 0, 2), atol=1e-6)
    assert along2.shape == a.shape


def test_pet_at_2mm_fused_with_mri_at_1mm_lands_on_the_mri_grid():
    mri = nu.ImageData.from_array(
        np.random.default_rng(0).random((16, 40, 40)).astype(np.float32) * 0.2,
        spacing=(1.0, 1.0, 1.0),
        origin=(10.0, -20.0, 5.0),
    )
    pet = np.zeros((8, 20, 20), np.float32)
    pet[3:5, 4:6, 12:14] = 10.0  # a hot spot at physical z 16..19, y -12..-9, x 29..32
    pet_image = nu.ImageData.from_array(pet, spacing=(2.0, 2.0, 2.0), origin=(10.0, -20.0, 5.0))
    fused = nu.fuse(mri, pet_image, modalities=("MRI", "PET"), model="maximum")
    assert isinstance(fused, nu.ImageData)
    assert fused.shape == mri.shape and fused.spacing == mri.spacing and fused.origin == mri.origin
    np.testing.assert_array_equal(fused.direction, mri.direction)
    # where the PET dominates the maximum fusion, relative to the MRI's own normalised intensities
    excess = np.clip(fused.array - normalize(mri.array, "MRI"), 0, None)
    assert excess.max() > 0.5
    idx = np.indices(fused.shape).reshape(3, -1)
    weights = excess.reshape(-1) ** 4
    centre_index = (idx * weights).sum(axis=1) / weights.sum()
    centre = (fused.index_to_world_affine() @ np.r_[centre_index, 1.0])[:3]
    np.testing.assert_allclose(centre, (10 + 3.5 * 2, -20 + 4.5 * 2, 5 + 12.5 * 2), atol=1.0)
    assert fused.metadata["upfusion"]["modalities"] == ["MRI", "PET"]


def test_colour_spect_keeps_its_chroma():
    rng = np.random.default_rng(3)
    mri = (rng.random((48, 56)) * 100 + 80).astype(np.uint8)  # mid-grey, so the fused colour stays in gamut
    grey = (np.linspace(0.2, 0.8, 56)[None, :] * np.ones((48, 1))).astype(np.float32)
    spect = colour.apply_colormap(grey, "jet") * 0.3 + 0.35
    spect8 = np.round(spect * 255).astype(np.uint8)
    fused = nu.fuse(mri, spect8, modalities=("MRI", "SPECT"), model="average")
    assert fused.shape == (48, 56, 3)
    got = colour.rgb_to_ycbcr(fused)[..., 1:]
    expected = colour.rgb_to_ycbcr(spect8 / 255.0)[..., 1:]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    grey_only = nu.fuse(mri, spect8, modalities=("MRI", "SPECT"), model="average", color_output=False)
    np.testing.assert_allclose(grey_only, colour.rgb_to_ycbcr(fused)[..., 0], atol=1e-5)


def test_colour_visible_photo_keeps_its_chroma_and_grey_rgb_is_grey():
    rng = np.random.default_rng(4)
    vis = (rng.random((32, 40, 3)) * 120 + 60).astype(np.uint8)
    ir = (rng.random((32, 40)) * 120 + 60).astype(np.uint8)
    fused = nu.fuse(vis, ir, modalities=("VIS", "IR"), model="maximum")
    assert fused.shape == (32, 40, 3)
    np.testing.assert_allclose(
        colour.rgb_to_ycbcr(fused)[..., 1:], colour.rgb_to_ycbcr(vis / 255.0)[..., 1:], atol=2e-3
    )
    grey_rgb = np.repeat(ir[..., None], 3, axis=-1)
    assert nu.fuse(grey_rgb, vis[..., 0].copy(), modalities=("VIS", "IR"), model="average").shape == (32, 40)


def test_colormap_makes_a_colour_fusion_of_a_scalar_pet():
    a, b = _pair((3, 32, 32))
    fused = nu.fuse(a, b, model="average", colormap="hot")
    assert fused.shape == (3, 32, 32, 3)
    hot = colour.rgb_to_ycbcr(colour.apply_colormap(normalize(b, "PET"), "hot"))
    in_gamut = ((fused > 0) & (fused < 1)).all(axis=-1)  # where no channel was clipped, chroma is exact
    assert in_gamut.mean() > 0.3
    np.testing.assert_allclose(colour.rgb_to_ycbcr(fused)[in_gamut][:, 1:], hot[in_gamut][:, 1:], atol=2e-3)


def test_progress_and_cancellation_return_nothing_and_leave_inputs_untouched():
    a, b = _pair((6, 32, 32))
    a_before, b_before = a.copy(), b.copy()
    seen = []
    nu.fuse(a, b, model="average", batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 6), (4, 6), (6, 6)]
    event = threading.Event()
    calls = []

    def stop_after_first(done, total):
        calls.append(done)
        event.set()

    with pytest.raises(FusionCancelled):
        nu.fuse(a, b, model="average", batch_size=2, progress=stop_after_first, cancel=event)
    assert calls == [2]
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


class _FailsAboveBatch(torch.nn.Module):
    """A real fuser that runs out of memory for batches larger than ``limit`` (forces the back-off path)."""

    uses_text = True

    def __init__(self, inner, limit, cuda_style=True):
        super().__init__()
        self.inner, self.limit, self.cuda_style, self.sizes = inner, limit, cuda_style, []
        self.config = inner.config

    def forward(self, a, b, code):
        self.sizes.append(a.shape[0])
        if a.shape[0] > self.limit:
            if self.cuda_style:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")
        return self.inner(a, b, code)


@pytest.mark.parametrize("cuda_style", [True, False])
def test_out_of_memory_halves_the_batch_and_loses_no_slice(small, cuda_style):
    a, b = _pair((7, 32, 32))
    code = encode_prompt(small, nu.engine.api.default_prompt("MRI", "PET"))
    flaky = _FailsAboveBatch(small, limit=2, cuda_style=cuda_style)
    runner = SliceRunner(flaky, torch.device("cpu"), "fp32", batch_size=8)
    na, nb = normalize(a, "MRI"), normalize(b, "PET")
    fused = runner.run(na, nb, code)
    assert runner.batch_size_used == 2
    assert flaky.sizes[:3] == [7, 4, 2]
    settled = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=2).run(na, nb, code)
    np.testing.assert_array_equal(fused, settled)  # as if it had run at the size it settled on from the start
    # against one slice at a time: float rounding of other conv kernels, which a near-tie in a channel
    # ranking can amplify in places, but no slice lost or misplaced (that would differ by ~0.5)
    single = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=1, streams=1).run(na, nb, code)
    assert np.abs(fused - single).max() < 1e-2 and np.abs(fused - single).mean() < 1e-4
    hopeless = SliceRunner(_FailsAboveBatch(small, limit=0), torch.device("cpu"), "fp32", batch_size=4)
    with pytest.raises(UPFusionError, match="Not enough CPU memory to fuse even one 32 x 32 slice"):
        hopeless.run(na, nb, code)


def test_prompt_code_is_computed_once_per_call(small, monkeypatch):
    from napari_upfusion.engine import api

    calls = []
    real = api.prompt_code
    monkeypatch.setattr(api, "prompt_code", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    engine = FusionEngine(small, device="cpu")
    a, b = _pair((5, 32, 32))
    engine.fuse(a, b, modalities=("MRI", "CT"))
    assert len(calls) == 1
    engine.fuse(a, b, modalities=("MRI", "CT"))
    assert len(calls) == 1  # the engine keeps the code of a prompt it has seen


def test_intensity_rules():
    ct = np.array([-1000, -100, 700, 1500, 3000], dtype=np.int16)
    np.testing.assert_allclose(normalize(ct, "CT"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(normalize(ct, "CT", window="brain"), [0, 0, 1, 1, 1])
    np.testing.assert_allclose(normalize(np.array([0, 255], np.uint8), "MRI"), [0, 1])
    mri = np.arange(1000, dtype=np.float64)
    out = normalize(mri, "MRI")
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert normalize(np.full(5, 7.0), "PET").tolist() == [0.0] * 5
    ct_before = ct.copy()
    normalize(ct, "CT")
    np.testing.assert_array_equal(ct, ct_before)


@pytest.mark.parametrize(
    "a, b, kwargs, message",
    [
        (np.full((32, 32), np.nan), None, {}, "Input a contains 1024 NaN values"),
        (None, np.full((32, 32), np.inf), {}, "Input b contains 1024 infinite values"),
        (None, np.ones((32, 32)), {}, "Input b is constant"),
        (np.zeros((2, 3, 32, 32)), None, {}, "which is 4-D; pick one 3-D volume"),
        (None, np.zeros((4, 32, 32)) + np.arange(32), {}, "Input a is 2-D but input b is 3-D"),
        (None, np.zeros((1, 32, 32)) + np.arange(32), {}, r"Input b is a single slice stored as a volume \(1 x 32 x 32\)"),
        (np.random.rand(32, 32) > 0.5, None, {}, "not an image intensity"),
        (None, np.random.rand(40, 40), {}, "shapes differ"),
        (np.random.rand(4, 8, 32), np.random.rand(4, 8, 32), {}, "smaller than the 16 x 16"),
        (None, None, {"modalities": ("MRI", "XRAY")}, "Unknown modality 'XRAY'"),
        (None, None, {"model": "no-such-model"}, "neither a known model"),
        (None, None, {"axis": 5}, "axis must be 0, 1 or 2"),
        (None, None, {"device": "cuda"} if not torch.cuda.is_available() else {"device": "tpu"}, "CUDA|Unknown device"),
    ],
)
def test_bad_inputs_get_one_sentence(a, b, kwargs, message):
    rng = np.random.default_rng(0)
    default = rng.random((4, 32, 32)) if kwargs.get("axis") else rng.random((32, 32))
    a = default if a is None else a
    b = rng.random(a.shape) if b is None else b
    with pytest.raises(UPFusionError, match=message) as info:
        nu.fuse(a, b, model=kwargs.pop("model", "average"), **kwargs)
    assert "\n" not in str(info.value)


def test_the_same_image_twice_is_refused():
    a = np.random.default_rng(0).random((32, 32))
    with pytest.raises(InputError, match="same image"):
        nu.fuse(a, a, model="average")


class _Recorder(torch.nn.Module):
    """Stands in for a compiled fuser: records batch sizes, optionally fails like a broken compiler."""

    def __init__(self, inner, fail=False):
        super().__init__()
        self.inner, self.fail, self.sizes = inner, fail, []

    def forward(self, a, b, code):
        self.sizes.append(a.shape[0])
        if self.fail:
            raise RuntimeError("backend compiler failed: C++ compile error")
        return self.inner(a, b, code)


def test_compiled_path_pads_the_last_batch_and_falls_back_when_compilation_fails(small):
    a, b = _pair((7, 32, 32))
    code = encode_prompt(small, nu.engine.api.default_prompt("MRI", "PET"))
    na, nb = normalize(a, "MRI"), normalize(b, "PET")
    eager = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=3).run(na, nb, code)
    recorder = _Recorder(small)
    runner = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=3, compiled=recorder)
    np.testing.assert_allclose(runner.run(na, nb, code), eager, atol=2e-6)
    assert recorder.sizes == [3, 3, 3]  # 7 slices: the last batch is padded to one shape
    broken = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=3, compiled=_Recorder(small, fail=True))
    np.testing.assert_allclose(broken.run(na, nb, code), eager, atol=2e-6)
    assert broken.compiled is None and "backend compiler failed" in broken.compile_error


def test_two_cpu_streams_give_the_same_numbers_progress_and_cancellation(small, tiny_config):
    from dataclasses import replace

    from napari_upfusion.model import config_runtime, create_model

    a, b = _pair((9, 32, 40))
    code = encode_prompt(small, nu.engine.api.default_prompt("MRI", "PET"))
    na, nb = normalize(a, "MRI"), normalize(b, "PET")
    one = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=1, streams=1)
    two = SliceRunner(small, torch.device("cpu"), "fp32", batch_size=1, streams=2)
    assert SliceRunner(small, torch.device("cpu"), "fp32").streams_for(1) == min(2, torch.get_num_threads())
    one_stream = create_model(tiny_config)
    one_stream.runtime = replace(one_stream.runtime, cpu_streams=1)  # as the paper weights: no faster, twice the memory
    assert config_runtime("paper").cpu_streams == 1 and SliceRunner(one_stream, torch.device("cpu")).streams_for(1) == 1
    seen = []
    expected = one.run(na, nb, code)
    np.testing.assert_allclose(two.run(na, nb, code, progress=lambda d, t: seen.append((d, t))), expected, atol=1e-5)
    assert sorted(seen) == [(i, 9) for i in range(1, 10)]
    event = threading.Event()
    with pytest.raises(FusionCancelled):
        two.run(na, nb, code, progress=lambda d, t: event.set(), cancel=event)
    flaky = SliceRunner(_FailsAboveBatch(small, limit=0), torch.device("cpu"), "fp32", batch_size=1, streams=2)
    with pytest.raises(UPFusionError, match="even one 32 x 40 slice"):
        flaky.run(na, nb, code)


def test_auto_precision_follows_the_models_validated_choice(small, tiny_config):
    from napari_upfusion.engine.runner import cpu_has_native_bf16
    from napari_upfusion.model import config_runtime, create_model

    assert config_runtime("small").cpu_precision == "bf16" and config_runtime("paper").cpu_precision == "fp32"
    eager = FusionEngine(small, device="cpu", cpu_path="eager")
    assert eager.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert FusionEngine(small, device="cpu").precision == "fp32"  # its default CPU path: ONNX Runtime, in fp32
    assert FusionEngine(create_model(tiny_config), device="cpu").precision == "fp32"  # not validated: fp32
    assert FusionEngine("average", device="cpu").precision == "fp32"
    assert FusionEngine(small, device="cpu", precision="fp32").precision == "fp32"


def test_small_model_in_bf16_stays_within_one_percent_of_fp32(small):
    """The claim behind small's cpu_precision = bf16, checked on the bundled brain sample."""
    from napari_upfusion.data.samples import brain_mri_pet

    mri, pet = brain_mri_pet(voxel_mm=4).images()
    fp32 = FusionEngine(small, device="cpu", precision="fp32").fuse(mri, pet, modalities=("MRI", "PET")).luma
    bf16 = FusionEngine(small, device="cpu", precision="bf16").fuse(mri, pet, modalities=("MRI", "PET")).luma
    assert np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32) < 1e-2


def test_a_volume_that_cannot_fit_in_free_memory_is_refused_up_front(monkeypatch):
    """Refused before any work, with the size it needs; a dask array of it is the way out."""
    monkeypatch.setattr(nu.engine.validate, "free_host_bytes", lambda: 2**20)  # 1 MiB free
    a, b = _pair((16, 64, 64))
    with pytest.raises(InputError, match=r"needs about 0\.0 GiB of memory but only 0\.0 GiB are free.*dask array"):
        FusionEngine("average", device="cpu").fuse(a, b)
    monkeypatch.undo()
    assert FusionEngine("average", device="cpu").fuse(a, b).image.shape == (16, 64, 64)


@pytest.mark.parametrize("axis", [0, 2])
def test_one_slice_preview_equals_that_slice_of_the_whole_fusion(small, axis):
    """The preview uses each volume's own intensity range, so it is the full fusion's slice, not a re-normalised one."""
    a, b = _pair((20, 32, 40))
    b[:6] *= 20  # the slices differ in range: a per-slice normalisation would give another answer
    mri = nu.ImageData.from_array(a, spacing=(3.0, 1.0, 0.5), origin=(-10.0, 4.0, 2.0))
    pet = nu.ImageData.from_array(b, spacing=(3.0, 1.0, 0.5), origin=(-10.0, 4.0, 2.0))
    engine = FusionEngine("laplacian")
    whole = engine.fuse(mri, pet, modalities=("MRI", "PET"), axis=axis, colormap="hot")
    index = 9
    one = engine.fuse_slice(mri, pet, index, modalities=("MRI", "PET"), axis=axis, colormap="hot")
    expected = np.take(whole.image.array, [index], axis=axis)
    assert one.image.rgb and one.image.array.shape == expected.shape
    np.testing.assert_allclose(one.image.array, expected, rtol=0, atol=1e-6)  # a classical fuser: to float rounding
    # the one-slice volume sits where that slice of the whole volume is
    corner = [0, 0, 0]
    corner[axis] = index
    np.testing.assert_allclose(one.image.origin, (whole.image.index_to_world_affine() @ [*corner, 1.0])[:3])
    assert one.info["slice"] == index and one.image.spacing == mri.spacing
    net = FusionEngine(small, precision="fp32")
    full = net.fuse(mri, pet, modalities=("MRI", "PET"), axis=axis).image.array
    np.testing.assert_allclose(
        net.fuse_slice(mri, pet, index, modalities=("MRI", "PET"), axis=axis).image.array,
        np.take(full, [index], axis=axis),
        atol=1e-5,
    )
    with pytest.raises(InputError, match="Slice 50 is outside the volume"):
        engine.fuse_slice(mri, pet, 50, modalities=("MRI", "PET"), axis=axis)


def test_the_engine_options_are_written_once_and_shared():
    """fuse, get_engine and FusionEngine take exactly the fields of EngineOptions, with its defaults."""
    import inspect

    from napari_upfusion.engine.options import EngineOptions

    defaults = EngineOptions()
    for function in (nu.fuse, nu.get_engine, nu.FusionEngine):
        parameters = inspect.signature(function).parameters
        assert all(parameters[name].default == getattr(defaults, name) for name in EngineOptions.names()), function
    assert list(inspect.signature(nu.get_engine).parameters) == list(EngineOptions.names())  # positional order too
    assert nu.get_engine("average", "cpu") is nu.get_engine(model="average", device="cpu")
    with pytest.raises(TypeError, match="modell"):
        nu.fuse(*_pair((2, 32, 32)), modell="average")
    options, rest = EngineOptions.split({"model": "average", "device": "cpu", "axis": 1})
    assert options == EngineOptions("average", "cpu") and rest == {"axis": 1}
