"""ImageData's conventions, resampling onto another grid, rigid registration and grid matching."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from napari_upfusion.engine.geometry import match_grids, register_rigid, resample_to
from napari_upfusion.engine.image import ImageData
from napari_upfusion.engine.io import array_affine_to_nifti_affine, nifti_affine_to_array_affine
from napari_upfusion.errors import InputError

RNG = np.random.default_rng(1)


def rotation(*degrees: float) -> np.ndarray:
    return Rotation.from_euler("zyx"[: len(degrees)], degrees, degrees=True).as_matrix()


def rotation2d(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s], [s, c]])


def physical_centroid(image: ImageData, mask: np.ndarray) -> np.ndarray:
    indices = np.argwhere(mask)
    points = image.index_to_world_affine() @ np.c_[indices, np.ones(len(indices))].T
    return points[:-1].mean(axis=1)


# ---------------------------------------------------------------------- ImageData
def test_plain_array_defaults_and_colour_guess() -> None:
    grey = ImageData.from_array(np.zeros((4, 5, 6)))
    assert not grey.has_geometry and not grey.rgb and grey.shape == (4, 5, 6)
    assert grey.spacing == (1.0, 1.0, 1.0) and grey.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(grey.direction, np.eye(3))
    colour = ImageData.from_array(np.zeros((4, 5, 3)))
    assert colour.rgb and colour.ndim == 2 and colour.shape == (4, 5)
    volume = ImageData.from_array(np.zeros((4, 5, 3)), spacing=(1, 1, 2))
    assert volume.has_geometry and not volume.rgb and volume.ndim == 3


def test_array_is_a_read_only_view_of_the_callers_data() -> None:
    data = np.zeros((4, 5))
    image = ImageData.from_array(data)
    with pytest.raises(ValueError):
        image.array[0, 0] = 1
    data[0, 0] = 7  # the caller's own array stays writable
    assert image.array[0, 0] == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros(5)}, "Only 2-D images and 3-D volumes"),
        ({"array": np.zeros((4, 5, 6, 7, 3)), "rgb": True}, "Only 2-D images and 3-D volumes"),
        ({"array": np.zeros((4, 5, 5)), "rgb": True}, "last axis of 3 or 4"),
        ({"array": np.zeros((4, 5)), "spacing": (1, -1)}, "must be positive"),
        ({"array": np.zeros((4, 5)), "spacing": (1, 1, 1)}, "2 finite numbers"),
        ({"array": np.zeros((4, 5)), "direction": [[2, 0], [0, 1]]}, "unit, independent columns"),
    ],
)
def test_invalid_image_data_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ImageData(**kwargs)


def test_sitk_conversion_maps_the_same_index_to_the_same_point() -> None:
    image = ImageData.from_array(
        RNG.random((4, 5, 6)), spacing=(3.0, 1.5, 0.75), origin=(5, -6, 7), direction=rotation(25, -10, 40)
    )
    converted = image.to_sitk()
    k, j, i = 3, 1, 4
    point = converted.TransformIndexToPhysicalPoint((i, j, k))
    np.testing.assert_allclose(image.index_to_world_affine() @ [k, j, i, 1], [*point[::-1], 1], atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), image.array)
    back = ImageData.from_sitk(converted)
    assert back.same_grid(image, tol=1e-12) and back.has_geometry
    colour = ImageData.from_array(RNG.integers(0, 255, (5, 6, 4), dtype=np.uint8), spacing=(2.0, 0.5))
    vector = colour.to_sitk()
    assert vector.GetNumberOfComponentsPerPixel() == 4 and vector.GetSpacing() == (0.5, 2.0)
    np.testing.assert_array_equal(ImageData.from_sitk(vector).array, colour.array)


def test_napari_geometry_is_scale_and_translate_when_axis_aligned() -> None:
    image = ImageData.from_array(np.zeros((4, 5, 6)), spacing=(3.0, 1.0, 0.5), origin=(10, 20, 30))
    assert image.napari_geometry() == {"scale": (3.0, 1.0, 0.5), "translate": (10.0, 20.0, 30.0)}


def test_napari_geometry_of_an_oblique_image_places_every_pixel() -> None:
    image = ImageData.from_array(np.zeros((4, 5, 6)), spacing=(3.0, 1.0, 0.5), origin=(10, 20, 30),
                                 direction=rotation(30, 0, 10))
    napari = image.napari_geometry()
    assert set(napari) == {"scale", "translate", "affine"}
    index = np.array([3, 1, 5])
    # napari: world = affine(scale * index + translate)
    world = napari["affine"] @ [*(np.multiply(napari["scale"], index) + napari["translate"]), 1]
    np.testing.assert_allclose(world, image.index_to_world_affine() @ [*index, 1], atol=1e-12)
    back = ImageData.from_napari_geometry(image.array, **napari)
    assert back.same_grid(image, tol=1e-12) and back.has_geometry


def test_from_napari_geometry_defaults_mean_no_geometry() -> None:
    plain = ImageData.from_napari_geometry(np.zeros((5, 6, 3)), scale=(1, 1), translate=(0, 0))
    assert plain.rgb and not plain.has_geometry
    with pytest.raises(InputError, match="3x3"):
        ImageData.from_napari_geometry(np.zeros((5, 6)), scale=(1, 1), affine=np.eye(4))


@settings(max_examples=30, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    spacing=st.tuples(*[st.floats(0.1, 5)] * 3),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
    flip=st.sampled_from([1.0, -1.0]),
)
def test_geometry_survives_every_conversion(angles, spacing, origin, flip) -> None:
    direction = rotation(*angles) @ np.diag([1, 1, flip])
    image = ImageData.from_array(np.zeros((2, 3, 4)), spacing=spacing, origin=origin, direction=direction)
    affine = image.index_to_world_affine()
    np.testing.assert_allclose(ImageData.from_affine(image.array, affine).index_to_world_affine(), affine, atol=1e-9)
    nifti = array_affine_to_nifti_affine(affine)
    np.testing.assert_allclose(nifti_affine_to_array_affine(nifti), affine, atol=1e-9)
    napari = ImageData.from_napari_geometry(image.array, **image.napari_geometry())
    np.testing.assert_allclose(napari.index_to_world_affine(), affine, atol=1e-9)
    assert ImageData.from_sitk(image.to_sitk()).same_grid(image, tol=1e-9)


def test_same_grid_tolerance_and_with_array() -> None:
    image = ImageData.from_array(np.zeros((4, 5)), spacing=(2.0, 2.0), origin=(1.0, 1.0))
    assert image.same_grid(ImageData.from_array(np.ones((4, 5, 3)), spacing=(2.0, 2.0), origin=(1.0, 1.00001)))
    assert not image.same_grid(ImageData.from_array(np.zeros((4, 5)), spacing=(2.0, 2.0), origin=(1.0, 1.1)))
    assert not image.same_grid(ImageData.from_array(np.zeros((4, 6)), spacing=(2.0, 2.0), origin=(1.0, 1.0)))
    colour = image.with_array(np.zeros((4, 5, 3)))
    assert colour.rgb and colour.same_grid(image) and colour.has_geometry
    with pytest.raises(InputError, match="resample it"):
        image.with_array(np.zeros((5, 4)))


# ---------------------------------------------------------------------- resampling
def cube_volume(shape, spacing, origin, direction, centre, half, background=0.0, value=1000.0, dtype=np.float32):
    """A volume with a bright cube of half-width ``half`` mm around the physical point ``centre``."""
    grid = ImageData.from_array(np.zeros(shape), spacing=spacing, origin=origin, direction=direction)
    indices = np.indices(shape).reshape(3, -1)
    points = (grid.index_to_world_affine() @ np.r_[indices, np.ones((1, indices.shape[1]))])[:-1]
    inside = np.all(np.abs(points.T - centre) <= half, axis=1).reshape(shape)
    return grid.with_array(np.where(inside, value, background).astype(dtype))


def test_pet_at_2mm_lands_on_the_mri_grid_at_1mm() -> None:
    centre, half = np.array([12.0, -8.0, 20.0]), 5.0
    pet = cube_volume((24, 24, 24), (2.0, 2.0, 2.0), (-10, -30, -5), np.eye(3), centre, half)
    mri = ImageData.from_array(np.zeros((40, 44, 48), np.int16), spacing=(1.0, 1.0, 1.0), origin=(-8, -28, 0),
                               direction=rotation(20, 0, 0))
    pet_before = pet.array.copy()
    on_mri = resample_to(pet, mri)
    assert on_mri.same_grid(mri) and on_mri.array.shape == mri.shape and on_mri.array.dtype == np.float32
    bright = on_mri.array > 500
    np.testing.assert_allclose(physical_centroid(on_mri, bright), centre, atol=0.5)
    assert bright.sum() == pytest.approx((2 * half) ** 3, rel=0.25)  # 1 mm voxels: the cube's volume in mm^3
    np.testing.assert_array_equal(pet.array, pet_before)


def test_outside_values_are_the_minimum_or_the_given_fill() -> None:
    ct = cube_volume((10, 10, 10), (2, 2, 2), (0, 0, 0), np.eye(3), np.array([10, 10, 10]), 4,
                     background=-1000, dtype=np.int16)
    larger = ImageData.from_array(np.zeros((30, 30, 30)), spacing=(1, 1, 1), origin=(-5, -5, -5))
    outside = (0, 0, 0)
    assert resample_to(ct, larger).array[outside] == -1000
    assert resample_to(ct, larger, fill=0).array[outside] == 0
    assert resample_to(ct, larger).array.dtype == np.int16


def test_colour_is_resampled_per_channel() -> None:
    y, x = np.mgrid[0:16, 0:20]
    rgb = np.stack([x * 12, y * 15, np.full_like(x, 77)], axis=-1).astype(np.uint8)
    moving = ImageData.from_array(rgb, spacing=(2.0, 2.0), origin=(0.5, -1.0))
    reference = ImageData.from_array(np.zeros((25, 30)), spacing=(1.0, 1.0), origin=(2.0, 1.0),
                                     direction=rotation2d(10))
    out = resample_to(moving, reference, fill=0)
    assert out.rgb and out.array.shape == (25, 30, 3) and out.array.dtype == np.uint8
    for c in range(3):
        alone = resample_to(moving.with_array(rgb[..., c]), reference, fill=0)
        np.testing.assert_array_equal(out.array[..., c], alone.array)
    inside = out.array[..., 2] > 0
    assert inside.mean() > 0.5 and np.all(out.array[..., 2][inside] == 77)


def test_nearest_keeps_labels_and_bad_arguments_are_refused() -> None:
    labels = ImageData.from_array(RNG.integers(0, 4, (6, 7, 8)).astype(np.uint8), spacing=(2, 2, 2))
    fine = ImageData.from_array(np.zeros((12, 14, 16)), spacing=(1, 1, 1), origin=(0.3, 0.2, 0.1))
    assert set(np.unique(resample_to(labels, fine, "nearest").array)) <= {0, 1, 2, 3}
    with pytest.raises(InputError, match="Unknown interpolation 'cubic'"):
        resample_to(labels, fine, "cubic")
    with pytest.raises(InputError, match="3-D and 2-D"):
        resample_to(labels, ImageData.from_array(np.zeros((4, 4))))


# ---------------------------------------------------------------------- registration
def phantom(shape=(40, 40, 40), spacing=2.0) -> ImageData:
    """Smooth, asymmetric blobs: something a rigid registration can lock onto."""
    grid = np.indices(shape).astype(float)
    data = np.zeros(shape)
    for centre, width, weight in [((12, 20, 14), 4, 1.0), ((26, 14, 24), 6, 0.7), ((20, 28, 28), 3, 1.3),
                                  ((20, 20, 20), 12, 0.4)]:
        data += weight * np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * width**2))
    return ImageData.from_array(data.astype(np.float32), spacing=(spacing,) * 3, origin=(-40, -40, -40))


def test_rigid_registration_recovers_a_known_rotation_and_translation() -> None:
    fixed = phantom()
    truth = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.06, -0.04, 0.08, (3.0, -2.0, 4.0))
    # the moving image is fixed seen through `truth`, with inverted contrast (a second "modality")
    moving = resample_to(fixed, fixed, transform=truth.GetInverse(), fill=0)
    moving = moving.with_array(1.5 - moving.array)
    before = (fixed.array.copy(), moving.array.copy())
    found = register_rigid(fixed, moving)
    points = [(0.0, 0.0, 0.0), (20.0, -15.0, 10.0), (-20.0, 20.0, -20.0), (15.0, 15.0, 15.0)]
    errors = [np.linalg.norm(np.array(found.TransformPoint(p)) - truth.TransformPoint(p)) for p in points]
    assert max(errors) < 1.0, errors  # mm, with 2 mm voxels
    np.testing.assert_array_equal(fixed.array, before[0])
    np.testing.assert_array_equal(moving.array, before[1])
    inner = (slice(8, 32),) * 3  # away from the corners that the motion pushed out of the field of view

    def correlation(image: ImageData) -> float:
        return float(np.corrcoef(image.array[inner].ravel(), fixed.array[inner].ravel())[0, 1])

    aligned = match_grids(fixed, moving, register=True)
    assert aligned.same_grid(fixed)
    assert correlation(moving) > -0.9 and correlation(aligned) < -0.995


def test_rigid_registration_in_2d() -> None:
    y, x = np.mgrid[0:64, 0:64].astype(float)
    blobs = np.exp(-((y - 20) ** 2 + (x - 36) ** 2) / 50) + 0.6 * np.exp(-((y - 42) ** 2 + (x - 22) ** 2) / 120)
    fixed = ImageData.from_array(blobs.astype(np.float32), spacing=(1.0, 1.0), origin=(-32, -32))
    truth = sitk.Euler2DTransform((0.0, 0.0), 0.1, (2.5, -1.5))
    moving = resample_to(fixed, fixed, transform=truth.GetInverse(), fill=0)
    found = register_rigid(fixed, moving)
    assert isinstance(found, sitk.Euler2DTransform)
    for point in [(0.0, 0.0), (15.0, -10.0), (-12.0, 14.0)]:
        np.testing.assert_allclose(found.TransformPoint(point), truth.TransformPoint(point), atol=0.5)


def test_registering_a_constant_image_is_refused() -> None:
    with pytest.raises(InputError, match="constant image"):
        register_rigid(phantom(), phantom().with_array(np.zeros((40, 40, 40))))


# ---------------------------------------------------------------------- match_grids
def test_match_grids_returns_b_itself_on_the_same_grid() -> None:
    a = ImageData.from_array(np.zeros((4, 5, 6)), spacing=(2, 1, 1))
    b = ImageData.from_array(np.ones((4, 5, 6)), spacing=(2, 1, 1))
    assert match_grids(a, b) is b


def test_match_grids_resamples_when_geometry_differs() -> None:
    centre = np.array([10.0, 10.0, 10.0])
    a = ImageData.from_array(np.zeros((30, 30, 30)), spacing=(1, 1, 1))
    b = cube_volume((15, 15, 15), (2, 2, 2), (0, 0, 0), np.eye(3), centre, 4)
    out = match_grids(a, b)
    assert out.same_grid(a) and out.has_geometry
    np.testing.assert_allclose(physical_centroid(out, out.array > 500), centre, atol=0.5)


def test_plain_arrays_of_different_shape_need_geometry() -> None:
    a, b = ImageData.from_array(np.zeros((8, 8))), ImageData.from_array(np.zeros((16, 16)))
    with pytest.raises(InputError, match=r"shapes differ \(\(8, 8\) and \(16, 16\)\) and neither image carries"):
        match_grids(a, b)
    with_geometry = ImageData.from_array(np.zeros((8, 8)), spacing=(0.5, 0.5))
    with pytest.raises(InputError, match="one image lacks physical geometry"):
        match_grids(with_geometry, b)
    with pytest.raises(InputError, match="2-D and 3-D"):
        match_grids(a, ImageData.from_array(np.zeros((2, 8, 8))))


def test_a_plain_array_of_the_same_shape_takes_the_references_grid() -> None:
    a = ImageData.from_array(np.zeros((6, 7)), spacing=(0.5, 0.8), origin=(3, 4), direction=rotation2d(15))
    data = RNG.random((6, 7, 3))
    out = match_grids(a, ImageData.from_array(data))
    assert out.same_grid(a) and out.rgb and out.has_geometry
    np.testing.assert_array_equal(out.array, data)
