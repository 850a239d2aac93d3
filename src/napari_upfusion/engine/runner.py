"""Running a slice fuser over a stack of 2-D slices: devices, precision, batches, memory, progress.

:class:`SliceRunner` takes two ``[S, H, W]`` float32 stacks in ``[0, 1]`` and
returns the fused ``[S, H, W]`` stack.  Each batch is padded at the bottom and
right to a multiple of 8 (by reflection, or by replication where a slice is
too small to reflect), fused, clamped to ``[0, 1]`` and cropped back, which is
the authors' test-script semantics applied to a batch.  When the device runs
out of memory the batch size is halved and the failed batch is run again, so
no slice is lost.  Progress is reported and cancellation checked between
batches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FusionCancelled, UPFusionError
from ..model.runtime import RuntimeHints
from .validate import free_host_bytes

__all__ = [
    "CANCELLED",
    "CancelToken",
    "ProgressCallback",
    "SliceRunner",
    "describe_devices",
    "device_choices",
    "is_cancelled",
    "is_out_of_memory",
    "pad_to_multiple",
    "resolve_device",
    "resolve_precision",
    "runtime_hints",
    "tf32",
    "unvalidated_precision_note",
    "validated_precision",
]

ProgressCallback = Callable[[int, int], None]
#: What a cancelled fusion raises (:class:`~napari_upfusion.errors.FusionCancelled`) with.
CANCELLED = "Fusion was cancelled; nothing was returned or written."
#: Every precision a fuser can run at: the dtype of its activations (``tf32`` is float32 whose CUDA
#: convolutions and matrix products may round their inputs to TF32; ``fp32`` never does).
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Precisions that exist only on a CUDA GPU.
CUDA_ONLY = ("tf32", "fp16")


class CancelToken(Protocol):
    """Anything with ``is_set()``, such as :class:`threading.Event`."""

    def is_set(self) -> bool: ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are taken as
    given.  Any other device (``meta``, ``mps``, ``xla``, a typo) and a CUDA GPU that is not here are refused
    in one sentence."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index):
        raise UPFusionError(
            f"Unknown device {str(device)!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (this tool runs on CPUs and "
            "CUDA GPUs)."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UPFusionError("CUDA was requested but no CUDA GPU is available here; use device='cpu' or 'auto'.")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UPFusionError(
            f"CUDA GPU {resolved.index} was requested but this machine has {torch.cuda.device_count()}; use "
            f"one of {', '.join(device_choices()[2:])}."
        )
    return resolved


def device_choices() -> list[str]:
    """The devices a user can pick here: ``auto``, ``cpu``, and ``cuda`` (plus ``cuda:N`` for each of several GPUs)."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])
    return devices


def describe_devices() -> str:
    """One line naming this machine's devices: the CPU's cores and every CUDA GPU by name."""
    cpu = f"cpu ({os.cpu_count()} cores)"
    if not torch.cuda.is_available():
        return f"{cpu}; no CUDA GPU"
    gpus = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
    return f"{cpu}, {gpus}"


def cpu_has_native_bf16() -> bool:
    """True if oneDNN can run bf16 natively here (AVX512-BF16 or AMX), which makes bf16 faster, not slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def runtime_hints(fuser: nn.Module) -> RuntimeHints:
    """The :class:`~napari_upfusion.model.runtime.RuntimeHints` a fuser carries (``fuser.runtime``, set when
    UP-Fusion weights are loaded or created), or the defaults for fusers without any (classical ones)."""
    return getattr(fuser, "runtime", None) or RuntimeHints()


def validated_precision(hints: RuntimeHints | None, device: torch.device | str) -> str:
    """The precision a fuser's weights were checked at on this kind of device (``"fp32"`` when unknown).

    ``hints`` are the fuser's runtime hints (:func:`runtime_hints`; ``None`` for none); ``device`` a
    device or a device type (``"cuda"``).  The one place that reads the precision hints:
    ``gpu_precision`` on a CUDA device, ``cpu_precision`` elsewhere.  UP-Fusion ranks channels with
    top-k, so rounding can reorder them: a reduced precision is only a default where it was measured.
    """
    hints = hints or RuntimeHints()
    return hints.gpu_precision if getattr(device, "type", device) == "cuda" else hints.cpu_precision


def _runs_well(precision: str, device: torch.device) -> bool:
    """Whether ``device`` runs ``precision`` natively (so that choosing it by default makes sense)."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision != "bf16" or torch.cuda.is_bf16_supported()
    return precision == "bf16" and cpu_has_native_bf16()


