"""Evaluation on folders of pairs and the ``upfusion evaluate`` command, on synthetic images written here."""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from napari_upfusion.cli import COMMANDS
from napari_upfusion.cli import evaluate as cli_evaluate
from napari_upfusion.errors import InputError, UPFusionError
from napari_upfusion.evaluation import metrics as M
from napari_upfusion.evaluation.evaluate import evaluate_pairs, format_table, matched_pairs, read_luma


def _grey(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 100 + 60 * np.sin(x / (2 + seed)) + 40 * (y > shape[0] // 2) + rng.normal(0, 8, shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _write_pairs(root: Path, colour_b: bool = False) -> tuple[Path, Path]:
    """Three pairs; one of a size that is not a multiple of 8; b stored as RGB (grey, or pseudo-colour)."""
    a_dir, b_dir = root / "MRI", root / "SPECT"
    a_dir.mkdir()
    b_dir.mkdir()
    for i, shape in enumerate([(32, 40), (32, 40), (30, 37)]):
        iio.imwrite(a_dir / f"{i:02d}.png", _grey(i, shape))
        b = _grey(10 + i, shape)
        if colour_b:  # a hot colour map: red rises first, then green, then blue
            v = b.astype(float)
            rgb = np.stack([np.clip(3 * v, 0, 255), np.clip(3 * v - 255, 0, 255), np.clip(3 * v - 510, 0, 255)], -1)
        else:
            rgb = np.repeat(b[..., None], 3, axis=-1)
        iio.imwrite(b_dir / f"{i:02d}.png", rgb.astype(np.uint8))
    return a_dir, b_dir


def _expected(a_dir: Path, b_dir: Path, combine) -> dict[str, float]:
    """Mean metrics computed directly with numpy, the way the pipeline should."""
    rows = []
    for name in matched_pairs(a_dir, b_dir):
        ya, yb = read_luma(a_dir / name), read_luma(b_dir / name)
        ra, rb = M.round_grey(ya), M.round_grey(yb)
        rows.append(M.evaluate(M.round_grey(combine(ya, yb)), ra, rb))
    return {m: float(np.mean([r[m] for r in rows])) for m in M.METRIC_NAMES}


@pytest.mark.parametrize("colour_b", [False, True])
def test_pipeline_matches_direct_metrics(tmp_path, colour_b):
    a_dir, b_dir = _write_pairs(tmp_path, colour_b)
    results = evaluate_pairs(a_dir, b_dir, ["average", "maximum"])
    assert list(results) == ["average", "maximum"]
    for name, combine in (("average", lambda a, b: (a + b) / 2), ("maximum", np.maximum)):
        assert list(results[name]) == list(M.METRIC_NAMES)
        expected = _expected(a_dir, b_dir, combine)
        for metric in M.METRIC_NAMES:
            assert results[name][metric] == pytest.approx(expected[metric], rel=1e-9), (name, metric)


def test_a_pair_of_one_image_twice_is_refused_not_scored(tmp_path):
    """Issue 17: the same image as a and b used to be fused with itself and score SSIM 2.0."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    img = _grey(5, (32, 32))
    iio.imwrite(a_dir / "x.png", img)
    iio.imwrite(b_dir / "x.png", img)
    with pytest.raises(InputError, match=r"The two images of the pair x\.png have identical content"):
        evaluate_pairs(a_dir, b_dir, ["laplacian"])
    with pytest.raises(InputError, match=r"A_DIR and B_DIR are the same folder"):
        evaluate_pairs(a_dir, a_dir, ["laplacian"])


def test_luma_and_colour_are_read(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    iio.imwrite(tmp_path / "red.png", rgb)
    assert read_luma(tmp_path / "red.png") == pytest.approx(np.full((8, 8), 0.299 * 200))
    iio.imwrite(tmp_path / "grey.png", np.repeat(_grey(1, (8, 8))[..., None], 3, -1))
    np.testing.assert_allclose(read_luma(tmp_path / "grey.png"), _grey(1, (8, 8)), atol=1e-9)


def test_saving_writes_grey_and_colour_images(tmp_path):
    a_dir, b_dir = _write_pairs(tmp_path, colour_b=True)
    out = tmp_path / "out"
    evaluate_pairs(a_dir, b_dir, ["maximum"], save_dir=out)
    files = sorted(p.name for p in (out / "maximum").iterdir())
    assert files == ["00.png", "01.png", "02.png"]  # and no temporary file left behind
    saved = iio.imread(out / "maximum" / "02.png")
    assert saved.shape == (30, 37, 3) and saved.dtype == np.uint8
    ya, yb = read_luma(a_dir / "02.png"), read_luma(b_dir / "02.png")
    # where B is the brighter image the maximum is B's luma, and with B's colour put back, B itself
    b_wins = np.round(yb) > np.round(ya)
    assert 0.2 < b_wins.mean() < 0.9
    b_rgb = iio.imread(b_dir / "02.png").astype(int)
    assert np.abs(saved.astype(int) - b_rgb)[b_wins].max() <= 2
    assert np.abs(saved.astype(int) - b_rgb)[~b_wins].max() > 2  # elsewhere it is not B


def test_format_table_puts_fusers_side_by_side():
    results = {"average": {"EN": 4.46481, "SD": 57.3}, "maximum": {"EN": 4.4724, "SD": 84.21974}}
    lines = format_table(results, digits=3).splitlines()
    assert lines[0].split() == ["metric", "average", "maximum"]
    assert lines[2].split() == ["EN", "4.465", "4.472"]
    assert lines[3].split() == ["SD", "57.300", "84.220"]
    assert len(lines) == 4


# --------------------------------------------------------------------------- bad input
def test_bad_folders_raise_input_error(tmp_path):
    a_dir, b_dir = _write_pairs(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no PNG"):
        evaluate_pairs(a_dir, empty, ["average"])
    with pytest.raises(InputError, match="not a folder"):
        evaluate_pairs(a_dir, tmp_path / "missing", ["average"])
    (b_dir / "01.png").rename(b_dir / "99.png")
    with pytest.raises(InputError, match="01.png only in .*99.png only in"):
        evaluate_pairs(a_dir, b_dir, ["average"])


def test_pairs_of_different_sizes_raise_input_error(tmp_path):
    a_dir, b_dir = _write_pairs(tmp_path)
    iio.imwrite(b_dir / "00.png", _grey(0, (16, 16)))
    with pytest.raises(InputError, match="00.png has images of different sizes"):
        evaluate_pairs(a_dir, b_dir, ["average"])


def test_bad_fusers_raise_input_error(tmp_path):
    a_dir, b_dir = _write_pairs(tmp_path)
    with pytest.raises(InputError, match="neither a known model"):
        evaluate_pairs(a_dir, b_dir, ["nonsense"])
    with pytest.raises(InputError, match="named twice"):
        evaluate_pairs(a_dir, b_dir, ["average", "average"])

    class TextFuser(torch.nn.Module):
        uses_text = True

        def forward(self, a, b, text_code=None):
            return a

    with pytest.raises(UPFusionError, match="reads text"):
        evaluate_pairs(a_dir, b_dir, {"texty": TextFuser()})


# --------------------------------------------------------------------------- the command
def _cli(argv: list[str]) -> int:
    """Parse and run like ``upfusion`` does, with only the evaluate sub-command."""
    parser = argparse.ArgumentParser(prog="upfusion")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_evaluate.add_parser(sub).set_defaults(_run=cli_evaluate.run)
    args = parser.parse_args(argv)
    return args._run(args)


def test_cli_evaluate_prints_the_table_and_saves(tmp_path, capsys):
    assert "evaluate" in COMMANDS
    a_dir, b_dir = _write_pairs(tmp_path)
    status = _cli(["evaluate", str(a_dir), str(b_dir), "--fuser", "average", "--fuser", "laplacian",
                   "--save", str(tmp_path / "out")])  # fmt: skip
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["metric", "average", "laplacian"]
    assert [line.split()[0] for line in lines[2:]] == list(M.METRIC_NAMES)
    assert all(len(line.split()) == 3 for line in lines[2:])
    assert len(list((tmp_path / "out" / "laplacian").glob("*.png"))) == 3


def test_cli_defaults_to_the_three_baselines(tmp_path, capsys):
    a_dir, b_dir = _write_pairs(tmp_path)
    assert _cli(["evaluate", str(a_dir), str(b_dir), "--digits", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["metric", "average", "maximum", "laplacian"]


def test_cli_modalities_and_prompt_reach_the_model(tmp_path, capsys):
    """The small model's behaviour follows the modality pair's prompt, or the prompt given instead."""
    from napari_upfusion.model.text.prompts import DEFAULT_PROMPTS

    a_dir, b_dir = _write_pairs(tmp_path)

    def table(*extra: str) -> list[str]:
        assert _cli(["evaluate", str(a_dir), str(b_dir), "--fuser", "small", "--precision", "fp32", *extra]) == 0
        return capsys.readouterr().out.splitlines()[2:]

    as_ct = table("--modalities", "MRI", "CT")
    assert table("--modalities", "MRI", "SPECT") != as_ct
    assert table("--modalities", "MRI", "SPECT", "--prompt", DEFAULT_PROMPTS["MRI-CT"]) == as_ct
    with pytest.raises(SystemExit):
        _cli(["evaluate", str(a_dir), str(b_dir), "--modalities", "MRI", "XRAY"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_main_reports_bad_input_in_one_sentence(tmp_path, capsys):
    from napari_upfusion.cli import main

    a_dir, _ = _write_pairs(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(a_dir), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("upfusion: error:") and "no PNG" in err and "Traceback" not in err


# --------------------------------------------------------------------------- on the real pairs
def test_pipeline_reproduces_the_calibration_on_mri_ct(eval_dir):
    from test_metrics import CALIBRATION

    results = evaluate_pairs(eval_dir / "MRI_CT" / "MRI", eval_dir / "MRI_CT" / "CT", ["average", "maximum"])
    # The pipeline sends exact halves of (A + B) / 2 to even; the field's evaluator lets float64 noise in Y
    # decide them.  That moves the average's EN and MI (histogram metrics) by 0.4-0.5%, nothing else.
    loose = {("average", "EN"), ("average", "MI")}
    wrong = [
        f"{fuser} {metric}: {results[fuser][metric]:.4f} vs {target:.4f}"
        for fuser, targets in CALIBRATION.items()
        for metric, target in targets.items()
        if abs(results[fuser][metric] - target) > (0.01 if (fuser, metric) in loose else 0.005) * abs(target)
    ]
    assert not wrong, "the evaluation pipeline is off the field's values: " + "; ".join(wrong)
