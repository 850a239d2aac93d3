"""What a fusion returns and the record it keeps of how it was made, built in one place for every path.

:class:`FusionResult` is what :meth:`~napari_upfusion.engine.api.FusionEngine.fuse`
returns; its ``info`` (also ``image.metadata["upfusion"]``) is built by
:func:`fusion_record` for the in-memory path, the one-slice preview and the lazy
path alike: package version, model (and checkpoint with its SHA-256), modalities,
prompt and how its code was made, device, precision, the fusion settings, the
inputs and the time taken.  :func:`result_metadata` is the fused image's metadata:
that record, and what the reference input's file said about the grid the result
shares (the DICOM headers a derived series is written from).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._version import __version__
from ..model.text.prompts import is_trained_prompt, pair_key
from ..utils.files import file_sha256
from .image import ImageData

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..model.text.codes import PromptCode

__all__ = [
    "CARRIED_METADATA",
    "FusionResult",
    "RecordedEngine",
    "describe",
    "fusion_record",
    "model_identity",
    "result_metadata",
]


#: The reference image's metadata that its fused result keeps: the DICOM headers of the grid they share.
CARRIED_METADATA = ("dicom",)


@dataclass
class FusionResult:
    """A fused image, the record of how it was made, and the fused luminance.

    ``image`` is the result (in colour when an input was); ``info`` records the
    inputs, model, prompt, device, precision and timing; ``luma`` is the fused
    Y channel (``a``'s spatial shape, float32 in ``[0, 1]``), which is what the
    network produced before any chroma was put back.
    """

    image: ImageData
    info: dict[str, Any] = field(default_factory=dict)
    luma: np.ndarray | None = None


class RecordedEngine(Protocol):
    """What :func:`fusion_record` reads of an engine (:class:`~napari_upfusion.engine.api.FusionEngine`)."""

    model_name: str
    fuser: nn.Module
    device: torch.device
    precision: str

    @property
    def uses_text(self) -> bool: ...

    def known_code(self, prompt: str) -> PromptCode | None: ...


def describe(image: ImageData) -> str:
    """An input as the record names it: its file, or its shape and data type."""
    path = image.metadata.get("path")
    return str(path) if path else f"array {tuple(image.array.shape)} {image.array.dtype}"


def model_identity(model_name: str, fuser: nn.Module) -> dict[str, Any]:
    """What a fused result records about the model that made it (and its checkpoint, for loaded weights)."""
    info: dict[str, Any] = {"model": model_name}
    report = getattr(fuser, "load_report", None)
    if report is not None:
        info.update(
            checkpoint=report.source, checkpoint_sha256=file_sha256(report.source, remember=True), config=report.config
        )
    return info


def fusion_record(
    engine: RecordedEngine,
    modalities: tuple[str, str],
    prompt: str,
    inputs: tuple[ImageData, ImageData],
    started: float,
    *,
    batch_size: int | str | None,
    axis: int,
    colormap: str | None,
    window: Any,
    registered: bool,
    color_output: bool,
    compiled: bool,
    **extra: Any,
) -> dict[str, Any]:
    """The record a fused result keeps of how it was made (``extra`` keys come after the settings).

    ``prompt_trained`` says whether the prompt is one the weights were trained with (``None`` for
    fusers without a config); ``prompt_code`` how its code was made (encoder, and for CLIP the
    device and dtype it ran in); both ``None`` for fusers that read no text.  ``seconds`` is the
    time since ``started`` (:func:`time.perf_counter`).
    """
    config = getattr(engine.fuser, "config", None)
    reads_text = engine.uses_text
    code = engine.known_code(prompt) if reads_text else None
    return {
        "package": "napari-upfusion",
        "version": __version__,
        **model_identity(engine.model_name, engine.fuser),
        "modalities": list(modalities),
        "pair": pair_key(*modalities),
        "prompt": prompt if reads_text else None,
        "prompt_trained": is_trained_prompt(config, prompt) if reads_text and config is not None else None,
        "prompt_code": code.describe() if code is not None else None,
        "device": str(engine.device),
        "precision": engine.precision,
        "batch_size": batch_size,
        "axis": axis,
        "colormap": colormap,
        "window": window,
        "registered": registered,
        "color_output": color_output,
        "compiled": compiled,
        "inputs": [describe(image) for image in inputs],
        **extra,
        "seconds": round(time.perf_counter() - started, 3),
    }


def result_metadata(reference: ImageData, info: dict[str, Any]) -> dict[str, Any]:
    """The metadata of an image fused on ``reference``'s grid: :data:`CARRIED_METADATA` of the reference, and
    ``"upfusion"``, the record ``info`` of how it was made."""
    carried = {key: reference.metadata[key] for key in CARRIED_METADATA if key in reference.metadata}
    return {**carried, "upfusion": info}
