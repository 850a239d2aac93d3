"""The UP-Fusion dock widget and fuse_layers, with a real viewer, real threads and the project's own weights.

The volumes are six axial slices of the packaged brain sample (2 mm voxels, placed in MNI space), so
that the bundled 'small' network fuses them in about a second on one CPU thread.  Error and cancel
cases use the classical 'average' fuser (or a deliberately slow one) where the network is beside the
point.  Set UPFUSION_WRITE_SCREENSHOT=1 to write docs/images/widget.png.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_upfusion import fuse_layers
from napari_upfusion.data import samples
from napari_upfusion.engine import registry
from napari_upfusion.engine.registry import available_fusers
from napari_upfusion.errors import InputError, PromptError, UPFusionError
from napari_upfusion.model.factory import get_config
from napari_upfusion.model.text.prompts import AUTHORS_PROMPT, DEFAULT_PROMPTS
from napari_upfusion.plugin.layers import PREVIEW_NAME, current_slice
from napari_upfusion.plugin.widget.controls import CHECKPOINT, CUSTOM_PROMPT

PLUGIN = "napari-upfusion"
REPO = Path(__file__).resolve().parents[1]
SLICES = slice(41, 47)  # six axial slices through the centre of the brain


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def brain() -> dict:
    pair = samples.brain_mri_pet()
    origin = (pair.origin[0] + SLICES.start * pair.spacing[0], *pair.origin[1:])
    return {"mri": pair.a[SLICES], "pet": pair.b[SLICES], "scale": pair.spacing, "translate": origin}


def add_brain(viewer, brain: dict) -> None:
    geometry = {"scale": brain["scale"], "translate": brain["translate"], "units": "mm"}
    viewer.add_image(brain["mri"], name="mri", metadata={"modality": "MRI"}, **geometry)
    viewer.add_image(
        brain["pet"], name="pet", colormap="inferno", blending="additive", metadata={"modality": "PET"}, **geometry
    )


def dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "UP-Fusion")
    return widget


def state(viewer) -> list[tuple]:
    """Every layer's identity, name and a copy of its data: what no fusion may change."""
    return [(id(layer), layer.name, np.array(layer.data, copy=True)) for layer in viewer.layers]


def assert_unchanged(viewer, before: list[tuple]) -> None:
    after = state(viewer)
    assert [(i, n) for i, n, _ in after] == [(i, n) for i, n, _ in before]
    for (_, name, old), (_, _, new) in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old, err_msg=f"layer {name!r} was modified")


