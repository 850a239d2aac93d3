"""Prompt codes: the ``[1, text_dim]`` vector that conditions UP-Fusion's channel perturbation, and their cache.

:func:`prompt_code` gives a model's code for a prompt: the stored row of a
``prompt-table`` model's table, or a CLIP code (:func:`clip_prompt_code`).  Every
CLIP code is cached on disk (:class:`PromptCodeCache`) keyed by the encoder's
identity, the device and dtype it ran in, and the prompt, so CLIP is loaded once
per new prompt and not at all for a prompt seen before.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import PromptError, WeightsNotFoundError
from ...utils.files import atomic_write_text, cache_dir
from ..upfusion import UPFusion
from .clip import CLIP_PRECISION, CLIP_WEIGHTS_ENV, OPENAI_IDENTITY, clip_encoder, find_clip_weights, prompt_cache_key

__all__ = ["PromptCode", "PromptCodeCache", "clip_prompt_code", "encode_prompt", "prompt_code"]


@dataclass
class PromptCodeCache:
    """Prompt codes on disk: one small JSON file per (encoder identity, prompt)."""

    folder: Path

    @classmethod
    def default(cls) -> PromptCodeCache:
        return cls(cache_dir() / "prompt_codes")

    def _path(self, identity: str, prompt: str) -> Path:
        digest = hashlib.sha256(f"{identity}\0{prompt}".encode()).hexdigest()
        return self.folder / identity / f"{digest[:32]}.json"

    def get(self, identity: str, prompt: str) -> torch.Tensor | None:
        try:
            entry = json.loads(self._path(identity, prompt).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("prompt") != prompt:
            return None
        return torch.tensor(entry["code"], dtype=torch.float32)

    def put(self, identity: str, prompt: str, code: torch.Tensor) -> None:
        entry = {"identity": identity, "prompt": prompt, "code": [float(v) for v in code.float().tolist()]}
        atomic_write_text(self._path(identity, prompt), json.dumps(entry))


@dataclass(frozen=True)
class PromptCode:
    """A prompt's ``[1, text_dim]`` float32 code and where it came from.

    ``encoder`` is ``"prompt-table"`` or the CLIP weights' name (see :attr:`ClipTextEncoder.name`);
    ``device`` (``"cuda"``/``"cpu"``) and ``dtype`` (``"fp16"``/``"fp32"``) say how CLIP ran, ``None``
    for a table; ``cached`` whether the code was read from the on-disk cache.
    """

    code: torch.Tensor
    encoder: str
    device: str | None = None
    dtype: str | None = None
    cached: bool = False

    def describe(self) -> dict[str, str | None]:
        """The provenance record of the code: encoder, device and dtype."""
        return {"encoder": self.encoder, "device": self.device, "dtype": self.dtype}


def prompt_code(model: UPFusion, prompt: str, **clip_options: Any) -> PromptCode:
    """The code of ``prompt`` for ``model``, with where it came from.

    For a ``prompt-table`` model, the stored code of that built-in prompt; for
    a CLIP model, :func:`clip_prompt_code` with ``clip_options`` (``clip_weights``,
    ``precision``, ``device``, ``cache``), which a prompt-table model does not need.
    """
    prompt = " ".join(prompt.split())
    if not prompt:
        raise PromptError("The prompt is empty; type a prompt or pick a default one.")
    config = model.config
    if config.text_encoder != "prompt-table":
        return clip_prompt_code(prompt, **clip_options)
    if prompt not in config.prompts:
        listed = "; ".join(f"'{p[:40]}...'" for p in config.prompts)
        raise PromptError(
            f"The {config.name!r} model was trained with a fixed set of prompts and does not understand free "
            f"text; pick one of its built-in prompts ({listed}) or use the 'paper' model with CLIP weights."
        )
    code = model.prompt_codes[config.prompts.index(prompt)].detach().float().cpu().unsqueeze(0)
    return PromptCode(code, "prompt-table")


def clip_prompt_code(
    prompt: str,
    *,
    clip_weights: str | os.PathLike[str] | None = None,
    precision: str = CLIP_PRECISION,
    device: str | torch.device | None = None,
    cache: PromptCodeCache | None = None,
) -> PromptCode:
    """The CLIP ViT-B/32 code of ``prompt`` closest to the authors' that is cached or can be made here.

    In this order: a cached code computed on CUDA; a new one on CUDA if this
    machine has a GPU and CLIP weights; a cached code computed on the CPU; a new
    one on the CPU.  New codes are cached.  ``device`` (``"cuda"`` or ``"cpu"``)
    pins the device instead.  Without CLIP weights and without a cached code,
    raises :class:`WeightsNotFoundError` saying what to do.
    """
    prompt = " ".join(prompt.split())
    cache = cache or PromptCodeCache.default()
    weights = find_clip_weights(clip_weights)
    name = clip_encoder(weights, precision, torch.device("cpu")).name if weights else OPENAI_IDENTITY
    devices = [torch.device(device).type] if device is not None else ["cuda", "cpu"]
    for where in devices:
        # codes cached before the device was part of the key were all computed on the CPU
        keys = [prompt_cache_key(name, where, precision)] + ([f"{name}-{precision}"] if where == "cpu" else [])
        for key in keys:
            code = cache.get(key, prompt)
            if code is not None:
                return PromptCode(code.unsqueeze(0), name, where, precision, cached=True)
        if weights is not None and (where == "cpu" or torch.cuda.is_available()):
            encoder = clip_encoder(weights, precision, torch.device(where))
            code = encoder.encode([prompt])[0]
            cache.put(encoder.identity, prompt, code)
            return PromptCode(code.unsqueeze(0), name, where, precision)
    if weights is not None:  # only when ``device`` pins CUDA on a machine without one
        raise WeightsNotFoundError(f"CLIP codes were asked for on {device}, which this machine does not have; use 'cpu'.")
    raise WeightsNotFoundError(
        "No CLIP ViT-B/32 weights were found and this prompt has no cached code; run `upfusion download clip` "
        f"(needs internet) or put OpenAI's ViT-B-32.pt in {cache_dir() / 'clip'} or set ${CLIP_WEIGHTS_ENV}."
    )


def encode_prompt(model: UPFusion, prompt: str, **options: Any) -> torch.Tensor:
    """The ``[1, text_dim]`` float32 code of ``prompt`` for ``model``; ``options`` as for :func:`prompt_code`."""
    return prompt_code(model, prompt, **options).code
