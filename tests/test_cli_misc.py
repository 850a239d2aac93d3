"""The other commands: demo (the README's main job), info, download instructions, bench."""

from __future__ import annotations

import json

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

from napari_upfusion.cli import main
from napari_upfusion.cli.info import collect
from napari_upfusion.evaluation.metrics import METRIC_NAMES


def test_demo_writes_volume_montage_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--voxel-mm", "4", "-q"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("small", "laplacian", "Qabf", "better", "higher is better"))
    fused, mri = nib.load(out / "fused.nii.gz"), nib.load(out / "mri.nii.gz")
    assert fused.shape == mri.shape and np.allclose(fused.affine, mri.affine)
    assert abs(fused.affine[0, 3] - mri.affine[0, 3]) < 1e-6 and fused.get_data_dtype() == np.float32
    picture = iio.imread(out / "montage.png")
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[1] >= 1200 and picture.std() > 10
    colourful = np.abs(picture.astype(int) - picture.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert colourful.mean() > 0.05  # the PET and fused-in-colour columns
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["scores"]) == {"small", "average", "maximum", "laplacian"}
    assert set(report["scores"]["small"]) == set(METRIC_NAMES) == set(report["metrics"])
    assert all(report["metrics"][m]["better"] in ("higher", "lower") and report["metrics"][m]["definition"]
               for m in METRIC_NAMES)  # fmt: skip
    assert report["fusion"]["model"] == "small" and report["fusion"]["modalities"] == ["MRI", "PET"]
    text = (out / "metrics.txt").read_text()
    assert "SSIM(F,A) + SSIM(F,B)" in text and all(f"{m} " in text for m in METRIC_NAMES)
    closing = printed.strip().splitlines()[-1]
    files = closing.split("wrote ", 1)[1].split(", ")
    expected = ["fused.nii.gz", "mri.nii.gz", "pet.nii.gz", "montage.png", "metrics.txt", "metrics.json"]
    assert files == [str(out / name) for name in expected]  # every file, in the one path style given by --out
    assert all((out / name).is_file() for name in expected) and sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert main(["demo", "--out", str(out), "--voxel-mm", "4", "-q"]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err


def test_info_reports_versions_devices_and_weights(capsys):
    facts = collect()
    assert facts["small weights"].startswith("found:")
    assert facts["paper weights"].startswith("not found") and "Fuse.pth" in facts["paper weights"]
    assert facts["CLIP ViT-B/32"] == "not found"
    assert "cpu" in facts["devices"]
    assert main(["info"]) == 0
    assert "napari-upfusion" in capsys.readouterr().out


def test_download_paper_only_prints_where_to_get_it(capsys):
    assert main(["download", "paper"]) == 0
    out = capsys.readouterr().out
    assert "drive.google.com" in out and "pan.baidu.com" in out and "Fuse.pth" in out


def test_bench_prints_reference_and_fast_paths(capsys):
    argv = ["bench", "--config", "small", "--size", "32", "--slices", "2", "--precision", "fp32", "--channels-last", "no"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert report["hardware"] and [r["path"] for r in rows] == ["eager", "onnx", "eager"]
    assert rows[0]["batch"] == 1 and rows[0]["streams"] == 1  # the reference: one slice at a time
    assert rows[0]["speedup"] == 1.0 and rows[0]["rel_l2"] == 0.0
    assert all(r["rel_l2"] < 1e-5 and r["slices_per_s"] > 0 for r in rows[1:])
    peak = rows[0]["matmul_peak"]
    assert peak > 0 and all(r["matmul_peak"] == peak for r in rows)  # one peak, measured in the same run
    assert all(r["gflops"] == pytest.approx(r["gflop_per_slice"] * r["slices_per_s"]) for r in rows)
    assert all(r["peak_share"] == pytest.approx(r["gflops"] / peak) for r in rows)
    assert main([*argv, "--cpu-path", "eager"]) == 0
    table = capsys.readouterr().out
    assert "slices/s" in table and "x ref" in table and "of peak" in table and "hardware:" in table
    assert "onnx" not in table and "matrix-multiply peak measured in this run" in table


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--repeat", "0", "--repeat must be a whole number of at least 1, not '0'"),
        ("--slices", "0", "--slices must be a whole number of at least 1, not '0'"),
        ("--size", "4", "--size must be a whole number of at least 8, not '4'"),
    ],
)
def test_bench_bad_numbers_are_one_sentence(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--config", "small", flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_command_takes_the_engine_flags_from_one_place():
    """--model, --device, --precision, --batch-size ... mean the same and read the same in every command that fuses."""
    import argparse

    from napari_upfusion.cli import build_parser
    from napari_upfusion.cli.options import ENGINE_FLAGS, engine_options

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    expected = {
        "fuse": {"model", "checkpoint", "device", "precision", "batch_size", "clip_weights", "compile",
                 "cpu_path"},
        "batch": {"model", "device", "precision", "batch_size", "cpu_path"},
        "demo": {"model", "device", "precision"},
        "evaluate": {"device", "precision"},
        "bench": {"device", "batch_size"},  # its --precision, --compile and --checkpoint choose what to measure
    }
    for name, flags in expected.items():
        actions = commands[name]._actions
        shared = {a.dest for a in actions if a.dest in ENGINE_FLAGS and a.help == ENGINE_FLAGS[a.dest]["help"]}
        assert shared == flags, name
    args = commands["fuse"].parse_args(["a.nii", "b.nii", "-o", "f.nii", "--checkpoint", "w.pth", "--device", "cpu",
                                        "--precision", "fp32", "--batch-size", "2", "--compile", "--cpu-path", "eager"])  # fmt: skip
    options = engine_options(args)
    assert (str(options.model), options.device, options.precision, options.batch_size, options.compile,
            options.cpu_path) == ("w.pth", "cpu", "fp32", 2, True, "eager")  # fmt: skip
    assert commands["evaluate"].parse_args(["a", "b"]).device == "cpu"  # a command may change a default