def wait_until_idle(qtbot, widget, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


@pytest.fixture
def notifications():
    """Every napari notification shown during the test, in order."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def errors(seen: list) -> list[str]:
    from napari.utils.notifications import NotificationSeverity

    return [str(n.message) for n in seen if n.severity == NotificationSeverity.ERROR]


def assert_placed_like(layer, reference) -> None:
    assert layer.data.shape[: reference.ndim] == reference.data.shape
    np.testing.assert_allclose(layer.scale, reference.scale)
    np.testing.assert_allclose(layer.translate, reference.translate)
    np.testing.assert_allclose(layer.affine.affine_matrix, reference.affine.affine_matrix)
    assert layer.units == reference.units


# ---------------------------------------------------------------------------------------------- fuse_layers
def test_fuse_layers_with_the_small_weights(make_napari_viewer, brain) -> None:
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    before = state(viewer)
    fused = fuse_layers(viewer, "mri", "pet", device="cpu")  # modalities from the layers' metadata

    assert viewer.layers[-1] is fused and fused.name == "fused(mri, pet)"
    assert_unchanged(viewer, before + [(id(fused), fused.name, fused.data)])
    assert_placed_like(fused, viewer.layers["mri"])
    assert fused.data.dtype == np.float32 and not fused.rgb
    assert 0.0 <= fused.data.min() and fused.data.max() <= 1.0 and fused.data.std() > 0.01
    info = fused.metadata["upfusion"]
    assert info["model"] == "small" and len(info["checkpoint_sha256"]) == 64
    assert info["modalities"] == ["MRI", "PET"] and info["prompt"] == DEFAULT_PROMPTS["MRI-PET"]
    assert info["input_layers"] == ["mri", "pet"] and info["axis"] == 0 and info["device"] == "cpu"

    again = fuse_layers(viewer, "mri", "pet", modalities=("MRI", "PET"), model="average", colormap="hot")
    assert [layer.name for layer in viewer.layers] == ["mri", "pet", "fused(mri, pet)", "fused(mri, pet) [1]"]
    assert again.rgb and again.data.shape == (*brain["mri"].shape, 3)
    assert_placed_like(again, viewer.layers["mri"])
    assert again.metadata["upfusion"]["model"] == "average" and again.metadata["upfusion"]["colormap"] == "hot"


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")
def test_layer_conversion_places_voxels_where_napari_draws_them(brain) -> None:
    """scale, translate, rotate, shear and affine all reach the ImageData; multiscale layers give level 0."""
    from napari.layers import Image

    from napari_upfusion.plugin.layers import layer_to_image

    outer = np.eye(4)
    outer[:3, 3] = (5.0, -3.0, 2.0)
    outer[1, 2] = 0.2
    layer = Image(
        brain["mri"],
        scale=(2.0, 1.5, 1.0),
        translate=(4.0, 5.0, 6.0),
        rotate=(10, 20, 30),
        shear=[0.1, 0, 0.05],
        affine=outer,
        metadata={"modality": "MRI", "path": "/data/mri.nii.gz"},
    )
    image = layer_to_image(layer)
    assert image.has_geometry and image.metadata["path"] == "/data/mri.nii.gz" and image.metadata["layer"] == layer.name
    for index in [np.array(c) * (np.array(image.shape) - 1) for c in np.ndindex(2, 2, 2)]:
        world = (image.index_to_world_affine() @ [*index, 1])[:3]
        np.testing.assert_allclose(world, layer.data_to_world(index), atol=1e-9)

    pyramid = Image([brain["mri"], brain["mri"][:, ::2, ::2]], multiscale=True, scale=(2.0, 2.0, 2.0))
    assert layer_to_image(pyramid).shape == brain["mri"].shape
    assert not layer_to_image(Image(brain["mri"])).has_geometry


def test_fused_layer_keeps_a_rotated_reference_placement(make_napari_viewer, brain) -> None:
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    for name in ("mri", "pet"):
        viewer.layers[name].rotate = 15
    fused = fuse_layers(viewer, "mri", "pet", model="average")
    np.testing.assert_allclose(fused.rotate, viewer.layers["mri"].rotate)
    index = np.array([2, 30, 40])
    np.testing.assert_allclose(fused.data_to_world(index), viewer.layers["mri"].data_to_world(index))


@pytest.mark.parametrize(
    "case, message",
    [
        ("labels", "is a Labels layer, but fusion needs two Image layers"),
        ("missing", "There is no layer named 'ct'"),
        ("same", "was picked for both inputs"),
        ("no modalities", "Say which modalities layers"),
        ("free text for small", "was trained with a fixed set of prompts"),
    ],
)
def test_fuse_layers_explains_bad_input(make_napari_viewer, brain, case: str, message: str) -> None:
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    viewer.add_labels((brain["mri"] > 0.5).astype(np.uint8), name="mask", scale=brain["scale"])
    viewer.add_image(brain["pet"], name="unnamed")
    before = state(viewer)
    call = {
        "labels": lambda: fuse_layers(viewer, "mri", "mask", modalities=("MRI", "PET")),
        "missing": lambda: fuse_layers(viewer, "mri", "ct", modalities=("MRI", "CT")),
        "same": lambda: fuse_layers(viewer, "mri", "mri"),
        "no modalities": lambda: fuse_layers(viewer, "mri", "unnamed"),
        "free text for small": lambda: fuse_layers(viewer, "mri", "pet", prompt="make it pretty"),
    }[case]
    with pytest.raises(UPFusionError, match=message) as raised:
        call()
    assert isinstance(raised.value, PromptError if case == "free text for small" else InputError)
    assert not re.search(r"\.\s+[A-Z]", str(raised.value)), "one sentence"
    assert_unchanged(viewer, before)


# ---------------------------------------------------------------------------------------------- the widget
def test_widget_docks_by_name_and_offers_only_image_layers(make_napari_viewer, brain) -> None:
    viewer = make_napari_viewer()
    widget = dock(viewer)
    assert list(widget["layer_a"].choices) == []
    add_brain(viewer, brain)
    viewer.add_labels(np.zeros(brain["mri"].shape, np.uint8), name="mask")
    viewer.add_points(np.zeros((1, 3)), name="seeds")
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="photo", rgb=True)
    names = [layer.name for layer in widget["layer_a"].choices]
    assert names == ["mri", "pet", "photo"] and [layer.name for layer in widget["layer_b"].choices] == names
    # a sensible pair is preselected, with the modalities the layers carry
    assert (widget["layer_a"].value.name, widget["layer_b"].value.name) == ("mri", "pet")
    assert (widget["modality_a"].value, widget["modality_b"].value) == ("MRI", "PET")
    viewer.layers["pet"].name = "fdg"
    assert "fdg" in [layer.name for layer in widget["layer_b"].choices]
    assert list(widget["modality_a"].choices) == ["MRI", "VIS", "CT", "PET", "SPECT", "IR"]


def test_widget_prompt_follows_the_pair_and_the_model(make_napari_viewer, brain) -> None:
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    widget = dock(viewer)
    assert list(widget["model"].choices) == [*available_fusers(), CHECKPOINT]

    # small: only its built-in prompts, shown read-only, prefilled from the pair
    assert widget["model"].value == "small"
    assert list(widget["prompt"].choices) == list(get_config("small").prompts)
    assert widget["prompt_text"].value == DEFAULT_PROMPTS["MRI-PET"] and widget["prompt_text"].read_only
    assert (
        "built-in prompts" in widget["prompt_note"].value and "Free text is not understood" in widget["prompt"].tooltip
    )
    widget["modality_b"].value = "CT"
    assert widget["prompt_text"].value == DEFAULT_PROMPTS["MRI-CT"]

    # a classical fuser reads no prompt
    widget["model"].value = "average"
    assert not widget["prompt_text"].enabled and widget.options()["prompt"] is None

    # the paper model takes free text, starting from the one prompt its weights were trained with, listed
    # first, whatever the pair; the pair prompts are offered as experiments; typed text is kept when the pair changes
    widget["model"].value = "paper"
    assert not widget["prompt_text"].read_only and widget["prompt_text"].value == AUTHORS_PROMPT
    assert widget["prompt"].choices[0] == AUTHORS_PROMPT and widget.options()["prompt"] == AUTHORS_PROMPT
    assert "trained with the authors' prompt alone" in widget["prompt_note"].value
    assert "channel order it never saw" in widget["prompt"].tooltip
    combo = widget["prompt"].native
    labels = dict(zip(widget["prompt"].choices, (combo.itemText(i) for i in range(combo.count()))))
    assert labels[AUTHORS_PROMPT] == "authors' prompt (trained)" and "experiment" in labels[DEFAULT_PROMPTS["MRI-CT"]]
    widget["prompt"].value = DEFAULT_PROMPTS["MRI-CT"]  # still selectable and editable
    assert widget.options()["prompt"] == DEFAULT_PROMPTS["MRI-CT"]
    widget["modality_b"].value = "SPECT"
    assert widget.options()["prompt"] == DEFAULT_PROMPTS["MRI-CT"]  # the pair does not pick a CLIP model's prompt
    widget["prompt_text"].value = "Keep the bright bone."
    assert widget["prompt"].value == CUSTOM_PROMPT
    widget["modality_b"].value = "PET"
    assert widget.options()["prompt"] == "Keep the bright bone."
    assert widget["checkpoint"].native.isHidden()
    widget["model"].value = CHECKPOINT
    assert not widget["checkpoint"].native.isHidden()


def test_widget_runs_the_small_model_and_screenshot(make_napari_viewer, brain, qtbot, notifications, tmp_path) -> None:
    from napari.resources._icons import build_theme_svgs
    from qtpy.QtCore import QDir

    # napari builds its themed icons at import, under the HOME of that moment, and points Qt at them once per
    # process; conftest gives every test its own HOME, so build them here and point Qt here too (cosmetic only)
    QDir.addSearchPath("theme_dark", build_theme_svgs("dark", "builtin"))
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 860)
    add_brain(viewer, brain)
    widget = dock(viewer)
    before = state(viewer)
    widget["device"].value = "cpu"
    widget["colormap"].value = "hot"
    widget["run_button"].native.click()
    assert widget.running and not widget["run_button"].enabled and widget["cancel_button"].enabled
    wait_until_idle(qtbot, widget)

    assert errors(notifications) == []
    fused = viewer.layers[-1]
    assert fused is widget.last_layer and fused.name == "fused(mri, pet)"  # the layer itself, not a proxy
    assert_unchanged(viewer, before + [(id(fused), fused.name, fused.data)])
    assert_placed_like(fused, viewer.layers["mri"])
    assert fused.rgb, "a colormap on B gives a colour fusion"
    info = fused.metadata["upfusion"]
    assert info["model"] == "small" and info["colormap"] == "hot" and info["input_layers"] == ["mri", "pet"]
    assert info["prompt"] == DEFAULT_PROMPTS["MRI-PET"] and info["color_output"] is True
    assert widget["progress"].value == widget["progress"].max == len(brain["mri"])
    assert "Added 'fused(mri, pet)'" in widget["status"].value
    assert widget["run_button"].enabled and not widget["cancel_button"].enabled

    # the picture for the documentation: the colour fusion above its inputs, the widget docked
    viewer.reset_view()
    qtbot.wait(300)
    write = os.environ.get("UPFUSION_WRITE_SCREENSHOT") == "1"
    path = REPO / "docs" / "images" / "widget.png" if write else tmp_path / "widget.png"
    picture = viewer.screenshot(canvas_only=False, flash=False)[..., :3]
    from PIL import Image

    Image.fromarray(picture).save(path, optimize=True)
    assert picture.shape[0] > 500 and picture.shape[1] > 900
    assert 20_000 < path.stat().st_size < 500_000 and picture.std() > 10, "the screenshot shows something"

    # Run again: another layer, the first one untouched
    first = np.array(fused.data, copy=True)
    widget["colour_output"].value = False
    widget.run()
    wait_until_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers][-2:] == ["fused(mri, pet)", "fused(mri, pet) [1]"]
    np.testing.assert_array_equal(viewer.layers["fused(mri, pet)"].data, first)
    assert not viewer.layers[-1].rgb and viewer.layers[-1].metadata["upfusion"]["color_output"] is False


def test_preview_fuses_the_shown_slice_into_one_layer_that_run_replaces(make_napari_viewer, brain, qtbot, notifications):
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    mri = viewer.layers["mri"]
    assert mri.scale[0] == 2.0 and mri.translate[0] != 0  # world and data positions differ along the slicing axis
    expected = fuse_layers(viewer, "mri", "pet", modalities=("MRI", "PET"), device="cpu", colormap="hot")
    viewer.layers.remove(expected)
    widget = dock(viewer)
    widget["device"].value, widget["colormap"].value = "cpu", "hot"
    before = state(viewer)

    for index in (4, 1):  # a second preview replaces the first
        viewer.dims.set_point(0, mri.translate[0] + index * mri.scale[0])  # world mm of data slice `index`
        assert current_slice(viewer, mri, 0) == index
        widget["preview_button"].native.click()
        assert widget.running and not widget["preview_button"].enabled and not widget["run_button"].enabled
        wait_until_idle(qtbot, widget)
        assert errors(notifications) == []
        previews = [layer for layer in viewer.layers if layer.name == PREVIEW_NAME]
        assert len(previews) == 1 and len(viewer.layers) == 3
        preview = previews[0]
        assert preview.rgb and preview.data.shape == (1, *brain["mri"].shape[1:], 3)
        # the same pixels as that slice of the whole volume's fusion (whole-volume intensity ranges)...
        np.testing.assert_allclose(preview.data[0], expected.data[index], atol=1e-3)
        # ...drawn exactly over it
        np.testing.assert_allclose(preview.data_to_world((0, 0, 0)), mri.data_to_world((index, 0, 0)))
        assert preview.metadata["upfusion"]["slice"] == index and preview.metadata["upfusion"]["model"] == "small"
        assert f"Preview of slice {index}" in widget["status"].value
    assert_unchanged(viewer, before[:2] + [(id(preview), preview.name, preview.data)])

    widget["run_button"].native.click()
    wait_until_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["mri", "pet", "fused(mri, pet)"]  # the volume replaced it
    np.testing.assert_allclose(viewer.layers[-1].data, expected.data, atol=1e-3)


class SlowAverage(nn.Module):
    """A deliberately slow slice fuser (0.15 s a batch), so that Cancel lands in the middle of a run."""

    uses_text = False

    def forward(self, a: torch.Tensor, b: torch.Tensor, text_code=None) -> torch.Tensor:
        time.sleep(0.15)
        return (a + b) / 2


def test_cancel_stops_the_run_and_adds_nothing(make_napari_viewer, qtbot, notifications, monkeypatch) -> None:
    info = registry.FuserInfo("slow-average", lambda device: SlowAverage(), "a slow test fuser", False)
    monkeypatch.setitem(registry._REGISTRY, "slow-average", info)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((24, 32, 32), dtype=np.float32), name="a", metadata={"modality": "MRI"})
    viewer.add_image(rng.random((24, 32, 32), dtype=np.float32), name="b", metadata={"modality": "PET"})
    widget = dock(viewer)
    widget["model"].value = "slow-average"
    widget["device"].value = "cpu"
    before = state(viewer)

    widget["run_button"].native.click()
    qtbot.waitUntil(lambda: widget["progress"].value > 0, timeout=20_000)
    assert widget.running and widget["progress"].value < widget["progress"].max
    widget["cancel_button"].native.click()
    wait_until_idle(qtbot, widget, timeout=20_000)

    assert_unchanged(viewer, before)
    assert widget.last_layer is None and errors(notifications) == []
    assert any("cancelled" in str(n.message) for n in notifications)
    assert widget["run_button"].enabled and not widget["cancel_button"].enabled and widget["progress"].value == 0


class CancelsDuringLastBatch(nn.Module):
    """Presses Cancel (sets the widget's event) while fusing the last batch, after the runner's last check."""

    uses_text = False

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.widget, self.left = None, batches

    def forward(self, a: torch.Tensor, b: torch.Tensor, text_code=None) -> torch.Tensor:
        self.left -= a.shape[0]
        if self.left <= 0:
            self.widget.controller.cancel_event.set()
        return (a + b) / 2


def test_cancel_after_the_last_batch_still_adds_nothing(make_napari_viewer, qtbot, notifications, monkeypatch):
    fuser = CancelsDuringLastBatch(batches=4)
    info = registry.FuserInfo("late-cancel", lambda device: fuser, "cancel during the last batch", False)
    monkeypatch.setitem(registry._REGISTRY, "late-cancel", info)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    viewer.add_image(rng.random((4, 32, 32), dtype=np.float32), name="a", metadata={"modality": "MRI"})
    viewer.add_image(rng.random((4, 32, 32), dtype=np.float32), name="b", metadata={"modality": "PET"})
    widget = fuser.widget = dock(viewer)
    widget["model"].value = "late-cancel"
    widget["device"].value = "cpu"
    before = state(viewer)
    widget["run_button"].native.click()
    wait_until_idle(qtbot, widget, timeout=20_000)
    assert fuser.left <= 0 and widget.controller.cancel_event.is_set()  # the whole volume was fused, then cancelled
    assert_unchanged(viewer, before)
    assert widget.last_layer is None and any("cancelled" in str(n.message) for n in notifications)


@pytest.fixture
def clip_checkpoint(tmp_path, tiny_config) -> Path:
    """A small UP-Fusion checkpoint whose text comes from CLIP (like the paper model), randomly initialised."""
    from napari_upfusion.model import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(create_model(tiny_config), tmp_path / "tiny_clip.safetensors")


ERROR_CASES = {
    "same layer twice": "was picked for both inputs",
    "different shapes, no geometry": "differ ((64, 64) and (48, 48)) and neither image carries physical geometry",
    "paper weights absent": "The authors' UP-Fusion checkpoint was not found",
    "no checkpoint chosen": "Choose a checkpoint file",
    "colour photo with a volume": "Input a is 2-D but input b is 3-D",
    "new prompt without CLIP": "No CLIP ViT-B/32 weights were found and this prompt has no cached code",
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_notified_and_the_widget_stays_usable(
    make_napari_viewer, brain, qtbot, notifications, case: str, request
) -> None:
    viewer = make_napari_viewer()
    add_brain(viewer, brain)
    viewer.add_image(np.random.default_rng(1).random((64, 64), dtype=np.float32), name="plain64")
    viewer.add_image(np.random.default_rng(2).random((48, 48), dtype=np.float32), name="plain48")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8) + np.arange(64, dtype=np.uint8)[:, None, None], name="photo")
    widget = dock(viewer)
    widget["model"].value = "average"
    layers = viewer.layers
    if case == "same layer twice":
        widget["layer_a"].value = widget["layer_b"].value = layers["mri"]
    elif case == "different shapes, no geometry":
        widget["layer_a"].value, widget["layer_b"].value = layers["plain64"], layers["plain48"]
    elif case == "paper weights absent":
        widget["model"].value = "paper"
    elif case == "no checkpoint chosen":
        widget["model"].value = CHECKPOINT
    elif case == "colour photo with a volume":
        widget["layer_a"].value, widget["layer_b"].value = layers["photo"], layers["pet"]
        widget["modality_a"].value = "VIS"
    elif case == "new prompt without CLIP":
        widget["model"].value = CHECKPOINT
        widget["checkpoint"].value = request.getfixturevalue("clip_checkpoint")
        widget["prompt_text"].value = "Keep the metabolic hot spots and the cortex."
    before = state(viewer)

    widget["run_button"].native.click()
    wait_until_idle(qtbot, widget)
    shown = errors(notifications)
    assert len(shown) == 1 and ERROR_CASES[case] in shown[0], shown
    assert widget["status"].value == shown[0]
    assert_unchanged(viewer, before)
    assert widget["run_button"].enabled and not widget["cancel_button"].enabled

    # still usable: a valid choice runs and adds a layer
    widget["layer_a"].value, widget["layer_b"].value = layers["mri"], layers["pet"]
    widget["modality_a"].value, widget["modality_b"].value = "MRI", "PET"
    widget["model"].value = "average"
    widget["run_button"].native.click()
    wait_until_idle(qtbot, widget)
    assert viewer.layers[-1].name == "fused(mri, pet)" and len(errors(notifications)) == 1


def test_a_dask_layer_is_fused_lazily(make_napari_viewer) -> None:
    """Volumes larger than memory: a dask-backed layer gives a lazy fused layer equal to the eager one."""
    import dask.array as da

    from napari_upfusion import fuse, fuse_layers

    rng = np.random.default_rng(3)
    mri, pet = rng.random((6, 32, 40)).astype(np.float32), rng.random((6, 32, 40)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(mri, chunks=(2, 32, 40)), name="mri", scale=(2, 1, 1))
    viewer.add_image(da.from_array(pet, chunks=(2, 32, 40)), name="pet", scale=(2, 1, 1))
    layer = fuse_layers(viewer, "mri", "pet", modalities=("MRI", "PET"), model="average")
    assert isinstance(layer.data, da.Array)
    np.testing.assert_allclose(np.asarray(layer.data), fuse(mri, pet, model="average"), atol=1e-6)
    assert tuple(layer.scale) == (2, 1, 1)
