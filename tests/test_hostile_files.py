"""Issue 17, classes 4, 5, 8 and 9: files whose headers lie or ask too much, geometry that would be silently wrong,
results that are not images, options that are not numbers; each refused (or warned about) in one sentence, before
the work it would waste."""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch
from hostile import RNG, nifti, pair, refused, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_io import oblique_sitk, write_dicom_series
from torch import nn

import napari_upfusion.engine.api as engine_api
from napari_upfusion.batch.cohort import run_cohort
from napari_upfusion.cli import main
from napari_upfusion.engine import validate
from napari_upfusion.engine.api import FusionEngine
from napari_upfusion.engine.image import ImageData
from napari_upfusion.engine.io import read_image, write_image
from napari_upfusion.engine.runner import SliceRunner
from napari_upfusion.errors import CheckpointError, InputError, InputWarning, ResultError, UPFusionError
from napari_upfusion.model.checkpoint import io as checkpoint_io


def _no_model(monkeypatch) -> None:
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks refused")

    monkeypatch.setattr(engine_api, "get_engine", loaded)


def _no_pixels(monkeypatch) -> None:
    """Make reading NIfTI pixel data fail loudly: a refusal that comes first came from the header alone."""

    def read(*args, **kwargs):
        raise AssertionError("pixel data was read before the header was checked")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", read)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", read)


# ---------------------------------------------------------------------- class 5: work before checks
def _header_only_nifti(path: Path, shape: tuple[int, ...], data_bytes: int) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * data_bytes)
    return path


def test_a_truncated_nifti_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    """The issue's file: a header that claims 2000 x 2000 x 500 over 1 MB of data."""
    cut = _header_only_nifti(tmp_path / "cut.nii", (2000, 2000, 500), 1 << 20)
    _, b = pair(tmp_path)
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match=r"cut\.nii is truncated: its header declares 2000 x 2000 x 500 values "
                       r"\(4,000,000,000 bytes\) but the file holds only 1,048,576 bytes of data; copy it again\."):
        read_image(cut)
    _no_model(monkeypatch)
    refused(["fuse", cut, b, "-o", tmp_path / "f.nii.gz"], capsys, r"cut\.nii is truncated", tmp_path)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_pipe_or_device_is_refused_before_it_is_opened(tmp_path, capsys, monkeypatch, special):
    """Opening a named pipe blocks until something writes to it, and a device never ends: neither is read."""
    if special == "fifo":
        (tmp_path / "pipe").mkdir()
        special = tmp_path / "pipe" / "a.nii.gz"
        os.mkfifo(special)
    _, b = pair(tmp_path / "in")
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"is not a regular file \(a named pipe, device or socket cannot be read"):
        read_image(special)
    _no_model(monkeypatch)
    refused(["fuse", special, b, "-o", tmp_path / "out" / "f.nii.gz"], capsys, r"is not a regular file", tmp_path / "in")


@pytest.mark.parametrize(
    "suffix, key, target, message",
    [
        (".mhd", "ElementDataFile = ", "pipe.raw", r"keeps its pixels in pipe\.raw, which is not a regular file"),
        (".nhdr", "data file: ", "/dev/zero", r"keeps its pixels in /dev/zero, which is not a regular file"),
        (".mhd", "ElementDataFile = ", "gone.raw", r"keeps its pixels in gone\.raw, which does not exist; copy that"),
    ],
)
def test_a_detached_header_must_name_a_regular_data_file(tmp_path, capsys, monkeypatch, suffix, key, target, message):
    """A ``.mhd`` whose data file is a named pipe used to block for ever; one whose data is ``/dev/zero`` read a
    device."""
    folder = tmp_path / "header"
    folder.mkdir()
    os.mkfifo(folder / "pipe.raw")
    lines = (["ObjectType = Image", "NDims = 3", "DimSize = 8 8 4", "ElementType = MET_FLOAT"] if suffix == ".mhd"
             else ["NRRD0004", "type: float", "dimension: 3", "sizes: 8 8 4", "encoding: raw"])  # fmt: skip
    header = folder / f"a{suffix}"
    header.write_text("\n".join([*lines, key + target]) + "\n")
    with pytest.raises(InputError, match=message):
        read_image(header)
    _, b = pair(tmp_path / "in")
    (tmp_path / "out").mkdir()
    _no_model(monkeypatch)
    refused(["fuse", header, b, "-o", tmp_path / "out" / "f.nii.gz"], capsys, message, tmp_path / "in")


