"""``upfusion train``: training a small UP-Fusion on pairs the project can regenerate.

The data come from :mod:`napari_upfusion.data.synthetic` (packaged MNI152 and
scikit-image sources turned into modality pairs by documented transforms);
nothing from the evaluation folders is ever used.

Text conditioning: a ``prompt-table`` config stores one fixed code per built-in
prompt.  The codes are seeded Gaussian vectors (no CLIP weights exist here).
In UP-Fusion the text code only chooses a channel order (through a top-k that
passes no gradient), so neither the codes nor the text MLP learn; each pair
type simply presents its own fixed channel permutation, and the rest of the
network learns to fuse under it.  Each training pair is shown with the prompt
of its own pair type.  A CLIP-conditioned config (``paper``) is trained as the
authors' ``Train.py`` trains it: every pair with the one CLIP code of
:data:`~napari_upfusion.model.text.prompts.AUTHORS_PROMPT`, computed once before the
first step (which needs CLIP weights or a cached code).

Checkpoints (``last.pt``: model, optimiser and step, saved with plain tensors
and read back with ``weights_only=True``) make training resumable; the final
weights are written as fp16 safetensors with their config.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..engine.runner import resolve_device
from ..engine.validate import check_paths, path_kind
from ..errors import InputError, WeightsNotFoundError
from ..model import UPFusion, UPFusionConfig, create_model, read_checkpoint_file, save_checkpoint
from ..model.factory import config_from, list_configs
from ..model.text.codes import PromptCode, clip_prompt_code
from ..model.text.prompts import AUTHORS_PROMPT, DEFAULT_PROMPTS
from ..utils.files import atomic_path, os_error_sentence
from .loss import LOSSES
from .settings import TrainSettings

__all__ = ["PROMPT_ALIASES", "TrainSettings", "initialise_from", "prompt_table_codes", "train"]


#: Table prompts that no training pair is shown with, and the trained prompt whose code they share.
PROMPT_ALIASES: dict[str, str] = {DEFAULT_PROMPTS["authors"]: DEFAULT_PROMPTS["generic"]}


def prompt_table_codes(prompts: tuple[str, ...], text_dim: int, seed: int) -> torch.Tensor:
    """Seeded Gaussian codes, one row per prompt, scaled to a typical CLIP text-code norm (about 10).

    A prompt of :data:`PROMPT_ALIASES` (the authors' generic prompt) gets the code of the
    prompt it aliases, so it selects a channel order the network was trained under.
    """
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(len(prompts), text_dim, generator=generator) * (10.0 / math.sqrt(text_dim))
    for row, prompt in enumerate(prompts):
        if prompt in PROMPT_ALIASES and PROMPT_ALIASES[prompt] in prompts:
            codes[row] = codes[prompts.index(PROMPT_ALIASES[prompt])]
    return codes


def initialise_from(model: UPFusion, path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Copy the tensors of a weights file into ``model`` where name and shape match; the backbone is never copied.

    Returns ``(copied, skipped)`` key lists (skipped: in the model but not taken from the file).
    """
    content, _ = read_checkpoint_file(path)
    own = model.state_dict()
    copied = [k for k, v in content.items() if k in own and not k.startswith("scpm.backbone.") and v.shape == own[k].shape]
    with torch.no_grad():
        for key in copied:
            own[key].copy_(content[key].to(own[key].dtype))
    return sorted(copied), sorted(set(own) - set(copied))


def _learning_rate(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    length = s.schedule_steps or s.steps
    progress = (step - s.warmup) / max(1, length - s.warmup)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _collate(items: list[tuple[np.ndarray, np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    a = torch.from_numpy(np.stack([i[0] for i in items]))[:, None]
    b = torch.from_numpy(np.stack([i[1] for i in items]))[:, None]
    return a, b, [i[2] for i in items]


class _Indexed(torch.utils.data.Dataset):
    """A finite :class:`PairDataset` seen by index, so that a DataLoader's workers share out batches in order."""

    def __init__(self, pairs) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        return self.pairs[index]


def _batches(settings: TrainSettings, start_step: int):
    """Batches of (a, b, pair kinds); resuming at ``start_step`` continues the same pair stream.

    ``a`` is the anatomical / visible image (the network's first slot), ``b`` the other one.
    Batch ``k`` holds pairs ``k * batch_size`` to ``(k + 1) * batch_size - 1`` of the stream
    whatever the number of data ``workers`` (processes that generate pairs ahead).
    """
    from torch.utils.data import DataLoader

    from ..data.synthetic import PairDataset

    start = start_step * settings.batch_size
    length = max(0, settings.steps - start_step) * settings.batch_size
    dataset = PairDataset(
        seed=settings.seed, size=settings.crop, kinds=settings.kinds, start=start, anatomies=settings.anatomies,
        length=length,
    )  # fmt: skip
    if not settings.workers:
        for first in range(0, length, settings.batch_size):
            yield _collate([dataset[i] for i in range(first, first + settings.batch_size)])
        return
    loader = DataLoader(
        _Indexed(dataset), batch_size=settings.batch_size, num_workers=settings.workers, collate_fn=_collate,
        pin_memory=settings.device.startswith("cuda"), persistent_workers=False, prefetch_factor=4,
    )  # fmt: skip
    yield from loader


def _config(settings: TrainSettings) -> UPFusionConfig:
    try:
        return config_from(settings.config)
    except KeyError:
        raise InputError(
            f"There is no model config named {settings.config!r}; use one of {', '.join(list_configs())} or the path "
            "of a JSON config file."
        ) from None
    except ValueError as error:
        raise InputError(f"{error}; give a config name or the path of a JSON config file.") from None


def _clip_code(cfg: UPFusionConfig, settings: TrainSettings) -> PromptCode:
    """The one CLIP code of the authors' prompt that every training pair of a CLIP config is shown with."""
    try:
        return clip_prompt_code(AUTHORS_PROMPT, clip_weights=settings.clip_weights)
    except WeightsNotFoundError as error:
        raise WeightsNotFoundError(
            f"Training the CLIP-conditioned {cfg.name!r} config needs the CLIP code of the authors' prompt, but "
            f"{str(error)[0].lower()}{str(error)[1:]}"
        ) from None


def train(
    out_dir: str | os.PathLike[str],
    settings: TrainSettings | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train (or resume) into ``out_dir``; returns the path of the final safetensors weights."""
    s = settings or TrainSettings()
    if s.loss not in LOSSES:
        raise InputError(f"Unknown training loss {s.loss!r}; choose one of {', '.join(LOSSES)}.")
    cfg = _config(s)
    if s.random_backbone:
        cfg = dataclasses.replace(cfg, backbone_weights=None)
    clip = _clip_code(cfg, s) if cfg.text_encoder != "prompt-table" else None  # refuse before any work
    out = Path(out_dir)
    if path_kind(out) == "file":
        raise InputError(f"{out} is a file; give a folder for the training's checkpoints (it is created if needed).")
    config_file = s.config if str(s.config).endswith(".json") else None
    check_paths(
        [("--init-from", s.init_from), ("the config file", config_file), ("the CLIP weights", s.clip_weights)],
        [("the training state", out / "last.pt"), ("the trained weights", out / f"upfusion_{cfg.name}.safetensors")],
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(os_error_sentence(error, out)) from None
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    device = resolve_device(s.device)
    model: UPFusion = create_model(cfg)
    if s.init_from and not (out / "last.pt").exists():
        copied, skipped = initialise_from(model, s.init_from)
        log(f"initialised {len(copied)} tensors from {s.init_from}; {len(skipped)} kept their initial values")
    if cfg.text_encoder == "prompt-table":
        model.prompt_codes.copy_(prompt_table_codes(cfg.prompts, cfg.text_dim, s.code_seed))
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=s.lr, weight_decay=s.weight_decay)
    step, elapsed = 0, 0.0
    last = out / "last.pt"
    if last.exists():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log(f"resumed from step {step}")
    model.train()
    history_file = out / "history.jsonl"
    batches = _batches(s, step)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16")
    loss_fn = LOSSES[s.loss]
    if s.loss == "edges":
        loss_fn = functools.partial(loss_fn, sigma=s.edges_sigmas[0], sigma_weight=s.edges_sigmas[1])
    tick = started = time.perf_counter()
    running: dict[str, float] = {}
    stop_at = s.steps
    while step < stop_at:
        a, b, kinds = next(batches)
        a, b = a.to(device, non_blocking=True), b.to(device, non_blocking=True)
        if clip is not None:
            code = clip.code.to(device)
        else:
            code = model.prompt_codes[torch.tensor([cfg.prompts.index(DEFAULT_PROMPTS[k]) for k in kinds], device=device)]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, s)
        with autocast:
            fused = model(a, b, code)
        losses = loss_fn(a, b, fused.float())
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, s.grad_clip)
        optimizer.step()
        step += 1
        if s.time_limit and time.perf_counter() - started >= s.time_limit:
            stop_at = step  # out of time: this step is the last, logged and saved as one
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + v.item()
        if step % s.log_every == 0 or step == stop_at:
            now = time.perf_counter()
            elapsed += now - tick
            tick = now
            n = s.log_every if step % s.log_every == 0 else step % s.log_every
            record = {"step": step, "lr": _learning_rate(step, s), "elapsed_s": round(elapsed, 1)}
            record.update({k: round(v / n, 5) for k, v in running.items()})
            running = {}
            with open(history_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            log(json.dumps(record))
        if step % s.save_every == 0 or step == stop_at:
            with atomic_path(last) as tmp:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed},
                    tmp,
                )
    model.cpu().eval()
    recorded = {**asdict(s), **{k: list(getattr(s, k)) for k in ("kinds", "anatomies", "edges_sigmas")}}
    meta = {"training": json.dumps(recorded), "steps": str(step), "wall_time_s": f"{elapsed:.0f}"}
    if clip is not None:
        meta["text_code"] = json.dumps({"prompt": AUTHORS_PROMPT, **clip.describe()})
    return save_checkpoint(model, out / f"upfusion_{cfg.name}.safetensors", metadata=meta)
