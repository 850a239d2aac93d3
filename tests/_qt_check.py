"""Can Qt start here?  Asked once per test session, before any QApplication exists.

When Qt's platform plugin cannot load (a shared library missing on a headless
Linux, or no display), creating a ``QApplication`` calls ``abort()`` and takes
pytest down with it: no summary, no hint.  :func:`qt_problem` finds that out
first, without creating an application in this process: it reads ``ldd`` of
the xcb platform plugin and of the Qt modules napari uses for libraries that
are "not found", then starts a ``QApplication`` in a child process.  The
answer is one sentence, which ``conftest.py`` turns into a failure of each GUI
test while every other test runs and pytest prints its summary.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["GUI_FIXTURES", "missing_libraries", "qt_problem"]

#: Fixtures that create a QApplication (pytest-qt's and napari's); a test that uses one is a GUI test.
GUI_FIXTURES = frozenset({"qapp", "qtbot", "make_napari_viewer", "make_napari_viewer_proxy"})

#: Qt bindings in the order qtpy tries them.
_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")

_HOW_TO_FIX = (
    "run `make test`, which installs them with apt-get, or install the Debian/Ubuntu packages the Makefile lists"
)

_PROBE = "from qtpy.QtWidgets import QApplication; app = QApplication([]); print(app.platformName())"


def missing_libraries(ldd_output: str) -> list[str]:
    """The shared libraries that ``ldd`` reports as ``not found``, in the order it lists them, each once."""
    missing = [line.split("=>")[0].strip() for line in ldd_output.splitlines() if "not found" in line]
    return list(dict.fromkeys(name for name in missing if name))


def _binding_files() -> list[str]:
    """The first installed binding's xcb platform plugin and its QtGui, QtWidgets and QtOpenGL modules."""
    for name in _BINDINGS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        plugins = glob.glob(str(root / "**" / "platforms" / "libqxcb.so"), recursive=True)
        modules = [str(p) for module in ("QtGui", "QtWidgets", "QtOpenGL") for p in root.glob(f"{module}.*so")]
        return plugins[:1] + modules
    return []


@functools.cache
def qt_problem() -> str | None:
    """Why Qt cannot start a GUI application in this environment, in one sentence, or None when it can."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform in ("", "xcb"):
        files = _binding_files()
        if not files:
            return "No Qt binding is installed; install the test extras (pip install '.[testing]') or run `make test`."
        if shutil.which("ldd"):
            found: list[str] = []
            for path in files:
                done = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
                found += missing_libraries(done.stdout + done.stderr)
            missing = list(dict.fromkeys(found))
            if missing:
                return (
                    f"Qt cannot start: its xcb platform plugin ({files[0]}) needs the shared libraries "
                    f"{', '.join(missing)}, which are not installed; {_HOW_TO_FIX}."
                )
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            return (
                "Qt cannot start: there is no display (DISPLAY is not set); run the tests under Xvfb, as "
                '`make test` does (xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest).'
            )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        return "Qt cannot start: creating a QApplication did not finish within 120 s (is the display responding?)."
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        # Qt's own message (qt.qpa.plugin: ...) says more than the interpreter's "Fatal Python error: Aborted"
        reason = next((line for line in lines if "qt" in line.lower()), lines[0] if lines else f"exit {done.returncode}")
        return f"Qt cannot start: creating a QApplication failed ({reason}); {_HOW_TO_FIX}."
    return None
