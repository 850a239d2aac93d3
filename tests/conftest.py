"""Shared fixtures: golden data, small configs, the evaluation pairs, an isolated user cache for every test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _qt_check import GUI_FIXTURES, qt_problem

DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = Path(os.environ.get("UPFUSION_EVAL_DIR") or REPO_ROOT.parent / "shared" / "eval")

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _is_gui_test(item: pytest.Item) -> bool:
    return bool(GUI_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a GUI test with one sentence when Qt cannot start, before its fixtures create a QApplication.

    Creating one where Qt's platform plugin cannot load aborts the whole process (no summary); this
    way the other tests still run and pytest prints its summary (see ``_qt_check``).
    """
    if _is_gui_test(item) and (problem := qt_problem()):
        pytest.fail(problem, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Report the failure above as a failed test, not as an error in a fixture."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "setup" and report.failed and _is_gui_test(item) and qt_problem():
        report.when = "call"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test sees an empty user cache and no weights-location variables."""
    monkeypatch.setenv("UPFUSION_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    for name in ("UPFUSION_PAPER_CHECKPOINT", "UPFUSION_CLIP_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    """The development evaluation pairs (``../shared/eval`` beside the repository, or ``$UPFUSION_EVAL_DIR``).

    They are never copied into the repository; tests that need them are skipped where they are absent.
    """
    if not (EVAL_DIR / "MRI_CT" / "MRI").is_dir():
        pytest.skip(
            f"The evaluation pairs are not at {EVAL_DIR} (expected MRI_CT/MRI beneath it); "
            "set UPFUSION_EVAL_DIR to the folder that holds MRI_CT, MRI_SPECT and TNO."
        )
    return EVAL_DIR


@pytest.fixture(scope="session")
def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "upfusion_golden_io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def paper_model():
    """The paper network with the authors' (patterned) checkpoint, loaded once per session."""
    from napari_upfusion.model import load_model

    return load_model(DATA / "upfusion_paper_patterned.pth.gz")


@pytest.fixture(scope="session")
def tiny_config():
    """A very small paper-shaped config with a CLIP text encoder, for fast tests."""
    from napari_upfusion.model import UPFusionConfig

    return UPFusionConfig(
        name="tiny",
        dim=8,
        num_blocks=(1, 1, 1, 1),
        num_refinement_blocks=1,
        heads=(1, 1, 2, 2),
        backbone="convnext_atto",
        backbone_input_size=32,
    )


@pytest.fixture(scope="session")
def random_clip(tmp_path_factory):
    """A randomly initialised open_clip ViT-B-32 saved as a state dict in OpenAI's layout (the stand-in for
    OpenAI's weights, which tests never download), and the model itself."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    with torch.no_grad():  # OpenAI's file holds fp16 weights; make the random ones fp16-representable too
        for p in model.parameters():
            p.copy_(p.half().float())
    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture()
def authors_prompt_code(golden):
    """The authors' prompt with a cached CLIP code, so CLIP-conditioned models run offline without CLIP weights.

    The code is the golden data's text code, cached under the key of OpenAI's CLIP run on the CPU in fp16 (as a
    machine without a GPU would have computed it); the test's cache folder is its own.
    """
    from napari_upfusion.model.text.clip import OPENAI_IDENTITY, prompt_cache_key
    from napari_upfusion.model.text.codes import PromptCodeCache
    from napari_upfusion.model.text.prompts import AUTHORS_PROMPT

    code = torch.from_numpy(golden["gray_text"][0])
    PromptCodeCache.default().put(prompt_cache_key(OPENAI_IDENTITY, "cpu", "fp16"), AUTHORS_PROMPT, code)
    return code.unsqueeze(0)


def rel_l2(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))
