"""Issue 17, classes 1, 2 and 7: outputs that would overwrite inputs, the same image twice, and what the operating
system can refuse, in every command, each refused in one sentence before any work."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from hostile import RNG, mounted, nifti, pair, refused, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_upfusion.engine.api as engine_api
from napari_upfusion.cli import main
from napari_upfusion.engine.api import FusionEngine
from napari_upfusion.engine.image import ImageData
from napari_upfusion.engine.io import read_image, write_image
from napari_upfusion.engine.validate import SAME_IMAGE, check_paths
from napari_upfusion.errors import InputError


@pytest.fixture()
def data(tmp_path, monkeypatch) -> Path:
    """``data/a.nii.gz``, ``data/b.nii.gz``, a link to the folder, a symbolic and a hard link to b; cwd is the root."""
    _, b = pair(tmp_path / "data")
    (tmp_path / "linked").symlink_to("data", target_is_directory=True)
    (tmp_path / "data" / "b_symlink.nii.gz").symlink_to("b.nii.gz")
    os.link(b, tmp_path / "data" / "b_hardlink.nii.gz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _no_model(monkeypatch) -> None:
    """Make loading any model fail loudly: a refusal that comes first proves it came before any work."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks refused")

    monkeypatch.setattr(engine_api, "get_engine", loaded)


# ---------------------------------------------------------------------- class 1: an output that is an input
@pytest.mark.parametrize(
    "output, which",
    [
        ("data/../data/./b.nii.gz", "input b"),  # the example
        ("./data/a.nii.gz", "input a"),
        ("linked/b.nii.gz", "input b"),  # through a linked folder
        ("data/b_symlink.nii.gz", "input b"),  # a symbolic link to b
        ("data/b_hardlink.nii.gz", "input b"),  # another name of the same inode
        ("{root}/data/b.nii.gz", "input b"),  # absolute
        ("clip.nii.gz", "the CLIP weights"),
    ],
)
def test_fuse_never_writes_over_an_input(data, capsys, monkeypatch, output, which):
    (data / "clip.nii.gz").write_bytes(b"stand-in for a weights file")
    _no_model(monkeypatch)
    argv = ["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", output.format(root=data), "--model", "average", "--force",
            "--clip-weights", "clip.nii.gz", "-q"]  # fmt: skip
    refused(argv, capsys, rf"The output .* is {which} \(.*\); writing it would overwrite that input", data)


_NOOPS = ["./", "data/../", "linked/../", "data/./../", "linked/./../linked/../"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    absolute=st.booleans(),
    steps=st.lists(st.sampled_from(_NOOPS), max_size=4),
    folder=st.sampled_from(["data/", "linked/", "data/../linked/", "linked/../data/"]),
    name=st.sampled_from(["b.nii.gz", "b_symlink.nii.gz", "b_hardlink.nii.gz", "a.nii.gz"]),
)
def test_every_spelling_of_an_input_is_refused_as_output(data, capsys, monkeypatch, absolute, steps, folder, name):
    """Generated spellings of a path to an input (``.``, ``..``, linked folders, links to the file), from the
    working folder or absolute: each one is refused before any model is loaded, and nothing changes."""
    _no_model(monkeypatch)
    output = ("" if not absolute else f"{data}/") + "".join(steps) + folder + name
    argv = ["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", output, "--force", "--model", "average", "-q"]
    refused(argv, capsys, r"would overwrite that input", data)


