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
content.  Peak host memory is the resident-set growth from just before a path's
first (warm-up) batch to the end of its timed runs, sampled every 5 ms (the
network's weights and, for the ONNX path, its graph and open session are loaded
before); peak GPU memory is torch's allocator peak.

On the CPU each config is also measured through each CPU path
(:mod:`~napari_upfusion.engine.cpu_graph`): ``eager`` (PyTorch, the precision
rows) and ``onnx`` (ONNX Runtime, fp32; the graph is exported, or found in the
user cache, before timing).  Every row reports its GFLOP/s (the network's FLOPs
per slice, counted by :class:`torch.utils.flop_counter.FlopCounterMode`, times
slices/s) and its share of the device's fp32 matrix-multiply peak, measured in the
same run (:func:`matmul_peak_gflops`, the best of several before and after the rows).

This module sits beside the engine and uses it; nothing in layers 1-2 imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.cpu_graph import GraphFuser
from ..engine.runner import PRECISIONS, SliceRunner, compile_fuser, resolve_device, resolve_precision
from ..errors import UPFusionError
from ..model import create_model, load_model
from ..model.factory import config_from
from ..model.text.codes import encode_prompt
from ..model.text.prompts import default_prompt

__all__ = ["BenchRow", "flops_per_slice", "format_rows", "hardware", "matmul_peak_gflops", "run_benchmark",
           "synthetic_stack"]


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
    #: How the network ran: ``eager`` (PyTorch) or ``onnx`` (ONNX Runtime, :mod:`~napari_upfusion.engine.cpu_graph`).
    path: str = "eager"
    #: The network's FLOPs per slice, in GFLOP (``None`` where they could not be counted).
    gflop_per_slice: float | None = None
    #: The device's fp32 matrix-multiply peak measured in the same run, in GFLOP/s.
    matmul_peak: float | None = None

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s (FLOPs per slice times slices/s)."""
        return None if self.gflop_per_slice is None else self.gflop_per_slice * self.slices_per_s

    @property
    def peak_share(self) -> float | None:
        """The share of the measured fp32 matrix-multiply peak this path reaches."""
        return None if self.gflops is None or not self.matmul_peak else self.gflops / self.matmul_peak


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


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeat: int = 5) -> float:
    """The fp32 matrix-multiply rate of ``device`` in GFLOP/s: the best of ``repeat`` ``n``-cubed ``torch.mm``.

    On CUDA it runs with TF32 off, as the fp32 rows do."""
    from ..engine.runner import tf32

    x, y = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    with tf32(False) if device.type == "cuda" else contextlib.nullcontext():
        torch.mm(x, y)
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.mm(x, y)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_slice(model: torch.nn.Module, size: int, code: torch.Tensor) -> float | None:
    """GFLOP of one ``size`` x ``size`` slice through ``model`` (convolutions and matrix products), or ``None``."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.rand(1, 1, size, size, device=device)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x, x, code.to(device))
    except Exception:  # noqa: BLE001 - the count is a courtesy column
        return None
    return counter.get_total_flops() / 1e9


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
    best, out = float("inf"), None
    with _PeakRSS() as rss:
        runner.run(a[:warm], b[:warm], code)
        if runner.device.type == "cuda":
            torch.cuda.synchronize(runner.device)
            torch.cuda.reset_peak_memory_stats(runner.device)
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
    cpu_paths: tuple[str, ...] = ("eager", "onnx"),
    log=None,
) -> list[BenchRow]:
    """Measure the reference and every requested fast path for each config; one :class:`BenchRow` each.

    Precisions the device lacks (``tf32`` and ``fp16`` on a CPU) are skipped with a note to ``log``.
    ``cpu_reference`` fills each row's ``rel_l2_cpu`` on a GPU; on a CPU it is ``rel_l2`` anyway.
    ``cpu_paths``: on a CPU, ``"eager"`` measures the precision rows, ``"onnx"`` adds the ONNX Runtime
    row (fp32) of each config.  Every row gets the fp32 matrix-multiply peak measured in this run.
    """
    dev = resolve_device(device)
    rows: list[BenchRow] = []
    peak = matmul_peak_gflops(dev)
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
        gflop = flops_per_slice(model, size, code)
        first = len(rows)
        rows.append(BenchRow(label, weights, str(dev), "fp32", False, False, size, 1, 1, count, ref_s, count / ref_s, ref_mem, ref_gpu, 1.0, 0.0, rel_error(ref_out, cpu_out)))
        if log:
            log(rows[-1])
        if dev.type == "cpu" and "onnx" in cpu_paths:
            runner = SliceRunner(GraphFuser(model), dev, "fp32", batch_size=batch)
            _open_graph(runner, size, code)
            out, seconds, mem, _ = _measure(runner, a, b, code, repeat)
            used = runner.batch_size_used or 1
            rows.append(BenchRow(label, weights, str(dev), "fp32", False, False, size, used, runner.streams_for(used),
                                 count, seconds, count / seconds, mem, None, ref_s / seconds, rel_error(out, ref_out),
                                 rel_error(out, cpu_out), path="onnx" if runner.fuser.failed is None else "eager"))  # fmt: skip
            if log:
                log(rows[-1])
        for precision in (precisions if dev.type != "cpu" or "eager" in cpu_paths else ()):
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
        for row in rows[first:]:
            row.gflop_per_slice = gflop
        del model
    peak = max(peak, matmul_peak_gflops(dev))
    for row in rows:
        row.matmul_peak = peak
    return rows


