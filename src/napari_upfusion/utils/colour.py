"""The BT.601 luma weights: the one copy every layer uses (network input, YCbCr, metrics, sample data).

The authors' test script reads a colour first input and the network reduces it to
``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601); the engine's YCbCr, the
evaluation's grey conversion and the simulated data use the same weights.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["LUMA_WEIGHTS", "luma"]

#: ITU-R BT.601 luma weights of red, green and blue.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

T = TypeVar("T")


def luma(red: T, green: T, blue: T) -> T:
    """``0.299 R + 0.587 G + 0.114 B`` of three channels (numpy arrays or torch tensors), summed in that order."""
    return LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue  # type: ignore[operator]
