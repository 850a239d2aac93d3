"""Keep a late ``import triton`` from crashing a process that already draws with Mesa's OpenGL.

Triton (>= 3.7, installed with CUDA builds of torch) exports its own LLVM symbols.
When Mesa's software OpenGL (llvmpipe, as in VMs, remote desktops and Xvfb) has
already loaded ``libLLVM`` into the process, importing triton afterwards crashes
the interpreter with a segmentation fault while LLVM initialises.  napari creates
its OpenGL canvas before it imports a plugin's widget, reader or sample data, and
``torchvision`` imports ``torch._dynamo``, which imports triton.  So in exactly
that situation (Linux, a ``libLLVM`` already mapped, triton not yet imported)
triton is marked as unavailable for this process and torch runs without it.
Eager execution, the default, never needs triton.  The optional compiled path
(``compile=True``, ``upfusion fuse --compile``) runs the network through
``torch.compile``, which generates C++ on a CPU but triton kernels on a GPU: on a
GPU in such a process the compilation fails on the first batch and the engine
falls back to eager execution for good (see
:class:`~napari_upfusion.engine.runner.SliceRunner`): the same numbers, without the
speed-up.  Everywhere else nothing changes.
"""

from __future__ import annotations

import sys

__all__ = ["protect_from_late_triton"]


def protect_from_late_triton() -> bool:
    """Mark triton unavailable if importing it now would crash; returns whether it did."""
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            loaded = any("/libLLVM" in line for line in maps)
    except OSError:
        return False
    if loaded:
        sys.modules["triton"] = None  # `import triton` now raises ImportError; torch checks for that
    return loaded
