"""Where Qt cannot start, the GUI tests fail with one sentence and pytest still prints its summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _qt_check import missing_libraries

HERE = Path(__file__).parent


def test_missing_libraries_are_read_off_ldd():
    ldd = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibxcb-icccm.so.4 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
        "\tlibxcb-keysyms.so.1 => not found\n"
        "\tlibxcb-icccm.so.4 => not found\n"
    )
    assert missing_libraries(ldd) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert missing_libraries("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb platform is Linux's")
def test_without_a_display_gui_tests_fail_with_one_sentence_and_a_summary():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
         str(HERE / "test_widget.py"), "-k", "dask_layer"],
        capture_output=True, text=True, timeout=600, check=False, env=env, cwd=HERE.parent,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # failed, not aborted (134) nor skipped (0)
    assert "Qt cannot start: there is no display" in done.stdout
    assert "1 failed" in done.stdout.splitlines()[-1]
