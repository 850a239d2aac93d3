"""Reading and writing images with their geometry, on real files made here."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from scipy.spatial.transform import Rotation

from napari_upfusion.engine.image import ImageData
from napari_upfusion.engine.io import formats, read_image, staging, write_image
from napari_upfusion.errors import InputError

RNG = np.random.default_rng(0)


def oblique_ras_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix() @ np.diag([0.9, 1.8, 2.9])
    affine[:3, 3] = [10.5, -20.25, 5.0]
    return affine


def oblique_sitk(shape_xyz: tuple[int, int, int] = (7, 6, 5)) -> sitk.Image:
    """An int16 volume with anisotropic spacing and a rotated direction, made with SimpleITK alone."""
    image = sitk.GetImageFromArray(RNG.integers(-1000, 3000, size=shape_xyz[::-1]).astype(np.int16))
    image.SetSpacing((0.7, 1.1, 2.5))
    image.SetOrigin((-12.0, 30.5, 7.25))
    image.SetDirection(Rotation.from_euler("zyx", [30, 15, -5], degrees=True).as_matrix().ravel().tolist())
    return image


def files_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


# ---------------------------------------------------------------------- NIfTI
@pytest.fixture
def nifti_path(tmp_path: Path) -> Path:
    data = RNG.random((5, 6, 7), dtype=np.float32)
    nifti = nib.Nifti1Image(data, oblique_ras_affine())
    nifti.set_qform(oblique_ras_affine(), 1)
    nifti.set_sform(oblique_ras_affine(), 1)
    nifti.header["descrip"] = b"made by test_io"
    nifti.header.set_xyzt_units("mm", "sec")
    path = tmp_path / "mri.nii.gz"
    nib.save(nifti, path)
    return path


def test_nifti_is_read_in_array_order_with_lps_geometry(nifti_path: Path) -> None:
    image = read_image(nifti_path, modality="MRI")
    nifti = nib.load(nifti_path)
    data = nifti.get_fdata()
    assert image.shape == (7, 6, 5) and image.has_geometry and not image.rgb
    np.testing.assert_array_equal(image.array, data.transpose(2, 1, 0))
    # voxel (i, j, k) in RAS is index (k, j, i) in reversed LPS
    i, j, k = 4, 2, 6
    x, y, z, _ = nifti.affine @ [i, j, k, 1]
    np.testing.assert_allclose(image.index_to_world_affine() @ [k, j, i, 1], [z, -y, -x, 1], atol=1e-9)
    assert image.metadata == {"path": str(nifti_path), "format": "NIfTI", "modality": "MRI"}


def test_nifti_geometry_agrees_with_simpleitks_reader(nifti_path: Path) -> None:
    ours = read_image(nifti_path)
    theirs = ImageData.from_sitk(sitk.ReadImage(str(nifti_path)))
    assert ours.same_grid(theirs, tol=1e-5)
    np.testing.assert_array_equal(ours.array, theirs.array)


def test_nifti_round_trip_keeps_array_affine_and_header(nifti_path: Path, tmp_path: Path) -> None:
    image = read_image(nifti_path)
    out = write_image(image, tmp_path / "copy.nii.gz")
    again, original, written = read_image(out), nib.load(nifti_path), nib.load(out)
    np.testing.assert_array_equal(again.array, image.array)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)
    np.testing.assert_allclose(again.index_to_world_affine(), image.index_to_world_affine(), atol=1e-6)
    assert written.header["descrip"] == original.header["descrip"]
    assert written.header.get_xyzt_units() == ("mm", "sec")
    assert written.header["sform_code"] == 1 and written.header["qform_code"] == 1


def test_float64_is_written_as_float32_and_4d_singleton_is_dropped(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(RNG.random((4, 5, 6, 1)), np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "a.nii")
    image = read_image(tmp_path / "a.nii")
    assert image.shape == (6, 5, 4) and image.spacing == (3.0, 2.0, 2.0)
    write_image(image, tmp_path / "b.nii")
    assert nib.load(tmp_path / "b.nii").get_data_dtype() == np.float32


def test_rgb24_nifti_is_read_as_colour(tmp_path: Path) -> None:
    data = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    data["R"], data["G"], data["B"] = 1, np.arange(6), 200
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "rgb.nii.gz")
    image = read_image(tmp_path / "rgb.nii.gz")
    assert image.rgb and image.shape == (6, 5, 4) and image.spacing == (4.0, 3.0, 2.0)
    np.testing.assert_array_equal(image.array[:, 2, 3], np.c_[np.ones(6), np.arange(6), np.full(6, 200)])


def test_2d_image_written_to_nifti_is_a_one_slice_volume(tmp_path: Path) -> None:
    image = ImageData.from_array(RNG.random((6, 8)).astype(np.float32), spacing=(0.5, 0.25), origin=(3.0, -4.0))
    again = read_image(write_image(image, tmp_path / "slice.nii.gz"))
    assert again.shape == (1, 6, 8) and again.spacing[1:] == pytest.approx(image.spacing)
    assert again.origin[1:] == pytest.approx(image.origin)
    np.testing.assert_array_equal(again.array[0], image.array)


# ---------------------------------------------------------------------- SimpleITK formats
@pytest.mark.parametrize("extension", [".mha", ".nrrd", ".mhd"])
def test_sitk_formats_keep_oblique_geometry(tmp_path: Path, extension: str) -> None:
    source = oblique_sitk()
    sitk.WriteImage(source, str(tmp_path / f"in{extension}"))
    image = read_image(tmp_path / f"in{extension}")
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(source))
    assert image.spacing == pytest.approx(source.GetSpacing()[::-1])
    i, j, k = 3, 5, 2
    physical = source.TransformIndexToPhysicalPoint((i, j, k))
    np.testing.assert_allclose(image.index_to_world_affine() @ [k, j, i, 1], [*physical[::-1], 1], atol=1e-9)

    (tmp_path / "out").mkdir()
    written = sitk.ReadImage(str(write_image(image, tmp_path / "out" / f"copy{extension}")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(source))
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(written, getter)(), getattr(source, getter)(), atol=1e-9)
    expected = {"copy.mhd", "copy.zraw"} if extension == ".mhd" else {f"copy{extension}"}
    assert files_in(tmp_path / "out") == expected


def test_colour_float64_goes_to_mha_as_float32_vector(tmp_path: Path) -> None:
    image = ImageData.from_array(RNG.random((5, 7, 3)), spacing=(0.5, 2.0), rgb=True)
    written = sitk.ReadImage(str(write_image(image, tmp_path / "rgb.mha")))
    assert written.GetNumberOfComponentsPerPixel() == 3 and written.GetSpacing() == (2.0, 0.5)
    assert written.GetPixelID() == sitk.sitkVectorFloat32
    again = read_image(tmp_path / "rgb.mha")
    assert again.rgb and again.shape == (5, 7)
    np.testing.assert_array_equal(again.array, image.array.astype(np.float32))


# ---------------------------------------------------------------------- DICOM
def write_dicom_series(volume: sitk.Image, folder: Path, series: int = 2) -> None:
    """The way SimpleITK's examples write a series: one file per slice with its position tags."""
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = volume.GetDirection()
    tags = {
        "0008|0060": "CT",
        "0008|0021": "20240101",
        "0008|0031": "120000",
        "0010|0010": "Test^Phantom",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": f"1.2.826.0.1.3680043.2.1125.1.{series}",
        "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": str(volume.GetSpacing()[2]),
    }
    for k in range(volume.GetDepth()):
        piece = volume[:, :, k]
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0020|0032", "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))))
        piece.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"series{series}-slice{k:03d}.dcm"))
        writer.Execute(piece)


