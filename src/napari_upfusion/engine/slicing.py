"""Volumes as stacks of 2-D slices, and lazy volumes as slabs along the slicing axis.

The engine fuses ``[S, H, W]`` stacks (:class:`~.runner.SliceRunner`): :func:`to_slices`
turns a 2-D image or a 3-D volume sliced along ``axis`` into one and :func:`from_slices`
puts the fused stack back.  Lazy (dask) volumes are read, fused and written in slabs of
whole slices (:func:`slab_chunks`, :data:`SLAB_BYTES`), one computed block at a time
when written (:func:`computed_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da

__all__ = ["SLAB_BYTES", "computed_blocks", "from_slices", "slab_chunks", "to_slices"]

#: Size of one input slab (as float32) when a lazy input is not chunked along the slicing axis.
SLAB_BYTES = 16 << 20


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """``[S, H, W]`` view of a 2-D image (S = 1) or a 3-D volume sliced along ``axis``."""
    if volume.ndim == 2:
        return volume[None]
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0))


def from_slices(stack: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Inverse of :func:`to_slices`: the image (``ndim`` 2) or volume (``ndim`` 3) a ``[S, H, W]`` stack stands for."""
    return stack[0] if ndim == 2 else np.moveaxis(stack, 0, axis)


def slab_chunks(x: da.Array, axis: int) -> tuple[tuple[int, ...], ...]:
    """Chunks for fusing along ``axis``: whole along the other axes, slabs along ``axis``.

    The slabs are ``x``'s own chunks along ``axis`` when it has several there,
    otherwise slabs of about :data:`SLAB_BYTES` as float32.
    """
    along = x.chunks[axis]
    if len(along) == 1:
        plane = int(np.prod([n for i, n in enumerate(x.shape) if i != axis]))
        slab = max(1, min(x.shape[axis], SLAB_BYTES // (4 * max(1, plane))))
        full, rest = divmod(x.shape[axis], slab)
        along = (slab,) * full + ((rest,) if rest else ())
    return tuple(along if i == axis else (n,) for i, n in enumerate(x.shape))


def computed_blocks(x: da.Array) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """``(starts, block)`` of each chunk of ``x``, computed one after the other in this process (threads)."""
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in x.chunks]
    for index in np.ndindex(*x.numblocks):
        starts = tuple(int(offsets[d][i]) for d, i in enumerate(index))
        yield starts, np.asarray(x.blocks[index].compute(scheduler="threads"))
