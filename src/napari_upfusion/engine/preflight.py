"""The checks of a fusion from files to a file that need no model and no pixel, run before any work.

:func:`check_file_fusion` puts together the checks of :mod:`.validate` and the headers of
:mod:`.io` for one pair of files and one output.  It imports nothing heavy (no torch), so
``upfusion fuse`` runs it before it loads PyTorch and answers a wrong path at once;
:func:`~.api.fuse_files` runs it again (it is cheap) for callers of the Python API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .intensity import window_range
from .io import ImageHeader, image_header
from .options import EngineOptions
from .registry import available_fusers
from .validate import (
    check_distinct_files,
    check_host_memory,
    check_modalities,
    check_output,
    check_paths,
    path_kind,
)

__all__ = ["check_file_fusion"]


def check_file_fusion(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    modalities: tuple[str, str] = ("MRI", "PET"),
    colormap: str | None = None,
    window: str | tuple[float, float] | None = None,
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    format: str | None = None,
    **options: Any,
) -> tuple[ImageHeader, ImageHeader]:
    """Refuse, before any work, a fusion of files ``a`` and ``b`` into ``output`` that cannot succeed.

    In order: no output is an input (``a``, ``b``, a checkpoint or CLIP weights given by path, and
    ``inputs``; :func:`~.validate.check_paths`), ``a`` and ``b`` are not the same image
    (:func:`~.validate.check_distinct_files`), their headers are readable (:func:`~.io.image_header`),
    the output can be written and its format holds a volume of ``a``'s shape
    (:func:`~.validate.check_output`), the fusion fits in free memory
    (:func:`~.validate.check_host_memory`), and the modalities and CT window are known.

    Parameters
    ----------
    a, b, output, overwrite, modalities, colormap, window, inputs, format
        As for :func:`~.api.fuse_files`.
    options
        The engine options (:class:`~.options.EngineOptions`); only ``model`` and ``clip_weights``
        are looked at (as inputs, when they are files).

    Returns
    -------
    (ImageHeader, ImageHeader)
        What ``a`` and ``b`` declare.
    """
    settings = EngineOptions(**options)
    model = settings.model
    named = [("the checkpoint", model)] if isinstance(model, (str, os.PathLike)) else []
    named = [(label, p) for label, p in named if os.fspath(p) not in available_fusers() and path_kind(p) == "file"]
    check_paths(
        [("input a", a), ("input b", b), *named, ("the CLIP weights", settings.clip_weights), *inputs],
        [("the output", output)],
    )
    check_distinct_files(a, b)
    header_a, header_b = image_header(a), image_header(b)
    check_output(output, shape=header_a.shape, overwrite=overwrite, format=format)
    check_host_memory(header_a.shape, header_a.rgb or header_b.rgb or colormap is not None)
    check_modalities(modalities)
    if window is not None:
        window_range(window)
    return header_a, header_b