def _open_graph(runner: SliceRunner, size: int, code: torch.Tensor) -> None:
    """Export (or find in the cache) the ONNX graph a runner of a :class:`GraphFuser` will use, and open its session,
    so that neither counts in the timed runs or the memory column."""
    graph = runner.fuser
    side = size + (-size) % runner.pad_multiple
    batch = runner.choose_batch(size, size)
    threads = max(1, torch.get_num_threads() // runner.streams_for(batch))
    with contextlib.suppress(Exception):  # the fuser reports a failure and falls back to eager on its first batch
        graph.session(((batch, 1, side, side), (batch, 1, side, side), (batch, code.shape[-1])), threads)


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
    head = ["config", "weights", "device", "path", "precision", "ch-last", "compiled", "slice", "batch", "streams", "slices/s", "GFLOP/s", "of peak", "host MB", "GPU MB", "x ref", "rel L2"] + (["vs CPU"] if vs_cpu else [])
    body = [
        [r.config, r.weights, r.device, r.path, r.precision, "yes" if r.channels_last else "no", "yes" if r.compiled else "no",
         f"{r.size}x{r.size}", str(r.batch), str(r.streams),
         f"{r.slices_per_s:.2f}", "-" if r.gflops is None else f"{r.gflops:.0f}",
         "-" if r.peak_share is None else f"{r.peak_share:.2f}", f"{r.peak_host_mb:.0f}", "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}",
         "ref" if r.speedup == 1.0 and r.batch == 1 and r.streams == 1 and r.rel_l2 == 0.0 else f"{r.speedup:.2f}",
         f"{r.rel_l2:.1e}"] + (["-" if r.rel_l2_cpu is None else f"{r.rel_l2_cpu:.1e}"] if vs_cpu else [])
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    peak = next((r.matmul_peak for r in rows if r.matmul_peak), None)
    if peak:
        lines.append(f"fp32 matrix-multiply peak measured in this run: {peak:.0f} GFLOP/s (2048^3 torch.mm, best of 10)")
    if device is not None:
        lines.append(f"hardware: {hardware(device)}")
    return "\n".join(lines)


def rows_to_json(rows: list[BenchRow], device: torch.device) -> str:
    """The rows and the hardware as JSON (``upfusion bench --json``)."""
    return json.dumps({"hardware": hardware(device),
                       "rows": [{**asdict(r), "gflops": r.gflops, "peak_share": r.peak_share} for r in rows]}, indent=2)
