"""examples/fuse_layers.py runs as a user would run it: napari first, the plugin imported later, no crash.

napari imports a plugin only once its OpenGL canvas exists; with Mesa's software OpenGL a later
``import triton`` (pulled in by torchvision) used to kill the process (see napari_upfusion.plugin.gl_guard).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fuse_layers.py"


def test_example_script_fuses_the_sample_and_writes_a_screenshot(tmp_path: Path) -> None:
    if not os.environ.get("DISPLAY"):
        import pytest

        pytest.skip("needs a display (run under xvfb-run)")
    shot = tmp_path / "example.png"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE.parents[1] / "src"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", "average", "--screenshot", str(shot)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "added 'fused(MRI, PET)'" in done.stdout and shot.stat().st_size > 10_000
