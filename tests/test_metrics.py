"""The fusion metrics: known extreme values, basic properties, and the calibration against the field's evaluators."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_upfusion.errors import InputError
from napari_upfusion.evaluation import metrics as M


def _scene(seed: int = 0, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A textured grey image on 0..255 with edges in several orientations (whole grey values)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    img = 60 + 40 * np.sin(x / (3 + seed)) * np.cos(y / 5) + 30 * (x + y > shape[0])
    img[shape[0] // 4 : shape[0] // 2, shape[1] // 3 : 2 * shape[1] // 3] += 90
    img += rng.normal(0, 4, shape)
    return np.clip(np.round(img), 0, 255)


@pytest.fixture
def a() -> np.ndarray:
    return _scene(0)


@pytest.fixture
def b() -> np.ndarray:
    return _scene(3)[::-1].copy()


# --------------------------------------------------------------------------- no-reference metrics
def test_en_known_values():
    assert M.EN(np.full((16, 16), 7.0)) == 0.0
    half = np.zeros((16, 16))
    half[:, 8:] = 200
    assert M.EN(half) == pytest.approx(1.0)
    assert M.EN(np.arange(256, dtype=float).reshape(16, 16)) == pytest.approx(8.0)


def test_en_rounds_to_grey_levels():
    img = np.arange(256, dtype=float).reshape(16, 16)
    assert M.EN(img + 0.2) == pytest.approx(M.EN(img))


def test_sd_sf_ag_known_values():
    flat = np.full((10, 12), 42.0)
    assert M.SD(flat) == M.SF(flat) == M.AG(flat) == 0.0

    half = np.zeros((8, 8))
    half[4:] = 255
    assert M.SD(half) == pytest.approx(127.5)

    ramp = np.tile(np.arange(12, dtype=float), (10, 1))  # +1 per column
    assert M.SF(ramp) == pytest.approx(1.0)
    assert M.AG(ramp) == pytest.approx(math.sqrt(0.5))
    diag = ramp + 2 * np.arange(10, dtype=float)[:, None]  # +1 per column, +2 per row
    assert M.SF(diag) == pytest.approx(math.sqrt(1 + 4))
    assert M.AG(diag) == pytest.approx(math.sqrt((1 + 4) / 2))

    checker = 10.0 * (np.indices((9, 9)).sum(axis=0) % 2)
    assert M.SF(checker) == pytest.approx(math.sqrt(200))


# --------------------------------------------------------------------------- MI
def test_mutual_information_properties(a, b):
    assert M.mutual_information(a, b) == pytest.approx(M.mutual_information(b, a))
    # MI of an image with itself is its entropy, here in nats
    assert M.mutual_information(a, a) == pytest.approx(M.EN(a) * math.log(2))
    assert M.mutual_information(a, np.full_like(a, 9.0)) == pytest.approx(0.0, abs=1e-12)
    assert 0 < M.mutual_information(a, b) < M.mutual_information(a, a)


def test_mi_sums_both_sources(a, b):
    assert M.MI(a, a, b) == pytest.approx(M.mutual_information(a, a) + M.mutual_information(a, b))
    assert M.MI(a, a, b) > M.MI(b[::-1], a, b)


# --------------------------------------------------------------------------- SCD
def test_scd_extremes(a, b):
    # F = A + B: F - B is A and F - A is B, both correlations are 1
    assert M.SCD(a + b, a, b) == pytest.approx(2.0)
    # the negation turns both into -1
    assert M.SCD(-(a + b), -a, -b) == pytest.approx(2.0)
    assert M.SCD(a - b, a, b) < 1.0
    assert -2.0 <= M.SCD((a + b) / 2, a, b) <= 2.0


# --------------------------------------------------------------------------- VIF
def test_vif_of_identical_images_is_one_per_source(a):
    assert M.vif_pair(a, a) == pytest.approx(1.0)
    assert M.VIF(a, a, a) == pytest.approx(2.0)


def test_vif_falls_with_blur_and_noise_and_rises_with_contrast(a):
    rng = np.random.default_rng(1)
    noisy = a + rng.normal(0, 20, a.shape)
    blurred = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, (1, 1), (0, 1))) / 4
    stretched = (a - a.mean()) * 1.5 + a.mean()
    assert 0 < M.vif_pair(a, noisy) < 0.8
    assert 0 < M.vif_pair(a, blurred) < 1.0
    assert M.vif_pair(a, stretched) > 1.0  # VIF rewards contrast enhancement, by design


def test_vif_constant_reference_is_one_by_convention(a):
    assert M.vif_pair(np.full_like(a, 3.0), a) == 1.0


# --------------------------------------------------------------------------- Qabf
def _qabf_perfect() -> float:
    """Q of a pixel whose edge is kept with equal strength and orientation."""
    return 0.9994 / (1 + math.exp(-15 * (1 - 0.5))) * 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))


def test_qabf_of_identical_images_is_the_perfect_pixel_score(a):
    assert M.Qabf(a, a, a) == pytest.approx(_qabf_perfect())


def test_qabf_range_and_ordering(a, b):
    q_a = M.Qabf(a, a, b)
    assert 0 < q_a <= 1
    # an all-black result keeps no edge (a flat non-zero one would keep the frame that zero padding draws)
    black = np.zeros_like(a)
    assert M.Qabf(black, a, b) < 0.01
    assert M.Qabf(np.maximum(a, b), a, b) > 0.5 > M.Qabf((a + b[::-1]) / 2, a, b) > M.Qabf(black, a, b)
    assert M.Qabf(a, a, b) == pytest.approx(M.Qabf(a, b, a))  # the sources are symmetric


def test_qabf_without_edges_is_zero():
    flat = np.full((16, 16), 5.0)
    # zero padding makes the border an edge, so a flat interior alone is not enough: use all zeros
    zeros = np.zeros((16, 16))
    assert M.Qabf(flat, zeros, zeros) == 0.0


# --------------------------------------------------------------------------- SSIM
def test_ssim_identical_and_degraded(a, b):
    assert M.SSIM(a, a, a) == pytest.approx(2.0)
    rng = np.random.default_rng(2)
    assert M.ssim_pair(a, a + rng.normal(0, 25, a.shape)) < 0.7
    assert M.SSIM(a, a, b) == pytest.approx(1.0 + M.ssim_pair(a, b))


# --------------------------------------------------------------------------- evaluate and bad input
def test_evaluate_returns_every_metric(a, b):
    scores = M.evaluate((a + b) / 2, a, b)
    assert tuple(scores) == M.METRIC_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["EN"] == pytest.approx(M.EN(np.round((a + b) / 2)))


def test_evaluate_rounds_and_clips_the_fused_image(a, b):
    assert M.evaluate(a + 0.3, a, b) == M.evaluate(a, a, b)
    over = a.copy()
    over[0, 0] = 400.0
    clipped = a.copy()
    clipped[0, 0] = 255.0
    assert M.evaluate(over, a, b) == M.evaluate(clipped, a, b)


def test_round_grey_ignores_float32_noise_around_halves():
    noisy_halves = np.array([2.4999995, 2.5, 2.5000004, 3.4999996, 3.5000003, 7.2, -0.4])
    assert M.round_grey(noisy_halves).tolist() == [2.0, 2.0, 2.0, 4.0, 4.0, 7.0, -0.0]
    # (A + B) / 2 through float32 quantises like the exact value
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 50, 50)).astype(np.float64)
    via_float32 = ((a / 255).astype(np.float32) + (b / 255).astype(np.float32)) / 2 * np.float64(255)
    assert np.array_equal(M.round_grey(via_float32), np.round((a + b) / 2))


@pytest.mark.parametrize(
    "fused, first, second, words",
    [
        (np.zeros((8, 8)), np.zeros((8, 9)), np.zeros((8, 8)), "different shapes"),
        (np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8)), "2-D"),
        (np.full((8, 8), np.nan), np.zeros((8, 8)), np.zeros((8, 8)), "NaN"),
    ],
)
def test_bad_input_raises_input_error(fused, first, second, words):
    with pytest.raises(InputError, match=words):
        M.evaluate(fused, first, second)
    with pytest.raises(InputError):
        M.MI(fused, first, second)


# --------------------------------------------------------------------------- calibration
#: Means over the 21 MRI_CT pairs from the field's reference evaluator (CDDFuse-style Python/MATLAB code).
CALIBRATION = {
    "average": {"EN": 4.4648, "SD": 57.3148, "SF": 19.5707, "MI": 2.6223, "SCD": 0.9941,
                "VIF": 0.4543, "Qabf": 0.3719, "SSIM": 1.4870},
    "maximum": {"EN": 4.4724, "SD": 84.2197, "SF": 33.5338, "MI": 3.6304, "SCD": 1.5000,
                "VIF": 0.6361, "Qabf": 0.6284, "SSIM": 1.5021},
}  # fmt: skip


def _read_y(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    rgb = np.asarray(iio.imread(path), dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def test_calibration_against_the_field_on_mri_ct(eval_dir):
    folder = eval_dir / "MRI_CT"
    names = sorted(p.name for p in (folder / "MRI").glob("*.png"))
    assert len(names) == 21, f"expected the 21 MRI_CT pairs in {folder}, found {len(names)}"
    sums = {fuser: dict.fromkeys(M.METRIC_NAMES, 0.0) for fuser in CALIBRATION}
    for name in names:
        a, b = _read_y(folder / "MRI" / name), _read_y(folder / "CT" / name)
        for fuser, fused in (("average", (a + b) / 2), ("maximum", np.maximum(a, b))):
            for metric, value in M.evaluate(fused, a, b).items():
                sums[fuser][metric] += value / len(names)
    wrong = [
        f"{fuser} {metric}: {sums[fuser][metric]:.4f} vs {target:.4f}"
        for fuser, targets in CALIBRATION.items()
        for metric, target in targets.items()
        if abs(sums[fuser][metric] - target) > 0.005 * abs(target)
    ]
    assert not wrong, "metrics off the field's values by more than 0.5%: " + "; ".join(wrong)
