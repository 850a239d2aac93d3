"""Shared fixtures of the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    """The development evaluation pairs (``../shared/eval`` beside the repository, or ``$UPFUSION_EVAL_DIR``).

    They are never copied into the repository; tests that need them are skipped where they are absent.
    """
    path = Path(os.environ.get("UPFUSION_EVAL_DIR") or REPO_ROOT.parent / "shared" / "eval")
    if not (path / "MRI_CT" / "MRI").is_dir():
        pytest.skip(
            f"The evaluation pairs are not at {path} (expected MRI_CT/MRI beneath it); "
            "set UPFUSION_EVAL_DIR to the folder that holds MRI_CT, MRI_SPECT and TNO."
        )
    return path
