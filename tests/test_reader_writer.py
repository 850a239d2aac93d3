"""The npe2 reader and writer through a real viewer: physical geometry survives open -> layer -> save -> read."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_upfusion import ImageData, read_image
from napari_upfusion.errors import InputError
from napari_upfusion.plugin.reader import get_reader

PLUGIN = "napari-upfusion"
RNG = np.random.default_rng(7)


def axis_aligned_nifti(path: Path) -> Path:
    """A NIfTI with anisotropic voxels and an offset origin (RAS affine, axis-aligned)."""
    data = RNG.random((9, 7, 5)).astype(np.float32)  # (i, j, k)
    affine = np.array([[0.8, 0, 0, -30.0], [0, 1.25, 0, 12.5], [0, 0, 3.0, 41.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def oblique_mha(path: Path) -> Path:
    """A MetaImage whose axes are rotated (needs napari's affine, not just scale and translate)."""
    image = sitk.GetImageFromArray(RNG.random((4, 6, 8)).astype(np.float32))
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    c, s = np.cos(0.4), np.sin(0.4)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    return path


def assert_layer_placed_like(layer, image: ImageData) -> None:
    """napari draws every voxel where the file puts it (checked at the corners and one inner voxel)."""
    np.testing.assert_allclose(layer.scale, image.spacing)
    corners = [np.array(c) * (np.array(image.shape) - 1) for c in np.ndindex(2, 2, 2)] + [np.array([1, 2, 3])]
    for index in corners:
        world = (image.index_to_world_affine() @ [*index, 1])[:3]
        np.testing.assert_allclose(layer.data_to_world(index), world, atol=1e-6)


def assert_same_geometry(a: ImageData, b: ImageData) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.index_to_world_affine(), b.index_to_world_affine(), atol=1e-5)


def test_get_reader_declines_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no DICOM here")
    assert get_reader(str(tmp_path / "photo.png")) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader(str(tmp_path / "notes")) is None
    assert get_reader(str(axis_aligned_nifti(tmp_path / "ok.nii.gz"))) is not None


def test_nifti_opens_in_physical_space_and_saves_back(make_napari_viewer, tmp_path: Path) -> None:
    source = axis_aligned_nifti(tmp_path / "head.nii.gz")
    expected = read_image(source)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(source), plugin=PLUGIN)
    assert layer.name == "head"
    assert_layer_placed_like(layer, expected)
    np.testing.assert_array_equal(layer.data, expected.array)
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert layer.metadata["format"] == "NIfTI" and layer.metadata["path"] == str(source)

    target = tmp_path / "saved.nii.gz"
    written = viewer.layers.save(str(target), selected=False, plugin=PLUGIN)
    assert written == [str(target)]
    again = read_image(target)
    assert_same_geometry(again, expected)
    np.testing.assert_array_equal(again.array, expected.array)
    # the world affine on disk is the one we wrote, in RAS
    np.testing.assert_allclose(nib.load(target).affine, nib.load(source).affine, atol=1e-5)


def test_oblique_mha_round_trip_keeps_direction(make_napari_viewer, tmp_path: Path) -> None:
    source = oblique_mha(tmp_path / "oblique.mha")
    expected = read_image(source)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(source), plugin=PLUGIN)
    assert not np.allclose(layer.affine.affine_matrix, np.eye(4)), "a rotated image needs the layer affine"
    assert_layer_placed_like(layer, expected)

    for name in ("back.nii.gz", "back.mha"):
        viewer.layers.save(str(tmp_path / name), selected=False, plugin=PLUGIN)
        again = read_image(tmp_path / name)
        assert_same_geometry(again, expected)
        np.testing.assert_array_equal(again.array, expected.array)


def test_dicom_folder_opens_as_one_volume(make_napari_viewer, tmp_path: Path) -> None:
    volume = sitk.GetImageFromArray((RNG.random((3, 6, 8)) * 1000).astype(np.int16))
    volume.SetSpacing((0.7, 0.7, 2.5))
    volume.SetOrigin((-5.0, 7.0, 11.0))
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        piece = volume[:, :, k]
        for tag, value in {
            "0020|000d": "1.2.3.4",
            "0020|000e": "1.2.3.4.5",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
        }.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k}.dcm"))
        writer.Execute(piece)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin=PLUGIN)
    assert layer.data.shape == (3, 6, 8) and layer.metadata["format"] == "DICOM"
    # an axis-aligned DICOM series needs no affine: scale is the spacing, translate the origin (array order)
    np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.7))
    np.testing.assert_allclose(layer.translate, (11.0, 7.0, -5.0))
    np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))


def test_writer_refuses_colour_nifti_with_one_sentence(tmp_path: Path) -> None:
    from napari_upfusion.plugin.writer import write_image_layer

    rgb = RNG.random((5, 6, 3)).astype(np.float32)
    with pytest.raises(InputError, match="NIfTI cannot hold this colour image"):
        write_image_layer(str(tmp_path / "rgb.nii.gz"), rgb, {"rgb": True, "scale": (1.0, 1.0)})
    assert list(tmp_path.iterdir()) == []


def test_writer_of_a_plain_layer_writes_unit_geometry(tmp_path: Path) -> None:
    """A layer made from a bare array (default transform) is written with 1 mm voxels at the origin."""
    from napari_upfusion.plugin.writer import write_image_layer

    data = RNG.random((4, 5, 6)).astype(np.float32)
    (path,) = write_image_layer(str(tmp_path / "plain.nii"), data, {"rgb": False})
    again = read_image(path)
    assert again.spacing == (1.0, 1.0, 1.0) and again.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(again.array, data)
