"""Sample pairs from packaged data: aligned, deterministic, sane values, no downloads, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_upfusion.data import samples


@pytest.fixture(scope="module")
def pet() -> samples.SamplePair:
    return samples.brain_mri_pet()


@pytest.fixture(scope="module")
def ct() -> samples.SamplePair:
    return samples.brain_mri_ct()


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


def _gm_on_grid(pair: samples.SamplePair) -> np.ndarray:
    """The packaged GM map block-averaged onto the sample's grid (through its origin and spacing)."""
    model = samples.head_model()
    f = int(pair.spacing[0])
    start = [round(o - (f - 1) / 2 - mo) for o, mo in zip(pair.origin, model.origin)]
    sl = tuple(slice(s, s + n * f) for s, n in zip(start, pair.a.shape))
    return samples._block_mean(model.gm[sl].astype(np.float32) / 255, f)


def test_packaged_sources_exist() -> None:
    paths = samples.packaged_mni_paths()
    assert set(paths) == {"t1", "gm", "wm"}
    assert all(Path(p).is_file() and "nilearn" in p for p in paths.values())


@pytest.mark.parametrize("builder", [samples.brain_mri_pet, samples.brain_mri_spect, samples.brain_mri_ct])
def test_brain_samples_shape_dtype_geometry(builder) -> None:
    pair = builder()
    assert pair.a.shape == pair.b.shape and pair.a.ndim == 3
    assert pair.a.dtype == np.float32 and pair.b.dtype == np.float32
    assert pair.a.size < 100**3, "the demo volume should stay small enough for a CPU"
    assert pair.spacing == (2.0, 2.0, 2.0) and len(pair.origin) == 3
    assert np.isfinite(pair.a).all() and np.isfinite(pair.b).all()
    assert 0.0 <= pair.a.min() and pair.a.max() <= 1.0
    assert pair.modalities[0] == "MRI" and "simulated" in pair.description
    # MNI (x, y, z) = (+-28, -10, 30) mm, the centrum semiovale, is white matter (bright in T1)
    for x in (-28, 28):
        ijk = np.rint(np.linalg.solve(pair.affine, [30, -10, x, 1])[:3]).astype(int)
        assert pair.a[tuple(ijk)] > 0.75


def test_pet_uptake_follows_grey_matter(pet) -> None:
    gm = _gm_on_grid(pet)
    assert _corr(gm, pet.b) > 0.7
    assert pet.b[gm > 0.7].mean() > 2.0 * pet.b[(gm < 0.05) & (pet.a > 0.75)].mean()  # GM >> WM
    assert 0.0 <= pet.b.min() and pet.b.max() <= 1.0
    assert pet.b[pet.a == 0].mean() < 0.05  # near zero in air


def test_pet_and_mri_brains_overlap(pet) -> None:
    brain_mri = samples.brain_mri_pet(head=False).a > 0.2
    brain_pet = pet.b > 0.3
    dice = 2 * (brain_mri & brain_pet).sum() / (brain_mri.sum() + brain_pet.sum())
    assert dice > 0.75


def test_head_false_is_the_packaged_template() -> None:
    pair = samples.brain_mri_pet(voxel_mm=1, head=False)
    model = samples.head_model()
    start = [round(o - mo) for o, mo in zip(pair.origin, model.origin)]
    sl = tuple(slice(s, s + n) for s, n in zip(start, pair.a.shape))
    np.testing.assert_allclose(pair.a, model.t1[sl].astype(np.float32) / 255, rtol=1e-6)


def test_spect_is_smoother_than_pet(pet) -> None:
    spect = samples.brain_mri_spect()

    def roughness(v: np.ndarray) -> float:
        return float(np.mean(np.abs(np.diff(v, axis=2))))

    assert roughness(spect.b) < 0.7 * roughness(pet.b)
    np.testing.assert_array_equal(spect.a, pet.a)


def test_ct_has_bright_skull_around_the_brain(ct) -> None:
    hu = ct.b
    brain = samples.brain_mri_pet(head=False).a > 0
    assert hu.max() > 1000 and np.median(hu[~ndi.binary_dilation(hu > -500, iterations=3)]) < -950
    soft = hu[ndi.binary_erosion(brain, iterations=2)]
    assert 10 < np.median(soft) < 45
    bone = hu > 400
    assert bone.sum() > 1000 and (bone & brain).sum() < 0.02 * bone.sum()
    # the bone shell encloses the brain: every brain voxel is surrounded by bone in the axial plane, mid-brain
    z = ct.a.shape[0] // 2 + 5
    filled = ndi.binary_fill_holes(bone[z])
    assert (filled & brain[z]).sum() > 0.95 * brain[z].sum()


@pytest.mark.parametrize("builder", [samples.brain_mri_pet, samples.brain_mri_ct])
def test_brain_samples_are_deterministic(builder) -> None:
    one, two = builder(seed=3), builder(seed=3)
    np.testing.assert_array_equal(one.a, two.a)
    np.testing.assert_array_equal(one.b, two.b)
    other = builder(seed=4)
    np.testing.assert_array_equal(one.a, other.a)
    assert not np.array_equal(one.b, other.b)


def test_voxel_size_changes_grid() -> None:
    one = samples.brain_mri_ct(voxel_mm=4)
    assert one.spacing == (4.0, 4.0, 4.0) and one.a.shape[0] < 50
    with pytest.raises(ValueError):
        samples.brain_mri_ct(voxel_mm=5)


def test_infrared_visible() -> None:
    pair = samples.infrared_visible()
    rgb, ir = pair.a, pair.b
    assert rgb.ndim == 3 and rgb.shape[-1] == 3 and ir.shape == rgb.shape[:2]
    assert rgb.dtype == np.float32 and ir.dtype == np.float32
    assert 0 <= ir.min() and ir.max() <= 1 and np.isfinite(ir).all()
    assert not np.allclose(ir, samples._luma(rgb), atol=0.1)
    # hot where the skin-like material is, and edges line up with the visible image
    warm = samples.thermal_materials(rgb)["warm"] > 0.5
    assert warm.sum() > 500 and ir[warm].mean() > ir.mean() + 0.2
    edges = lambda x: np.hypot(ndi.sobel(x, 0), ndi.sobel(x, 1))
    y = ndi.gaussian_filter(samples._luma(rgb), 2)
    assert _corr(edges(y), edges(ndi.gaussian_filter(ir, 2))) > 0.2
    again = samples.infrared_visible()
    np.testing.assert_array_equal(ir, again.b)


@pytest.mark.parametrize("name", samples.SKIMAGE_COLOUR_SCENES)
def test_every_colour_scene_loads_from_the_package(name: str) -> None:
    img = samples.skimage_image(name)
    assert img.ndim == 3 and img.dtype == np.float32 and not img.flags.writeable
    with pytest.raises(ValueError):
        samples.infrared_visible("not-an-image")


def test_sample_module_imports_no_torch() -> None:
    code = "import sys, napari_upfusion.data.samples; assert 'torch' not in sys.modules"
    src = str(Path(samples.__file__).parents[2])
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src})