def test_an_output_of_another_name_is_still_written(data, capsys):
    """The check refuses inputs, not their neighbours: a new name beside them (also one differing only in case on
    this case-sensitive disk, which is another file) is written."""
    for output in ("data/fused.nii.gz", "data/B.nii.gz"):
        assert main(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", output, "--model", "average", "-q"]) == 0
        assert read_image(output).shape == (6, 36, 40)
    capsys.readouterr()


def test_check_paths_refuses_outputs_inside_an_input_folder(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (tmp_path / "alias").symlink_to("series", target_is_directory=True)
    with pytest.raises(InputError, match=r"The output .*fused.nii.gz lies inside input a, the folder .*series"):
        check_paths([("input a", series)], [("the output", tmp_path / "alias" / "deeper" / "fused.nii.gz")])
    check_paths([("input a", series)], [("the output", tmp_path / "fused.nii.gz")])  # beside it is fine


def _pngs(folder: Path, names=("x.png", "y.png"), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        iio.imwrite(folder / name, (rng.random((32, 32)) * 255).astype(np.uint8))
    return folder


def test_evaluate_save_into_an_input_folder_is_refused(tmp_path, capsys):
    """``--save A_DIR`` (the issue's example) and a --save whose fuser folder is an input folder."""
    a_dir, b_dir = _pngs(tmp_path / "average"), _pngs(tmp_path / "b", seed=1)
    for save in (a_dir, tmp_path):  # tmp_path/average/x.png is a's own x.png
        argv = ["evaluate", a_dir, b_dir, "--fuser", "average", "--save", save]
        refused(argv, capsys, r"(lies inside|is) (A_DIR|the image x\.png of A_DIR)", tmp_path)


def test_batch_outputs_and_report_never_overwrite_inputs(tmp_path, capsys):
    a, b = pair(tmp_path)
    collide = nifti(tmp_path / "a_fused.nii.gz", (RNG.random((40, 36, 6)) * 9).astype(np.float32))
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"a,b,modality_a,modality_b\n{a.name},{collide.name},MRI,PET\n")
    refused(["batch", manifest, "--out", tmp_path, "--model", "average", "-q"], capsys,
            r"The output of row 2 .*a_fused\.nii\.gz is input b of row 2", tmp_path)  # fmt: skip
    report_named = tmp_path / "upfusion_batch_report.json"
    report_named.write_text(f"a,b,modality_a,modality_b\n{a.name},{b.name},MRI,PET\n")
    refused(["batch", report_named, "--out", tmp_path, "--model", "average", "-q"], capsys,
            r"The batch report .* is the manifest", tmp_path)  # fmt: skip


def test_demo_and_train_check_their_outputs_against_their_inputs(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    weights = out / "fused.nii.gz"
    weights.write_bytes(b"a checkpoint stand-in")
    refused(["demo", "--out", out, "--model", weights, "--force", "-q"], capsys,
            r"The demo's fused\.nii\.gz .* is the model", tmp_path)  # fmt: skip
    from napari_upfusion.model.checkpoint.weights import bundled_weights

    (out / "upfusion_small.safetensors").write_bytes(bundled_weights("small").read_bytes())
    refused(["train", out, "--config", "small", "--init-from", out / "upfusion_small.safetensors", "--steps", "1"],
            capsys, r"The trained weights .* is --init-from", tmp_path)  # fmt: skip


# ---------------------------------------------------------------------- class 2: the same image twice
@pytest.mark.parametrize(
    "b, message",
    [
        ("data/a.nii.gz", "are the same file"),
        ("data/../data/a.nii.gz", "are the same file"),
        ("linked/a.nii.gz", "are the same file"),
        ("a_symlink.nii.gz", "are the same file"),
        ("a_copy.nii.gz", "have identical content"),
    ],
)
def test_the_same_file_twice_is_refused(data, capsys, monkeypatch, b, message):
    (data / "a_symlink.nii.gz").symlink_to("data/a.nii.gz")
    (data / "a_copy.nii.gz").write_bytes((data / "data" / "a.nii.gz").read_bytes())
    _no_model(monkeypatch)
    refused(["fuse", "data/a.nii.gz", b, "-o", "f.nii.gz", "--model", "average", "-q"], capsys,
            rf"Inputs a and b {message} .*; pick one image of each modality", data)  # fmt: skip


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.sampled_from([".nii", ".nii.gz", ".mha", ".nrrd", ".tif"]),
    second=st.sampled_from([".nii", ".nii.gz", ".mha", ".nrrd", ".tif"]),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32]),
    shape=st.tuples(st.integers(2, 4), st.integers(16, 24), st.integers(16, 24)),
)
def test_one_image_in_two_files_of_any_format_is_refused(tmp_path_factory, capsys, first, second, dtype, shape):
    """Byte-identical copies are refused by their content; the same pixels in two formats (different bytes) by
    the engine, which compares the values it is given."""
    folder = tmp_path_factory.mktemp("same")
    image = ImageData((RNG.random(shape) * 200 + 1).astype(dtype), spacing=(2.0, 1.0, 1.0))
    a = write_image(image, folder / f"a{first}")
    b = write_image(image, folder / f"b{second}")
    refused(["fuse", a, b, "-o", folder / "f.tif", "--model", "average", "-q"], capsys,
            r"(Inputs a and b have identical content|Inputs a and b are the same image)", folder)  # fmt: skip