@pytest.fixture
def dicom_folder(tmp_path: Path) -> tuple[Path, sitk.Image]:
    volume = oblique_sitk((8, 6, 4))
    write_dicom_series(volume, tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not a DICOM file")
    return tmp_path / "series", volume


def test_dicom_series_folder_keeps_geometry(dicom_folder: tuple[Path, sitk.Image]) -> None:
    folder, volume = dicom_folder
    image = read_image(folder)
    expected = ImageData.from_sitk(volume)
    assert image.same_grid(expected, tol=1e-4)
    np.testing.assert_array_equal(image.array, expected.array)
    assert image.metadata["format"] == "DICOM" and image.metadata["dicom_series_in_folder"] == 1


def test_a_folder_of_several_series_is_refused_with_their_list(dicom_folder: tuple[Path, sitk.Image]) -> None:
    """Never the larger series silently (issue 17): both are named, with their number of files."""
    folder, _ = dicom_folder
    write_dicom_series(oblique_sitk((8, 6, 2)), folder, series=3)
    with pytest.raises(InputError, match=r"holds 2 DICOM series \(1\.2\.826\.0\.1\.3680043\.2\.1125\.1\.2 \(4 files\); "
                       r"1\.2\.826\.0\.1\.3680043\.2\.1125\.1\.3 \(2 files\)\); put each series in a folder of its own"):
        read_image(folder)


def test_single_dicom_file_with_and_without_extension(dicom_folder: tuple[Path, sitk.Image]) -> None:
    folder, volume = dicom_folder
    first = read_image(folder / "series2-slice000.dcm")
    assert first.shape == (1, 6, 8)
    np.testing.assert_array_equal(first.array[0], sitk.GetArrayFromImage(volume)[0])
    (folder / "IM0001").write_bytes((folder / "series2-slice000.dcm").read_bytes())
    np.testing.assert_array_equal(read_image(folder / "IM0001").array, first.array)


# ---------------------------------------------------------------------- PNG, TIFF, JPEG
PLAIN_CASES = [
    ("grey8.png", np.uint8, (20, 30)),
    ("grey16.png", np.uint16, (20, 30)),
    ("rgb8.png", np.uint8, (20, 30, 3)),
    ("rgba8.png", np.uint8, (20, 30, 4)),
    ("grey16.tif", np.uint16, (20, 30)),
    ("rgb16.tiff", np.uint16, (20, 30, 3)),
    ("stack8.tif", np.uint8, (4, 20, 30)),
]


@pytest.mark.parametrize(("name", "dtype", "shape"), PLAIN_CASES)
def test_plain_formats_round_trip_exactly(tmp_path: Path, name: str, dtype: type, shape: tuple[int, ...]) -> None:
    data = RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    image = ImageData.from_array(data, rgb=shape[-1] in (3, 4))
    again = read_image(write_image(image, tmp_path / name))
    assert again.rgb == image.rgb and not again.has_geometry and again.spacing == (1.0,) * again.ndim
    assert again.array.dtype == dtype
    np.testing.assert_array_equal(again.array, data)


def test_files_written_by_other_tools_are_read(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("a.png", "planar.tif"):
        image = read_image(tmp_path / name)
        assert image.rgb and image.shape == (10, 12)
        np.testing.assert_array_equal(image.array, rgb)


def test_jpeg_is_lossy_but_close(tmp_path: Path) -> None:
    y, x = np.mgrid[0:32, 0:48]
    data = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)
    again = read_image(write_image(ImageData.from_array(data), tmp_path / "a.jpg"))
    assert again.rgb and again.shape == (32, 48)
    assert np.abs(again.array.astype(int) - data).mean() < 3


def test_float_in_unit_range_becomes_rounded_8bit(tmp_path: Path) -> None:
    data = RNG.random((9, 11), dtype=np.float32)
    data[0, :3] = [0.0, 1.0, 0.5 / 255]
    for name in ("f.png", "f.tif"):
        stored = read_image(write_image(ImageData.from_array(data), tmp_path / name)).array
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, np.round(np.clip(data, 0, 1) * 255).astype(np.uint8))