def resolve_precision(precision: str, device: torch.device, validated: str = "fp32") -> str:
    """The precision to run at: ``"auto"`` is ``validated`` (see :func:`validated_precision`) where
    ``device`` runs it natively, else fp32; an explicit precision is checked against the device."""
    if precision == "auto":
        return validated if _runs_well(validated, device) else "fp32"
    if precision not in PRECISIONS:
        raise UPFusionError(f"Unknown precision {precision!r}; use 'auto', 'fp32', 'tf32', 'bf16' or 'fp16'.")
    if precision in CUDA_ONLY and device.type != "cuda":
        raise UPFusionError(f"{precision} needs a CUDA GPU; use precision='bf16' or 'fp32' on the {device.type.upper()}.")
    return precision


def unvalidated_precision_note(precision: str, validated: str, device: torch.device, model: str) -> str | None:
    """One sentence warning that ``precision`` (asked for explicitly) was never checked for ``model``
    on this device, or ``None`` when it was (or is plain fp32)."""
    if precision in ("fp32", validated):
        return None
    return (
        f"{model} runs at {precision} on the {device.type.upper()} although its weights were checked only at "
        f"{validated} there: UP-Fusion ranks channels with top-k, so rounding may change which channels are kept "
        f"and the fused result; use precision='{validated}' (or 'auto') for the network as validated."
    )


@contextlib.contextmanager
def tf32(enabled: bool):
    """CUDA float32 convolutions and matrix products in TF32 (``enabled``) or in full float32 while the
    block runs; torch's own settings are put back afterwards.

    PyTorch lets cuDNN use TF32 for float32 convolutions by default on Ampere and later GPUs, which
    rounds their inputs to 10 mantissa bits: for UP-Fusion's channel rankings that is the same kind of
    error as bf16.  The settings are process-wide, so two fusions running at once in one process on
    CUDA with different precisions would see each other's.  Whichever of torch's two interfaces the
    caller used (``allow_tf32`` or the newer ``fp32_precision``) is the one read and restored, since
    torch refuses to mix them.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        legacy: tuple | None = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # TF32 was set through fp32_precision: keep to that interface
        legacy = None
    if legacy is not None:
        matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    else:
        newer = (matmul.fp32_precision, cudnn.conv.fp32_precision)
        matmul.fp32_precision = cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        if legacy is not None:
            matmul.allow_tf32, cudnn.allow_tf32 = legacy
        else:
            matmul.fp32_precision, cudnn.conv.fp32_precision = newer


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``[B, C, H, W]`` at the bottom and right to multiples of ``multiple``.

    Reflection where the pad is smaller than the side (the authors' choice),
    replication otherwise.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def compile_fuser(fuser: nn.Module, device: torch.device | None = None) -> nn.Module:
    """``torch.compile`` of a fuser for fixed shapes, compiled lazily on its first batch.

    On a GPU the "reduce-overhead" mode also captures CUDA graphs (the runner
    pads every batch to one shape, so one graph serves a whole volume).
    """
    mode = "reduce-overhead" if device is not None and device.type == "cuda" else "default"
    return torch.compile(fuser, dynamic=False, mode=mode)


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error or a failed CPU allocation."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def is_cancelled(cancel: CancelToken | Callable[[], bool] | None) -> bool:
    """Whether ``cancel`` (an event with ``is_set()``, a callable, or ``None``) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (host RAM for the CPU), in bytes."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return free_host_bytes()


def estimate_slice_bytes(fuser: nn.Module, height: int, width: int, precision: str) -> int:
    """Rough peak activation memory of one padded slice (bytes), for choosing a batch size.

    UP-Fusion keeps about 60 feature maps of ``dim`` channels at full resolution
    alive at its widest point; other fusers are treated as 8 maps.
    """
    config = getattr(fuser, "config", None)
    channels = 60 * config.dim if config is not None else 8
    itemsize = PRECISIONS[precision].itemsize
    return channels * height * width * itemsize + (64 << 20)