def test_a_png_that_claims_a_billion_pixels_is_one_sentence(tmp_path):
    """A 0.9 MB PNG declaring 30000 x 30000 pixels: Pillow's decompression-bomb error used to be called "not a
    readable PNG image"."""
    row = b"\0" * 30001
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(30000)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))  # fmt: skip
    with pytest.raises(InputError, match=r"bomb\.png declares more than \d+ megapixels, which Pillow refuses to decode"):
        read_image(bomb)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999))
def test_any_cut_of_a_nifti_file_is_one_sentence(tmp_path_factory, fraction):
    folder = tmp_path_factory.mktemp("cut")
    whole = nifti(folder / "whole.nii", (RNG.random((20, 18, 6)) * 900).astype(np.int16)).read_bytes()
    cut = folder / "cut.nii"
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    with pytest.raises(InputError, match=r"(is truncated|is not a readable NIfTI image)"):
        read_image(cut)


def test_a_volume_too_large_for_memory_is_refused_from_the_header(tmp_path, capsys, monkeypatch):
    """A small .nii.gz that expands to far more than free memory: refused from the declared size, never read."""
    big = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((256, 256, 128), np.int16), np.eye(4)), big)
    assert big.stat().st_size < 1 << 20
    _, b = pair(tmp_path)
    _no_pixels(monkeypatch)
    monkeypatch.setattr(validate, "free_host_bytes", lambda: 8 << 20)
    with pytest.raises(InputError, match=r"big\.nii\.gz declares a 128 x 256 x 256 int16 volume, which needs about "
                       r"0\.0 GiB of memory to read but only 0\.0 GiB are free"):
        read_image(big)
    _no_model(monkeypatch)
    monkeypatch.setattr(validate, "free_host_bytes", lambda: 64 << 20)
    refused(["fuse", big, b, "-o", tmp_path / "f.nii.gz"], capsys,
            r"Fusing this 128 x 256 x 256 volume needs about 0\.2 GiB of memory but only 0\.1 GiB are free", tmp_path)