def test_float_outside_unit_range_stays_float_in_tiff(tmp_path: Path) -> None:
    data = RNG.normal(100, 50, (9, 11))
    stored = read_image(write_image(ImageData.from_array(data), tmp_path / "f.tif")).array
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, data.astype(np.float32))


# ---------------------------------------------------------------------- atomic writes, overwrite, inputs untouched
def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    image = ImageData.from_array(np.zeros((4, 4), np.uint8))
    target = tmp_path / "a.png"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError, match=r"--force \(overwrite=True\)"):
        write_image(image, target)
    assert target.read_bytes() == b"keep me"
    write_image(image, target, overwrite=True)
    np.testing.assert_array_equal(read_image(target).array, image.array)
    assert files_in(tmp_path) == {"a.png"}


def test_failing_writer_leaves_nothing_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    def broken(image: ImageData, path: Path) -> None:
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(formats.FORMATS, "NIfTI", replace(formats.FORMATS["NIfTI"], write=broken))
    image = ImageData.from_array(np.ones((3, 4, 5), np.float32), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="nothing was written"):
        write_image(image, tmp_path / "new.nii.gz")
    assert files_in(tmp_path) == set()
    (tmp_path / "old.nii.gz").write_bytes(b"previous result")
    with pytest.raises(InputError):
        write_image(image, tmp_path / "old.nii.gz", overwrite=True)
    assert files_in(tmp_path) == {"old.nii.gz"} and (tmp_path / "old.nii.gz").read_bytes() == b"previous result"