@dataclass
class SliceRunner:
    """Fuse stacks of slices with ``fuser`` on ``device`` at ``precision``.

    ``precision`` is a key of :data:`PRECISIONS`: ``fp32`` runs in full float32
    (on CUDA with TF32 off while the fuser runs, see :func:`tf32`), ``tf32``
    (CUDA) in float32 with TF32 on, ``bf16``/``fp16`` under autocast.
    ``batch_size`` is a number or ``"auto"`` (from free memory, at most
    ``max_batch``).  ``channels_last`` stores activations NHWC (``None``: on a
    GPU only); it changes the fuser's own memory format.  ``compiled`` is an
    optional ``torch.compile`` of ``fuser`` (see :func:`compile_fuser`): it is
    used while it works, every batch is then padded to the full batch size so
    that one compiled graph serves a whole volume, and on any failure other than
    out-of-memory the runner falls back to ``fuser`` for good (the reason is kept
    in ``compile_error``).  ``streams`` slices run side by side on the CPU (see
    :meth:`streams_for`).  ``check`` is called on every fused batch (a numpy
    ``[B, H, W]`` array) and may raise, which stops the run at once: the engine's
    result check (:func:`~.validate.check_result`).  After :meth:`run`,
    ``batch_size_used`` holds the batch size that finally worked.
    """

    fuser: nn.Module
    device: torch.device
    precision: str = "fp32"
    batch_size: int | str = "auto"
    max_batch: int | None = None
    pad_multiple: int = 8
    channels_last: bool | None = None
    compiled: nn.Module | None = None
    streams: int | str = "auto"
    check: Callable[[np.ndarray], None] | None = None

    def __post_init__(self) -> None:
        self.batch_size_used: int | None = None
        self.compile_error: str | None = None
        if self.channels_last is None:
            self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.fuser.to(memory_format=torch.channels_last)

    def _numerics(self) -> contextlib.ExitStack:
        """Autocast for bf16/fp16; on CUDA, TF32 only for ``tf32`` (plain fp32 stays full float32)."""
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(tf32(self.precision == "tf32"))
        if PRECISIONS[self.precision] != torch.float32:
            stack.enter_context(torch.autocast(self.device.type, dtype=PRECISIONS[self.precision]))
        return stack

    def choose_batch(self, height: int, width: int) -> int:
        """The starting batch size for slices of this size."""
        if self.batch_size != "auto":
            batch = int(self.batch_size)
            if batch < 1:
                raise UPFusionError(f"batch_size must be at least 1, got {batch}.")
            return batch
        if self.device.type == "cpu":  # measured: batching slices is slower on the CPU (cache), so one at a time
            return 1
        limit = self.max_batch or 64
        per_slice = estimate_slice_bytes(self.fuser, height, width, self.precision)
        return max(1, min(limit, int(available_bytes(self.device) * 0.5 // per_slice)))

    def fuse_batch(self, a: torch.Tensor, b: torch.Tensor, text_code: torch.Tensor | None) -> torch.Tensor:
        """One batch ``[B, 1, H, W]`` (any H, W): pad, fuse, clamp, crop; float32 on the batch's device."""
        h, w = a.shape[-2:]
        a_pad = pad_to_multiple(a, self.pad_multiple)
        b_pad = pad_to_multiple(b, self.pad_multiple)
        if self.channels_last:
            a_pad = a_pad.contiguous(memory_format=torch.channels_last)
            b_pad = b_pad.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            with self._numerics():
                out = self._forward(a_pad, b_pad, text_code)
            return out[..., :h, :w].float().clamp(0.0, 1.0)

    def _forward(self, a: torch.Tensor, b: torch.Tensor, text_code: torch.Tensor | None) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(a, b, text_code)
            except Exception as error:
                if is_out_of_memory(error):
                    raise
                self.compiled, self.compile_error = None, f"{type(error).__name__}: {error}".splitlines()[0]
        return self.fuser(a, b, text_code)

    def streams_for(self, batch: int) -> int:
        """How many slices run side by side: on the CPU, with batches of one, the ``cpu_streams`` of the
        fuser's runtime hints (:func:`runtime_hints`; 2 where it has none), at most one per thread.

        Measured on a 2-core CPU: two single-threaded streams fuse the small model
        1.35x faster than one two-threaded stream, and the paper network 0.92x as
        fast with twice the memory; the numbers are the same either way (each
        slice is computed alone).
        """
        if self.streams != "auto":
            return max(1, int(self.streams))
        if self.device.type != "cpu" or batch != 1 or self.compiled is not None:
            return 1
        return max(1, min(runtime_hints(self.fuser).cpu_streams, torch.get_num_threads()))

    def run(
        self,
        a: np.ndarray,
        b: np.ndarray,
        text_code: torch.Tensor | None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Fuse ``[S, H, W]`` stacks; returns a new float32 ``[S, H, W]`` array in ``[0, 1]``.

        Raises :class:`FusionCancelled` if ``cancel`` is set between batches.
        """
        total, height, width = a.shape
        batch = self.choose_batch(height, width)
        out = np.empty((total, height, width), dtype=np.float32)
        code = None if text_code is None else text_code.to(self.device, torch.float32)
        host_a, host_b = torch.from_numpy(a), torch.from_numpy(b)
        if self.device.type == "cuda":  # page-locked host memory lets copies overlap the GPU's work
            host_a, host_b = host_a.pin_memory(), host_b.pin_memory()
        report = _Progress(total, progress)
        todo = list(range(total))
        streams = self.streams_for(batch)
        if streams > 1:
            todo = self._run_streams(streams, host_a, host_b, code, out, report, cancel)
        self.batch_size_used = self._run_batches(todo, batch, host_a, host_b, code, out, report, cancel)
        return out

    def _run_batches(self, todo, batch, host_a, host_b, code, out, report, cancel) -> int:
        """Fuse the slices ``todo`` (ascending indices) in batches, halving on out-of-memory."""
        height, width = out.shape[1:]
        position = 0
        while position < len(todo):
            if is_cancelled(cancel):
                raise FusionCancelled(CANCELLED)
            index = todo[position : position + batch]
            try:
                ta = host_a[index].unsqueeze(1).to(self.device, non_blocking=True)
                tb = host_b[index].unsqueeze(1).to(self.device, non_blocking=True)
                if self.compiled is not None and len(index) < batch:  # one graph per volume: pad the last batch
                    extra = batch - len(index)
                    ta, tb = (torch.cat([t, t[-1:].expand(extra, -1, -1, -1)]) for t in (ta, tb))
                fused = self.fuse_batch(ta, tb, code)[: len(index)]
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not is_out_of_memory(error):
                    raise
                del error
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch == 1:
                    raise UPFusionError(
                        f"Not enough {self.device.type.upper()} memory to fuse even one {height} x {width} slice; "
                        "close other programs, use a smaller image or another device."
                    ) from None
                batch = max(1, batch // 2)
                continue
            values = fused.squeeze(1).cpu().numpy()
            if self.check is not None:
                self.check(values)
            out[index] = values
            position += len(index)
            report.add(len(index))
        return batch

    def _run_streams(self, streams, host_a, host_b, code, out, report, cancel) -> list[int]:
        """Fuse single slices on ``streams`` threads of one core each; returns the slices left undone.

        Stops early on cancellation (raised) or out-of-memory (the rest then runs
        one slice at a time in :meth:`_run_batches`).  The threads are never left
        running: an exception in the waiting thread (Ctrl-C, SIGTERM) stops them
        after their current slice and waits for them before it goes on.
        """
        total = out.shape[0]
        done = np.zeros(total, dtype=bool)
        lock = threading.Lock()
        queue = iter(range(total))
        failure: list[BaseException] = []
        stop = threading.Event()

        def work() -> None:
            try:
                fuse_queue()
            finally:
                finished.release()

        def fuse_queue() -> None:
            while not failure and not stop.is_set():
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                if is_cancelled(cancel):
                    failure.append(FusionCancelled(CANCELLED))
                    return
                try:
                    fused = self.fuse_batch(host_a[index][None, None], host_b[index][None, None], code)
                    values = fused[0, 0].numpy()
                    if self.check is not None:
                        self.check(values[None])
                except BaseException as error:  # noqa: BLE001 - handed to the calling thread below
                    failure.append(error)
                    return
                out[index] = values
                done[index] = True
                report.add(1)

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // streams))
        finished = threading.Semaphore(0)  # released by each thread as its work ends
        workers = [threading.Thread(target=work, name=f"upfusion-stream-{i}") for i in range(streams)]
        waited = 0
        try:
            for worker in workers:
                worker.start()
            while waited < streams:
                finished.acquire()
                waited += 1
        except BaseException:
            stop.set()
            _wait_for(finished, sum(w.ident is not None for w in workers) - waited)
            raise
        finally:
            torch.set_num_threads(threads)
        for worker in workers:
            worker.join()
        if failure and not is_out_of_memory(failure[0]):
            raise failure[0]
        return [int(i) for i in np.flatnonzero(~done)]


def _wait_for(finished: threading.Semaphore, count: int) -> None:
    """Wait until ``count`` more stream threads have ended their work, whatever interrupts the wait.

    A semaphore, not ``Thread.join``: an exception (Ctrl-C) inside ``join`` makes Python 3.11 and
    3.12 take a running thread for ended (``_wait_for_tstate_lock`` releases the thread's own lock),
    so the interpreter would exit under a thread still inside torch and abort with ``terminate
    called without an active exception``.
    """
    while count > 0:
        try:
            finished.acquire()
            count -= 1
        except BaseException:  # noqa: BLE001, S112 - a second Ctrl-C must not leave a thread running inside torch
            continue


class _Progress:
    """A thread-safe count of fused slices that calls ``progress(done, total)`` after each step."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            if self.callback is not None:
                self.callback(self.done, self.total)