def test_a_gzip_bomb_checkpoint_is_refused_by_its_expanded_size(tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.pth.gz"
    with gzip.open(bomb, "wb") as handle:
        for _ in range(8):
            handle.write(b"\x80\x02" + b"\0" * (1 << 20))
    monkeypatch.setattr(checkpoint_io, "MAX_DECOMPRESSED_BYTES", 4 << 20)
    with pytest.raises(CheckpointError, match=r"expands to more than 4 MiB when decompressed, more than any UP-Fusion "
                       r"checkpoint holds, so it was refused \(it may be a decompression bomb\)") as caught:
        checkpoint_io.read_checkpoint_file(bomb)
    assert "could run code" not in str(caught.value)
    a, b = pair(tmp_path)
    refused(["fuse", a, b, "-o", tmp_path / "f.nii.gz", "--checkpoint", bomb], capsys, r"decompression bomb", tmp_path)
    small = tmp_path / "zeros.pth.gz"
    with gzip.open(small, "wb") as handle:
        handle.write(b"\x80\x02" + b"\0" * 1000)
    with pytest.raises(CheckpointError, match=r"is not a weights file this tool can read safely"):
        checkpoint_io.read_checkpoint_file(small)


def test_an_output_that_cannot_hold_the_result_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    a, b = pair(tmp_path)
    _no_model(monkeypatch)
    refused(["fuse", a, b, "-o", tmp_path / "f.png"], capsys, r"PNG holds a single 2-D image, not a \(6, 36, 40\)",
            tmp_path)  # fmt: skip
    refused(["fuse", a, b, "-o", tmp_path / "f.unknown"], capsys, r"f\.unknown has an extension this tool cannot write",
            tmp_path)  # fmt: skip
    monkeypatch.undo()

    def ran(*args, **kwargs):
        raise AssertionError("the network ran before the output was checked")

    monkeypatch.setattr(SliceRunner, "run", ran)
    rgb, grey = tmp_path / "rgb.png", tmp_path / "grey.png"
    iio.imwrite(rgb, (RNG.random((32, 40, 3)) * 255).astype(np.uint8))
    iio.imwrite(grey, (RNG.random((32, 40)) * 255).astype(np.uint8))
    refused(["fuse", rgb, grey, "-o", tmp_path / "f.nii.gz", "--modalities", "VIS", "IR", "--model", "small"], capsys,
            r"NIfTI cannot hold this colour image; save f\.nii\.gz as \.mha", tmp_path)  # fmt: skip


# ---------------------------------------------------------------------- class 8: silently wrong geometry
def _volume(shape=(12, 16, 20), origin=(0.0, 0.0, 0.0), spacing=(2.0, 1.0, 1.0)) -> ImageData:
    return ImageData((RNG.random(shape) * 100 + 1).astype(np.float32), spacing=spacing, origin=origin)


@settings(max_examples=30, deadline=None)
@given(axis=st.integers(0, 2), shift=st.floats(-2.5, 2.5).filter(lambda s: abs(abs(s) - 1) > 0.02))
def test_fields_of_view_that_do_not_overlap_are_refused_and_partial_ones_warned(axis, shift):
    """b is a's grid moved by ``shift`` times a's extent along one axis: it covers 1 - |shift| of a."""
    a = _volume()
    origin = [0.0, 0.0, 0.0]
    origin[axis] = shift * a.shape[axis] * a.spacing[axis]
    b = _volume(origin=tuple(origin))
    covered = max(0.0, 1 - abs(shift))
    engine = FusionEngine("average")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if covered == 0:
            with pytest.raises(InputError, match=r"Inputs a and b do not overlap in space"):
                engine.fuse(a, b)
            return
        engine.fuse(a, b)
    said = [str(w.message) for w in seen if issubclass(w.category, InputWarning)]
    if covered < validate.PARTIAL_OVERLAP - 0.02:
        assert said and said[0].startswith(f"Input b covers only {covered:.0%} of input a's field of view")
    elif covered > validate.PARTIAL_OVERLAP + 0.02:
        assert not said


def test_a_sliver_of_overlap_is_not_called_zero_percent():
    """b touching a by 0.3% of a's extent used to be said to cover "only 0%" of a."""
    a = _volume()
    b = _volume(origin=(0.0, 0.0, 0.997 * a.shape[2] * a.spacing[2]))
    with pytest.warns(InputWarning, match=r"^Input b covers less than 1% of input a's field of view; outside it"):
        FusionEngine("average").fuse(a, b)


def test_a_2d_file_with_a_3d_volume_is_refused(tmp_path, capsys):
    a, b = pair(tmp_path)
    flat = nifti(tmp_path / "flat.nii.gz", (RNG.random((40, 36)) * 5).astype(np.float32))
    refused(["fuse", a, flat, "-o", tmp_path / "f.nii.gz", "--model", "average"], capsys,
            r"Input b is a single 2-D slice but input a is a volume of 6 x 36 x 40; give two 2-D images or two 3-D",
            tmp_path)  # fmt: skip
    refused(["fuse", flat, b, "-o", tmp_path / "f.nii.gz", "--model", "average"], capsys,
            r"Input a is a single 2-D slice but input b is a volume", tmp_path)  # fmt: skip


def _series_at(folder: Path, positions: list[float]) -> Path:
    """A DICOM series whose slice k lies at ``positions[k]`` mm along z and holds the value ``10 * position``."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, z in enumerate(positions):
        piece = sitk.GetImageFromArray(np.full((8, 10), round(10 * z), np.int16))
        piece.SetSpacing((0.5, 0.5))
        for tag, value in {
            "0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": f"-2\\3\\{z}", "0020|0013": str(k + 1), "0010|0010": "Test^Series",
        }.items():  # fmt: skip
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


def test_a_dicom_series_with_a_missing_slice_is_resampled_with_a_warning(tmp_path, capfd):
    volume = oblique_sitk((64, 48, 6))  # slices of 6 kB: pydicom reads their pixel data as a value, not raw
    write_dicom_series(volume, tmp_path / "series")
    (tmp_path / "series" / "series2-slice003.dcm").unlink()
    with pytest.warns(InputWarning, match=r"non-uniform slice spacing \(2\.5 to 5 mm; a slice may be missing\), so it "
                      r"was resampled onto a regular grid of 2\.5 mm along the slices"):
        image = read_image(tmp_path / "series")
    whole = ImageData.from_sitk(volume)
    assert image.shape == whole.shape and image.same_grid(whole, tol=1e-4)
    kept = [0, 1, 2, 4, 5]
    np.testing.assert_allclose(image.array[kept], whole.array[kept])
    np.testing.assert_allclose(image.array[3], (whole.array[2].astype(float) + whole.array[4]) / 2, atol=1e-3)
    assert "WARNING" not in capfd.readouterr().err  # ITK's own warning is not printed raw


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.sampled_from([1.0, 1.5, 2.0, 3.0]), min_size=2, max_size=6))
def test_any_uneven_series_is_put_on_a_regular_grid_at_the_true_positions(tmp_path_factory, steps):
    """Each slice holds 10 x its position, so linear interpolation along z gives 10 x the new positions exactly."""
    positions = [0.0, *np.cumsum(steps)]
    folder = _series_at(tmp_path_factory.mktemp("s") / "series", [float(p) for p in positions])
    spacing, span = min(steps), positions[-1]
    count = round(span / spacing) + 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if count > 4 * len(positions):
            with pytest.raises(InputError, match="too irregular"):
                read_image(folder)
            return
        image = read_image(folder)
    assert image.shape == (count, 8, 10) and image.spacing[0] == pytest.approx(spacing)
    np.testing.assert_allclose(image.array[:, 0, 0], 10 * spacing * np.arange(count), atol=1e-3)
    assert image.origin[0] == pytest.approx(0.0)
    uneven = len(set(steps)) > 1
    assert bool([w for w in seen if issubclass(w.category, InputWarning)]) == uneven


def test_dicom_slices_at_one_position_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"has all its 4 slices at one position, so it has no slice spacing"):
        read_image(_series_at(tmp_path / "flat", [5.0, 5.0, 5.0, 5.0]))
    with pytest.raises(InputError, match=r"has two slices at the same position \(2\.00 mm along the normal\)"):
        read_image(_series_at(tmp_path / "twice", [0.0, 1.0, 2.0, 2.0, 3.0]))


@pytest.mark.parametrize("components", [3, 4])
def test_float_vector_images_are_not_colour(tmp_path, components):
    vector = sitk.GetImageFromArray((RNG.random((4, 10, 12, components)) * 4 - 2).astype(np.float32), isVector=True)
    for name in ("field.mha", "field.nrrd"):
        sitk.WriteImage(vector, str(tmp_path / name))
        with pytest.raises(InputError, match=rf"holds {components} float32 values per voxel: a vector image, not RGB "
                           r"colour .*extract one component first"):
            read_image(tmp_path / name)
    rgb = sitk.GetImageFromArray((RNG.random((10, 12, 3)) * 255).astype(np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "photo.mha"))
    assert read_image(tmp_path / "photo.mha").rgb


def test_itk_prints_nothing_raw_for_a_broken_file(tmp_path, capfd):
    """MetaIO writes "MetaImage: M_Read: Error parsing file" straight to stderr; only our sentence remains."""
    (tmp_path / "broken.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 x\nElementType = MET_SHORT\n")
    with pytest.raises(InputError, match=r"broken\.mha is not a readable MetaImage image"):
        read_image(tmp_path / "broken.mha")
    assert capfd.readouterr().err == ""


def test_an_nrrd_list_axis_is_not_colour(tmp_path):
    values = (RNG.random((5, 6, 7, 3)) * 10).astype(np.float32)
    header = ("NRRD0004\ntype: float\ndimension: 4\nsizes: 3 7 6 5\nkinds: list domain domain domain\n"
              "endian: little\nencoding: raw\nspace dimension: 3\nspace directions: none (1,0,0) (0,1,0) (0,0,1)\n\n")
    (tmp_path / "list.nrrd").write_bytes(header.encode() + values.tobytes())
    with pytest.raises(InputError, match=r"holds 3 float32 values per voxel: a vector image, not RGB colour"):
        read_image(tmp_path / "list.nrrd")


def test_tiff_pages_of_different_sizes_are_refused(tmp_path):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8))
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), append=True)
    with pytest.raises(InputError, match=r"pages\.tif holds 2 images of different sizes or kinds \(32 x 32 and "
                       r"16 x 16\); save one image per file, or a stack of equal pages"):
        read_image(path)
    tifffile.imwrite(tmp_path / "stack.tif", (RNG.random((5, 16, 16)) * 255).astype(np.uint8))
    assert read_image(tmp_path / "stack.tif").shape == (5, 16, 16)


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "garbage", "cpu:1", "cuda:7", ""])
def test_devices_this_tool_does_not_run_on_are_one_sentence(device):
    with pytest.raises(UPFusionError, match=r"(Unknown device .*; use 'auto', 'cpu', 'cuda' or 'cuda:N'|CUDA)"):
        FusionEngine("average", device=device)


def test_device_meta_on_the_command_line(tmp_path, capsys):
    a, b = pair(tmp_path)
    refused(["fuse", a, b, "-o", tmp_path / "f.nii.gz", "--model", "average", "--device", "meta"], capsys,
            r"Unknown device 'meta'", tmp_path)  # fmt: skip


# ---------------------------------------------------------------------- class 4: results and numbers
class _NaNFuser(nn.Module):
    uses_text = False

    def forward(self, a: torch.Tensor, b: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        return torch.full_like(a, float("nan"))


def test_a_fuser_that_gives_nan_is_named_and_nothing_is_returned():
    a, b = _volume().array, _volume().array * 2
    with pytest.raises(ResultError, match=r"The model '_NaNFuser' produced \d+ NaN values instead of an image in "
                       r"\[0, 1\], so nothing was returned or written"):
        FusionEngine(_NaNFuser()).fuse(a, b)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": (float("nan"), 400)}, "finite level"),
        ({"window": (40, float("inf"))}, "finite level"),
        ({"window": (40, 0)}, "positive finite width"),
        ({"window": (40, -80)}, "positive finite width"),
        ({"window": (1, 2, 3)}, "two numbers"),
        ({"window": "lungs"}, "Unknown CT window"),
        ({"batch_size": 0}, "batch_size must be 'auto' or a whole number"),
        ({"batch_size": 1.5}, "batch_size must be"),
        ({"batch_size": True}, "batch_size must be"),
        ({"precision": "fp64"}, "Unknown precision 'fp64'"),
        ({"compile": "yes"}, "compile must be True or False"),
    ],
)
def test_numeric_options_must_be_finite_and_sensible(options, message):
    a, b = _volume().array, _volume().array * 2
    with pytest.raises(InputError, match=message):
        engine_api.fuse(a, b, modalities=("MRI", "CT"), model="average", **options)


def test_percentiles_are_checked():
    from napari_upfusion.engine.intensity import normalize

    for bad in [(float("nan"), 99), (50, 50), (-1, 99), (1, 101), (99, 1)]:
        with pytest.raises(InputError, match="percentiles"):
            normalize(np.arange(100.0), percentiles=bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "out", "--lr", "nan"], "--lr must be a number greater than 0"),
        (["train", "out", "--lr", "-1"], "--lr must be a number greater than 0"),
        (["train", "out", "--seed", "-3"], "--seed must be a whole number of at least 0"),
        (["make-data", "out", "--size", "0"], "--size must be a whole number of at least 32"),
        (["batch", "m.csv", "--out", "o", "--local-workers", "0"], "--local-workers must be a whole number"),
        (["evaluate", "a", "b", "--digits", "99"], "--digits must be a whole number of at least 0 and at most 12"),
    ],
)
def test_numeric_flags_are_checked_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["fuse", "a.nii.gz", "b.nii.gz", "-o", ""],
        ["fuse", "", "b.nii.gz", "-o", "f.nii.gz"],
        ["fuse", "a.nii.gz", "b.nii.gz", "-o", "f.nii.gz", "--checkpoint", " "],
        ["batch", "m.csv", "--out", ""],
        ["evaluate", "a", "b", "--save", ""],
        ["train", ""],
        ["make-data", ""],
        ["demo", "--out", ""],
    ],
)
def test_an_empty_path_is_refused_when_parsed(argv, capsys, tmp_path, monkeypatch):
    """``Path("")`` is the current folder: an empty ``--out`` used to write a batch into it, and an empty ``-o`` was
    called "a folder"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "the path is empty; give a file or folder name" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- class 9: batch dead ends
def test_colour_nifti_pairs_in_a_batch_are_written_where_colour_fits(tmp_path):
    """RGB NIfTI inputs used to fail every time (their output was forced to .nii.gz); they now go to .mha."""
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.zeros((24, 20, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for channel, name in enumerate("RGB"):
        rgb[name] = (RNG.random((24, 20, 1)) * 255).astype(np.uint8) if channel != 1 else 40
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), folder / "photo.nii.gz")
    nifti(folder / "ir.nii.gz", (RNG.random((24, 20, 1)) * 255).astype(np.uint8))
    (tmp_path / "cohort.csv").write_text("a,b,modality_a,modality_b\nin/photo.nii.gz,in/ir.nii.gz,VIS,IR\n")
    before = snapshot(folder)
    report = run_cohort(tmp_path / "cohort.csv", tmp_path / "out", settings=None)
    outcome = report.outcomes[0]
    assert outcome.status == "done", outcome.reason
    assert outcome.pair.output.name == "photo_fused.mha"
    fused = read_image(outcome.pair.output)
    assert fused.rgb and fused.shape == (1, 20, 24)
    assert snapshot(folder) == before


def test_colour_written_by_this_tool_reads_back_as_colour(tmp_path):
    image = ImageData.from_array(RNG.random((6, 7, 3)).astype(np.float32), spacing=(1.0, 1.0), rgb=True)
    for name in ("c.mha", "c.nrrd"):
        assert read_image(write_image(image, tmp_path / name)).rgb
