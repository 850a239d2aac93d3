"""``upfusion bench``: slices per second, peak memory and accuracy of each fusion path.

Every configuration is measured against a *reference run in the same process on
the same weights and slices*: the authors' semantics, one slice at a time,
float32, each slice padded on its own (``SliceRunner(batch_size=1,
precision="fp32")``).  Each fast path reports its speed-up over that reference
and the relative L2 error of its output against it, so no speed-up can change
results silently beyond its precision.  On a GPU, ``cpu_reference`` also runs
that reference on the CPU and reports each path's error against it (``vs CPU``):
the GPU's own fp32 (TF32 off) differs from the CPU's only by kernel rounding,
which UP-Fusion's channel rankings may amplify.  Precisions: ``fp32`` (full
float32; TF32 off on a GPU), ``tf32`` (GPU: float32 with TF32 convolutions and
matrix products, PyTorch's default for cuDNN), ``bf16`` and ``fp16`` (autocast).

The slices are a deterministic synthetic stack (smooth structures plus texture)
so that runs are comparable between machines; fusion cost does not depend on
content.  Peak host memory is the resident-set growth during a run, sampled
every 5 ms; peak GPU memory is torch's allocator peak.

This module sits beside the engine and uses it; nothing in layers 1-2 imports it.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.runner import PRECISIONS, SliceRunner, compile_fuser, resolve_device, resolve_precision
from ..errors import UPFusionError
from ..model import create_model, load_model
from ..model.factory import config_from
from ..model.text.codes import encode_prompt
from ..model.text.prompts import default_prompt

__all__ = ["BenchRow", "format_rows", "hardware", "run_benchmark", "synthetic_stack"]


@dataclass
class BenchRow:
    """One measured path."""

    config: str
    weights: str
    device: str
    precision: str
    channels_last: bool
    compiled: bool
    size: int
    batch: int
    streams: int
    slices: int
    seconds: float
    slices_per_s: float
    peak_host_mb: float
    peak_gpu_mb: float | None
    speedup: float
    rel_l2: float
    #: Relative L2 error against the CPU's fp32 reference output (``None`` where it was not computed).
    rel_l2_cpu: float | None = None


def hardware(device: torch.device) -> str:
    """A one-line description of the machine a figure came from."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def synthetic_stack(slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two deterministic ``[slices, size, size]`` float32 stacks in ``[0, 1]`` with anatomy-like structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    a, b = [], []
    for i in range(slices):
        phase = i / max(1, slices)
        ring = np.exp(-((np.hypot(x - 0.5, y - 0.5) - 0.3 - 0.05 * phase) ** 2) / 0.002)
        texture = 0.5 + 0.25 * np.sin(40 * x + 7 * phase) * np.cos(33 * y)
        blob = np.exp(-((x - 0.4 - 0.2 * phase) ** 2 + (y - 0.55) ** 2) / 0.01)
        a.append(np.clip(0.6 * texture * (np.hypot(x - 0.5, y - 0.5) < 0.35) + 0.4 * ring, 0, 1))
        b.append(np.clip(blob + 0.05 * rng.random((size, size)), 0, 1))
    return np.asarray(a, np.float32), np.asarray(b, np.float32)


class _PeakRSS:
    """Resident-set growth of this process while the context is open (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.base = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _load(config: str, checkpoint: str | None, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The network of ``config`` (a name or a JSON config file): given, bundled or released weights, else random."""
    if checkpoint:
        return load_model(checkpoint, device), Path(checkpoint).name
    if config == "small":
        return load_model("small", device), "bundled"
    try:
        return load_model(config, device), "released"
    except Exception:  # noqa: BLE001 - no weights here: speed does not depend on them, say so in the table
        torch.manual_seed(0)
        return create_model(config_from(config), device).eval().requires_grad_(False), "random init"


def _measure(runner: SliceRunner, a: np.ndarray, b: np.ndarray, code: torch.Tensor, repeat: int):
    warm = max(1, min(len(a), runner.choose_batch(*a.shape[1:])))  # one full batch: kernels, allocator, compiler
    runner.run(a[:warm], b[:warm], code)
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
    best, out = float("inf"), None
    with _PeakRSS() as rss:
        for _ in range(repeat):
            start = time.perf_counter()
            out = runner.run(a, b, code)
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)
            best = min(best, time.perf_counter() - start)
    gpu = torch.cuda.max_memory_allocated(runner.device) / 2**20 if runner.device.type == "cuda" else None
    return out, best, rss.growth_mb, gpu


