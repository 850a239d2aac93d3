"""The demo's figure and table: slice positions from geometry, colour restored, metrics with directions."""

from __future__ import annotations

import numpy as np

from napari_upfusion.engine import color as colour
from napari_upfusion.engine.image import ImageData
from napari_upfusion.evaluation.metrics import METRIC_INFO, METRIC_NAMES
from napari_upfusion.evaluation.report import (
    colour_fused,
    labelled_montage,
    metrics_record,
    metrics_table,
    orientation_letters,
    slice_position,
)


def test_slice_position_follows_spacing_origin_and_direction():
    volume = np.zeros((10, 20, 30), np.float32)
    plain = ImageData(volume, spacing=(2.5, 1, 1), origin=(-10, 0, 0))
    assert slice_position(plain, 4) == ("z", 0.0)
    flipped = ImageData(volume, spacing=(2.5, 1, 1), origin=(-10, 0, 0), direction=np.diag([-1.0, 1, 1]))
    assert slice_position(flipped, 4) == ("z", -20.0)
    assert slice_position(plain, 7, axis=2) == ("x", 7.0)


def test_orientation_letters_of_an_mni_volume():
    # the bundled sample's LPS geometry: array axes 1 and 2 point anterior and right
    image = ImageData(np.zeros((4, 5, 6), np.float32), spacing=(2, 2, 2), direction=np.diag([1.0, -1, -1]))
    assert orientation_letters(image) == {"top": "A", "bottom": "P", "left": "L", "right": "R"}
    assert orientation_letters(ImageData(np.zeros((4, 5, 6), np.float32)))["top"] == ""


def test_colour_fused_keeps_the_fused_brightness_and_the_colour_of_b():
    rng = np.random.default_rng(0)
    # colours inside the RGB gamut (no clipping): mid brightness, the dark red end of the hot map
    luma, b = rng.uniform(0.3, 0.5, (16, 16)).astype(np.float32), rng.uniform(0.05, 0.2, (16, 16)).astype(np.float32)
    ycc = colour.rgb_to_ycbcr(colour_fused(luma, b, "hot"))
    np.testing.assert_allclose(ycc[..., 0], luma, atol=0.02)  # the brightness is the fused one...
    expected = colour.rgb_to_ycbcr(colour.apply_colormap(b, "hot"))[..., 1:]
    np.testing.assert_allclose(ycc[..., 1:], expected, atol=0.05)  # ...the colour is b's
    assert not np.allclose(ycc[..., 1:], 0, atol=0.05)


def test_labelled_montage_has_titles_and_the_asked_size():
    panel = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
    picture = labelled_montage([("A", "input", [panel, panel], None), ("B", "input", [panel, panel], "hot")],
                               ["z = 0 mm", "z = 2 mm"], title="a title", tile_height=200)  # fmt: skip
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] == 16 + 150 + 2 * (150 + 14) + 16  # tiles keep the panels' 3:4 aspect
    assert picture[:40].max() == 255  # text was drawn in the title band


def test_metrics_table_gives_each_metric_a_direction_and_a_definition():
    scores = {"small": {m: 1.0 for m in METRIC_NAMES}, "laplacian": {m: 0.5 for m in METRIC_NAMES}}
    table = metrics_table(scores, digits=2)
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.split() and line.split()[0] in METRIC_INFO}
    assert set(rows) == set(METRIC_NAMES)
    assert "better" in table.splitlines()[0] and "small" in table.splitlines()[0]
    assert table.count("higher is better") == len(METRIC_NAMES)
    assert "SSIM(F,A) + SSIM(F,B), so at most 2" in table
    record = metrics_record(scores)
    assert record["metrics"]["SSIM"]["better"] == "higher" and record["scores"]["laplacian"]["EN"] == 0.5