def test_the_engine_refuses_equal_arrays_and_evaluate_refuses_the_same_folder(tmp_path, capsys):
    a = (RNG.random((24, 24)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match=SAME_IMAGE):
        FusionEngine("average").fuse(a, a.copy())
    x = _pngs(tmp_path / "x")
    refused(["evaluate", x, x, "--fuser", "average"], capsys, r"A_DIR and B_DIR are the same folder", tmp_path)
    copy = _pngs(tmp_path / "copy")  # same seed: the same images, byte for byte
    refused(["evaluate", x, copy, "--fuser", "average"], capsys,
            r"The two images of the pair x\.png have identical content", tmp_path)  # fmt: skip


# ---------------------------------------------------------------------- class 7: what the system refuses
def test_names_over_255_bytes_get_one_sentence(data, capsys):
    long = "x" * 300
    refused(["fuse", f"data/{long}.nii.gz", "data/b.nii.gz", "-o", "f.nii.gz"], capsys,
            r"is too long for the file system \(a file name may have at most 255 bytes\)", data)  # fmt: skip
    refused(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", f"{long}.nii.gz", "--model", "average"], capsys,
            r"is too long for the file system", data)  # fmt: skip
    manifest = data / "cohort.csv"
    manifest.write_text(f"a,b,modality_a,modality_b,id\ndata/a.nii.gz,data/b.nii.gz,MRI,PET,{'y' * 250}\n")
    refused(["batch", manifest, "--out", data / "out", "--model", "average"], capsys,
            r"Row 2: the output name would be 263 bytes long, more than the 255 a file name may have; give the row a "
            r"shorter id", data)  # fmt: skip


def test_a_path_over_the_system_limit_is_named_as_a_path(data, capsys):
    """A path of 4,219 bytes made of short names used to be blamed on a file name over 255 bytes."""
    deep = "x/" * 2100
    refused(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", f"{deep}f.nii.gz", "--model", "average"], capsys,
            r"The path .* is [\d,]+ bytes long, more than the 4,095 a path may have on this system; choose a shorter "
            r"path\.", data)  # fmt: skip
    refused(["fuse", f"{deep}a.nii.gz", "data/b.nii.gz", "-o", "f.nii.gz", "--model", "average"], capsys,
            r"bytes long, more than the 4,095 a path may have", data)  # fmt: skip


def test_a_name_just_under_the_limit_is_written_and_leaves_no_staging_behind(data, capsys):
    """Staging names are cut to fit: a 250-byte output name, near the limit, is written whole."""
    name = "z" * 243 + ".nii.gz"
    assert main(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", name, "--model", "average", "-q"]) == 0
    assert (data / name).is_file() and not [p for p in data.iterdir() if p.name.startswith(".")]
    capsys.readouterr()


def test_nul_bytes_and_control_characters_in_a_manifest(data, capsys):
    manifest = data / "cohort.csv"
    manifest.write_bytes(b"a,b,modality_a,modality_b,id\ndata/a.nii.gz,data/b.nii.gz,MRI,PET,pa\x00ir\n")
    refused(["batch", manifest, "--out", data / "out"], capsys, r"Row 2: id holds a control character \(\\x00\)", data)


def test_a_manifest_header_with_a_column_twice_is_refused(data, capsys):
    manifest = data / "cohort.csv"
    manifest.write_text("a,b,modality_a,modality_b,a\ndata/a.nii.gz,data/b.nii.gz,MRI,PET,data/b.nii.gz\n")
    refused(["batch", manifest, "--out", data / "out"], capsys, r"names the column 'a' more than once", data)


def test_evaluate_save_on_a_file_and_bad_digits(tmp_path, capsys):
    a_dir, b_dir = _pngs(tmp_path / "a"), _pngs(tmp_path / "b", seed=1)
    (tmp_path / "file.txt").write_text("not a folder")
    refused(["evaluate", a_dir, b_dir, "--fuser", "average", "--save", tmp_path / "file.txt"], capsys,
            r"--save .*file\.txt is a file; give a folder", tmp_path)  # fmt: skip
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", str(a_dir), str(b_dir), "--digits", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--digits must be a whole number of at least 0 and at most 12, not '-1'" in err
    assert "Traceback" not in err and snapshot(tmp_path) == before


def test_an_output_that_is_a_folder_is_named_as_such(data, capsys):
    (data / "outdir").mkdir()
    refused(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", "outdir", "--force", "--model", "average"], capsys,
            r"outdir is a folder; give the output a file name with an image extension, for example "
            r"outdir/fused\.nii\.gz", data)  # fmt: skip
    err = refused(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", "f.xyz", "--model", "average"], capsys,
                  r"cannot write; use one of \.nii, \.nii\.gz", data)  # fmt: skip
    assert ".dcm" not in err  # DICOM is read only: the list names what can be written


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_output_path_is_refused_by_the_library(tmp_path, monkeypatch, blank):
    """``write_image(x, "")``: ``Path("")`` is the current folder, which used to be called "a folder"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^The output path is empty; give a file name with an image extension"):
        write_image(ImageData(RNG.random((16, 16)).astype(np.float32)), blank)
    assert not list(tmp_path.iterdir())


def test_a_read_only_mount_gets_one_sentence(data, capsys):
    source = data / "ro_source"
    source.mkdir()
    with mounted(data / "ro", "--bind", "-o", "ro", source=str(source)) as ro:
        refused(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", ro / "f.nii.gz", "--model", "average"], capsys,
                r"The folder .*ro is not writable", data / "data")  # fmt: skip
        manifest = data / "cohort.csv"
        manifest.write_text("a,b,modality_a,modality_b\ndata/a.nii.gz,data/b.nii.gz,MRI,PET\n")
        refused(["batch", manifest, "--out", ro, "--model", "average"], capsys,
                r"is on a read-only file system; choose a folder you may write to", data / "data")  # fmt: skip
        refused(["batch", manifest, "--out", ro / "new", "--model", "average"], capsys,
                r"is on a read-only file system", data / "data")  # fmt: skip


def test_a_full_disk_gets_one_sentence_and_leaves_no_partial_file(data, capsys):
    manifest = data / "cohort.csv"
    manifest.write_text("a,b,modality_a,modality_b\ndata/a.nii.gz,data/b.nii.gz,MRI,PET\n")
    with mounted(data / "small", "-o", "size=256k") as disk:
        filler = disk / "filler"
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(descriptor, b"\0" * 4096)
        os.close(descriptor)
        status = main(["batch", str(manifest), "--out", str(disk), "--model", "average", "-q"])
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("upfusion: error: ")
        assert "is full" in err and "No space left" not in err
        assert not [p for p in disk.iterdir() if "partial" in p.name]
        filler.unlink()
        status = main(["fuse", "data/a.nii.gz", "data/b.nii.gz", "-o", str(disk / "ok.nii.gz"), "--model", "average",
                       "-q"])  # fmt: skip
        assert status == 0 and (disk / "ok.nii.gz").is_file()
    capsys.readouterr()