@pytest.mark.parametrize(
    ("name", "array", "rgb", "message"),
    [
        ("colour.nii.gz", np.zeros((4, 5, 3), np.uint8), True, "NIfTI cannot hold this colour image"),
        ("volume.png", np.zeros((3, 4, 5), np.uint8), False, "single 2-D image"),
        ("alpha.jpg", np.zeros((4, 5, 4), np.uint8), True, "transparency"),
        ("wide.png", np.full((4, 5), 70000, np.int32), False, "8 or 16-bit"),
        ("deep.png", np.full((4, 5, 3), 300, np.uint16), True, "only 8-bit"),
        ("hot.png", np.full((4, 5), 1.5), False, r"outside \[0, 1\]"),
        ("series.dcm", np.zeros((4, 5), np.uint8), False, "format=.dicom. .--format dicom. instead of series.dcm"),
    ],
)
def test_data_a_format_cannot_hold_is_refused_and_nothing_is_left(
    tmp_path: Path, name: str, array: np.ndarray, rgb: bool, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        write_image(ImageData.from_array(array, rgb=rgb), tmp_path / name)
    assert files_in(tmp_path) == set()


def test_writing_into_a_missing_or_unwritable_folder(tmp_path: Path) -> None:
    image = ImageData.from_array(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="does not exist"):
        write_image(image, tmp_path / "missing" / "a.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file is a file, not a folder; choose another output path"):
        write_image(image, tmp_path / "file" / "a.png")


def test_a_folder_that_refuses_the_temporary_file_is_reported(tmp_path: Path, monkeypatch) -> None:
    def refuse(**kwargs) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(staging.tempfile, "mkdtemp", refuse)
    with pytest.raises(InputError, match=r"Permission to use .* was refused; choose a file or folder you may use"):
        write_image(ImageData.from_array(np.zeros((4, 4), np.uint8)), tmp_path / "a.png")
    assert files_in(tmp_path) == set()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="Cannot write in"):
            write_image(ImageData.from_array(np.zeros((4, 4), np.uint8)), folder / "a.png")
        assert files_in(folder) == set()
    finally:
        folder.chmod(0o700)


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    data = RNG.random((6, 7, 8)) * 3  # float64 beyond [0, 1]: converted on the way out
    before = data.copy()
    image = ImageData.from_array(data, spacing=(1.0, 2.0, 3.0))
    assert not image.array.flags.writeable and data.flags.writeable
    for name in ("a.nii.gz", "a.mha", "a.tif"):
        write_image(image, tmp_path / name)
    np.testing.assert_array_equal(data, before)
    assert image.array.dtype == np.float64


# ---------------------------------------------------------------------- bad input when reading
def test_bad_paths_and_files_get_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "text.nii.gz").write_text("hello")
    (tmp_path / "text.mha").write_text("hello")
    (tmp_path / "notes.xyz").write_text("hello")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "time.nii.gz")
    cases = {
        "missing.nii.gz": "does not exist",
        "empty": "holds no DICOM series",
        "text.png": "not a readable PNG image",
        "text.nii.gz": "not a readable NIfTI image",
        "text.mha": "not a readable MetaImage image",
        "notes.xyz": "extension this tool does not know",
        "time.nii.gz": "extract a single 3-D volume",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as caught:
            read_image(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_an_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C (or a killed worker thread) in the middle of writing: no half-written output, old file intact."""

    def interrupted(image: ImageData, path: Path) -> None:
        path.write_bytes(b"the first half of a volume")
        raise KeyboardInterrupt

    monkeypatch.setitem(formats.FORMATS, "NIfTI", replace(formats.FORMATS["NIfTI"], write=interrupted))
    image = ImageData.from_array(np.ones((3, 4, 5), np.float32), spacing=(1, 1, 1))
    with pytest.raises(KeyboardInterrupt):
        write_image(image, tmp_path / "fused.nii.gz")
    assert files_in(tmp_path) == set()
    (tmp_path / "fused.nii.gz").write_bytes(b"previous result")
    with pytest.raises(KeyboardInterrupt):
        write_image(image, tmp_path / "fused.nii.gz", overwrite=True)
    assert files_in(tmp_path) == {"fused.nii.gz"} and (tmp_path / "fused.nii.gz").read_bytes() == b"previous result"
