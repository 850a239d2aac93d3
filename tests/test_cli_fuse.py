"""``upfusion fuse``: from two real files to one fused file, with clear errors and no partial output."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_upfusion.cli import main
from napari_upfusion.engine import color as colour
from napari_upfusion.engine.io import read_image


def _nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture()
def mri_pet(tmp_path):
    rng = np.random.default_rng(0)
    mri_affine = np.array([[-1.0, 0, 0, 40], [0, 1.0, 0, -30], [0, 0, 1.0, 10], [0, 0, 0, 1]])
    pet_affine = mri_affine.copy()
    pet_affine[:3, :3] *= 2
    mri = _nifti(tmp_path / "mri.nii.gz", (rng.random((40, 36, 6)) * 800).astype(np.int16), mri_affine)
    pet = _nifti(tmp_path / "pet.nii.gz", rng.random((20, 18, 3)).astype(np.float32) * 5, pet_affine)
    return mri, pet


def test_fuse_nifti_keeps_the_reference_affine_and_header(tmp_path, mri_pet, capsys):
    mri, pet = mri_pet
    out = tmp_path / "fused.nii.gz"
    assert main(["fuse", str(mri), str(pet), "-o", str(out), "--modalities", "MRI", "PET", "--model", "average", "-q"]) == 0
    assert "wrote" in capsys.readouterr().out
    fused, reference = nib.load(out), nib.load(mri)
    np.testing.assert_allclose(fused.affine, reference.affine, atol=1e-6)
    assert fused.shape == reference.shape
    assert fused.get_data_dtype() == np.float32
    data = fused.get_fdata()
    assert 0 <= data.min() and data.max() <= 1
    assert [p.name for p in tmp_path.iterdir()] and not [p for p in tmp_path.iterdir() if "partial" in p.name or p.name.startswith(".")]


def test_existing_output_needs_force_and_inputs_are_untouched(tmp_path, mri_pet, capsys):
    mri, pet = mri_pet
    before = (mri.read_bytes(), pet.read_bytes())
    out = tmp_path / "fused.nii.gz"
    out.write_bytes(b"precious")
    argv = ["fuse", str(mri), str(pet), "-o", str(out), "--model", "maximum", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("upfusion: error:") and "--force" in err and err.count("\n") == 0
    assert out.read_bytes() == b"precious"
    assert main(argv + ["--force"]) == 0
    assert nib.load(out).shape == nib.load(mri).shape
    assert (mri.read_bytes(), pet.read_bytes()) == before


def test_mha_with_direction_and_colour_png(tmp_path):
    rng = np.random.default_rng(1)
    a = sitk.GetImageFromArray((rng.random((4, 32, 40)) * 1000).astype(np.float32))
    a.SetSpacing((0.8, 0.9, 2.5))
    a.SetOrigin((1.0, 2.0, 3.0))
    a.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    b = sitk.GetImageFromArray(rng.random((4, 32, 40)).astype(np.float32))
    b.CopyInformation(a)
    sitk.WriteImage(a, str(tmp_path / "a.mha"))
    sitk.WriteImage(b, str(tmp_path / "b.mha"))
    assert main(["fuse", str(tmp_path / "a.mha"), str(tmp_path / "b.mha"), "-o", str(tmp_path / "f.nrrd"), "--model", "average", "-q"]) == 0
    fused = sitk.ReadImage(str(tmp_path / "f.nrrd"))
    assert fused.GetSpacing() == pytest.approx(a.GetSpacing())
    assert fused.GetOrigin() == pytest.approx(a.GetOrigin())
    assert fused.GetDirection() == pytest.approx(a.GetDirection())

    import imageio.v3 as iio

    mri = (rng.random((48, 64)) * 100 + 80).astype(np.uint8)
    spect = np.round((colour.apply_colormap(np.tile(np.linspace(0.2, 0.8, 64), (48, 1)), "jet") * 0.3 + 0.35) * 255)
    iio.imwrite(tmp_path / "mri.png", mri)
    iio.imwrite(tmp_path / "spect.png", spect.astype(np.uint8))
    out = tmp_path / "fused.png"
    argv = ["fuse", str(tmp_path / "mri.png"), str(tmp_path / "spect.png"), "-o", str(out), "--modalities", "MRI", "SPECT", "--model", "average", "-q"]
    assert main(argv) == 0
    fused = read_image(out).array
    assert fused.shape == (48, 64, 3) and fused.dtype == np.uint8
    chroma = colour.rgb_to_ycbcr(fused / 255.0)[..., 1:]
    expected = colour.rgb_to_ycbcr(spect / 255.0)[..., 1:]
    assert np.abs(chroma - expected).max() < 4 / 255  # 8-bit rounding of the fused RGB


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["missing.nii.gz", "b.nii.gz"], "missing.nii.gz"),
        (["a.nii.gz", "b.nii.gz", "--modalities", "MRI", "XRAY"], "invalid choice"),
        (["a.nii.gz", "notes.txt"], "notes.txt"),
        (["a.nii.gz", "b.nii.gz", "--model", "nope"], "neither a known model"),
        (["a.nii.gz", "b.nii.gz", "--checkpoint", "absent.pth"], "absent.pth"),
        (["a.nii.gz", "b.nii.gz", "--window", "x,y"], "--window"),
        (["a.nii.gz", "b.nii.gz", "--batch-size", "x"], "--batch-size must be 'auto' or a positive whole number"),
        (["a.nii.gz", "b.nii.gz", "--batch-size", "0"], "--batch-size must be 'auto' or a positive whole number"),
    ],
)
def test_errors_are_one_sentence_with_non_zero_status(tmp_path, monkeypatch, capsys, argv_tail, message):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    _nifti(tmp_path / "a.nii.gz", rng.random((24, 24, 3)).astype(np.float32), np.eye(4))
    _nifti(tmp_path / "b.nii.gz", rng.random((24, 24, 3)).astype(np.float32), np.eye(4))
    (tmp_path / "notes.txt").write_text("not an image")
    argv = ["fuse", *argv_tail, "-o", "out.nii.gz", "-q"]
    if "--model" not in argv_tail and "--checkpoint" not in argv_tail:
        argv += ["--model", "average"]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.nii.gz").exists()


def test_console_script_runs(tmp_path, mri_pet):
    mri, pet = mri_pet
    out = tmp_path / "f.nii.gz"
    done = subprocess.run(
        [sys.executable, "-m", "napari_upfusion.cli", "fuse", str(mri), str(pet), "-o", str(out), "--model", "small"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "slice" in done.stderr  # the tqdm progress bar
    assert nib.load(out).shape == nib.load(mri).shape


def test_progress_bar_counts_slices_and_is_absent_for_one_2d_pair(tmp_path, mri_pet, capsys):
    mri, pet = mri_pet
    assert main(["fuse", str(mri), str(pet), "-o", str(tmp_path / "v.nii.gz"), "--model", "average"]) == 0
    err = capsys.readouterr().err
    assert "fusing: 100%" in err and "6/6 [" in err  # the volume has 6 slices along its first array axis
    assert "fusing: 0slice" not in err  # the bar before its total was known (a rate like "1825.20slice/s" is fine)
    rng = np.random.default_rng(1)
    vis, ir = tmp_path / "vis.png", tmp_path / "ir.png"
    for path in (vis, ir):
        sitk.WriteImage(sitk.GetImageFromArray((rng.random((32, 40)) * 255).astype(np.uint8)), str(path))
    assert main(["fuse", str(vis), str(ir), "-o", str(tmp_path / "f.png"), "--modalities", "VIS", "IR",
                 "--model", "average"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "slice" not in err and "fusing" not in err
