"""The guard that keeps a late ``import triton`` from crashing a process that draws with Mesa's OpenGL."""

from __future__ import annotations

import io
import sys

import pytest

from napari_upfusion.plugin import gl_guard


def _maps(text: str):
    def fake_open(path, *args, **kwargs):
        assert path == "/proc/self/maps"
        return io.StringIO(text)

    return fake_open


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard acts on Linux only")
def test_triton_is_marked_unavailable_only_next_to_a_loaded_llvm(monkeypatch):
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.setattr(gl_guard, "open", _maps("7f00-7f10 r-xp 0 08:01 1 /usr/lib/libc.so.6\n"), raising=False)
    assert gl_guard.protect_from_late_triton() is False and "triton" not in sys.modules

    monkeypatch.setattr(gl_guard, "open", _maps("7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libLLVM.so.19\n"),
                        raising=False)  # fmt: skip
    assert gl_guard.protect_from_late_triton() is True and sys.modules["triton"] is None
    with pytest.raises(ImportError):
        import triton  # noqa: F401
    assert gl_guard.protect_from_late_triton() is False  # decided once: triton is already "imported"


def test_the_guard_says_what_it_costs_the_optional_compiled_path():
    """It used to say the package does not use torch.compile; it does, when asked (compile=True, --compile)."""
    doc = " ".join(gl_guard.__doc__.split())
    assert "does not use ``torch.compile``" not in doc
    assert "``compile=True``" in doc and "falls back to eager execution" in doc