def run_benchmark(
    configs: tuple[str, ...] = ("small", "paper"),
    *,
    device: str = "auto",
    size: int = 256,
    slices: int | None = None,
    precisions: tuple[str, ...] = tuple(PRECISIONS),
    batch: int | str = "auto",
    channels_last: tuple[bool, ...] = (False, True),
    compile: tuple[bool, ...] = (False,),
    checkpoint: str | None = None,
    repeat: int = 1,
    cpu_reference: bool = False,
    log=None,
) -> list[BenchRow]:
    """Measure the reference and every requested fast path for each config; one :class:`BenchRow` each.

    Precisions the device lacks (``tf32`` and ``fp16`` on a CPU) are skipped with a note to ``log``.
    ``cpu_reference`` fills each row's ``rel_l2_cpu`` on a GPU; on a CPU it is ``rel_l2`` anyway.
    """
    dev = resolve_device(device)
    rows: list[BenchRow] = []
    for config in configs:
        model, weights = _load(config, checkpoint if config != "small" else None, dev)
        count = slices or (8 if config == "paper" and dev.type == "cpu" else 32)
        a, b = synthetic_stack(count, size)
        code = encode_prompt(model, default_prompt("MRI", "PET")) if model.config.text_encoder == "prompt-table" else torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
        reference_runner = SliceRunner(model, dev, "fp32", batch_size=1, streams=1)
        ref_out, ref_s, ref_mem, ref_gpu = _measure(reference_runner, a, b, code, repeat)
        if cpu_reference:  # on a CPU this only repeats the reference (which a dry run of the GPU check relies on)
            cpu_out = _cpu_reference(model, a, b, code)
        else:
            cpu_out = ref_out if dev.type == "cpu" else None

        def rel_error(out: np.ndarray, reference: np.ndarray | None) -> float | None:
            if reference is None:
                return None
            return float(np.linalg.norm(out - reference) / max(np.linalg.norm(reference), 1e-12))

        label = Path(config).stem if config.endswith(".json") else config
        rows.append(BenchRow(label, weights, str(dev), "fp32", False, False, size, 1, 1, count, ref_s, count / ref_s, ref_mem, ref_gpu, 1.0, 0.0, rel_error(ref_out, cpu_out)))
        if log:
            log(rows[-1])
        for precision in precisions:
            try:
                precision = resolve_precision(precision, dev)
            except UPFusionError as error:  # a precision this device lacks is skipped, not fatal
                if log:
                    log(f"skipped {precision}: {error}")
                continue
            for cl in channels_last:
                for compiled in compile:
                    runner = SliceRunner(model, dev, precision, batch_size=batch, channels_last=cl,
                                         compiled=compile_fuser(model, dev) if compiled else None)  # fmt: skip
                    out, seconds, mem, gpu = _measure(runner, a, b, code, repeat)
                    rows.append(
                        BenchRow(label, weights, str(dev), precision, cl, runner.compiled is not None, size,
                                 runner.batch_size_used or 1, runner.streams_for(runner.batch_size_used or 1), count, seconds, count / seconds, mem, gpu,
                                 ref_s / seconds, rel_error(out, ref_out), rel_error(out, cpu_out))
                    )  # fmt: skip
                    if log:
                        log(rows[-1])
            model.to(memory_format=torch.contiguous_format)
        del model
    return rows


def _cpu_reference(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, code: torch.Tensor) -> np.ndarray:
    """The reference output (fp32, one slice at a time) of a copy of ``model`` on the CPU."""
    import copy

    on_cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    return SliceRunner(on_cpu, torch.device("cpu"), "fp32", batch_size=1, streams=1).run(a, b, code)


def format_rows(rows: list[BenchRow], device: torch.device | None = None) -> str:
    """The benchmark table as plain text, with the hardware it came from.

    The ``vs CPU`` column (error against the CPU's fp32 output) appears when a GPU row has it.
    """
    vs_cpu = any(r.rel_l2_cpu is not None and r.device != "cpu" for r in rows)
    head = ["config", "weights", "device", "precision", "ch-last", "compiled", "slice", "batch", "streams", "slices/s", "host MB", "GPU MB", "x ref", "rel L2"] + (["vs CPU"] if vs_cpu else [])
    body = [
        [r.config, r.weights, r.device, r.precision, "yes" if r.channels_last else "no", "yes" if r.compiled else "no",
         f"{r.size}x{r.size}", str(r.batch), str(r.streams),
         f"{r.slices_per_s:.2f}", f"{r.peak_host_mb:.0f}", "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}",
         "ref" if r.speedup == 1.0 and r.batch == 1 and r.streams == 1 and r.rel_l2 == 0.0 else f"{r.speedup:.2f}",
         f"{r.rel_l2:.1e}"] + (["-" if r.rel_l2_cpu is None else f"{r.rel_l2_cpu:.1e}"] if vs_cpu else [])
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    if device is not None:
        lines.append(f"hardware: {hardware(device)}")
    return "\n".join(lines)


def rows_to_json(rows: list[BenchRow], device: torch.device) -> str:
    """The rows and the hardware as JSON (``upfusion bench --json``)."""
    return json.dumps({"hardware": hardware(device), "rows": [asdict(r) for r in rows]}, indent=2)
