"""UP-Fusion on the CPU through ONNX Runtime: the network exported once per input shape, cached on disk.

The eager network spends much of its CPU time in memory-bound chains at full resolution
(LayerNorm, 1 x 1 expand, depth-wise 3 x 3, gating, 1 x 1 project); ONNX Runtime fuses and
schedules some of them better.  Measured with ``upfusion bench`` on a shared 2-core AMD EPYC
(Zen 4), fp32 matrix-multiply peak 190-203 GFLOP/s in the same runs: the paper network 0.47-0.54
of that peak against eager fp32's 0.42-0.44 (1.06-1.3x) with 3x the memory; the shipped
``small`` network 4.36 slices/s against eager bf16's 4.40 and eager fp32's 2.59, at fp32
accuracy.  ``cpu_path="auto"`` follows the weights' runtime hints: ``onnx`` for ``small``,
``eager`` for ``paper`` (see below).

:class:`GraphFuser` is a drop-in slice fuser: ``fuser(a, b, text_code) -> fused`` with the
network's own signature.  The first call for an input shape exports the network with the
TorchScript ONNX exporter (opset 17, fixed shapes), keeps the file in the user cache
(``cache_dir() / "graphs"``) under a key made of the weights' digest, the config, the shapes
and the software versions, and opens an ONNX Runtime session on it (all graph optimisations,
``torch.get_num_threads()`` intra-op threads, no spin-waiting: spinning threads measured 1.25x
slower on 2 shared cores).  Later calls, and later runs that find the file, only open the
session.  If export or the runtime fails for any reason other than memory, the fuser logs one
line and runs the eager network from then on (:attr:`GraphFuser.failed` says why).

Exactness: the graph computes the same formulas in another order, so it matches eager fp32 to
float32 rounding (about 2e-5 relative L2 on the paper network's golden inputs).  UP-Fusion ranks
channels with top-k, and on some real slices two channels differ by less than one float32 ulp
(margins of 3.7e-7 measured): there any change of arithmetic order, this one included, may swap
them.  Eager fp32 itself is then 0.85 (relative L2) away from a float64 run of the same network,
so neither order is the "right" one; ``cpu_path="eager"`` keeps PyTorch's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UPFusionError
from ..utils.files import cache_dir

__all__ = ["CPU_PATHS", "GraphFuser", "graph_cache_dir", "resolve_cpu_path", "weights_digest"]

log = logging.getLogger(__name__)

#: The CPU execution paths a user can pick (``EngineOptions.cpu_path``).
CPU_PATHS = ("auto", "eager", "onnx")
#: Bump when the export recipe changes, so that graphs cached by an older recipe are not reused.
RECIPE = "torchscript-opset17-v1"
#: ONNX input and output names.
_INPUTS = ("a", "b", "text")


def graph_cache_dir() -> Path:
    """Where exported graphs are kept: ``cache_dir() / "graphs"`` (``$UPFUSION_CACHE_DIR`` moves it)."""
    return cache_dir() / "graphs"


def weights_digest(model: nn.Module) -> str:
    """A digest of ``model``'s config and every parameter and buffer (names, shapes, dtypes, bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    digest.update(repr(config.to_json() if hasattr(config, "to_json") else config).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _versions() -> str:
    import onnxruntime

    return f"{RECIPE}|torch {torch.__version__}|onnxruntime {onnxruntime.__version__}"


def resolve_cpu_path(cpu_path: str, fuser: nn.Module, device: torch.device, precision: str, compile: bool) -> str:
    """The CPU path an engine runs: ``"onnx"`` or ``"eager"``.

    ``"auto"`` is the ``cpu_path`` of the network's runtime hints (``"onnx"`` for ``small``,
    ``"eager"`` for ``paper``; see :class:`~napari_upfusion.model.runtime.RuntimeHints`) where
    ``"onnx"`` can apply: an UP-Fusion network on the CPU at ``precision`` ``"auto"`` or
    ``"fp32"`` without ``compile``; else ``"eager"`` (a GPU, a classical fuser, an explicit
    bf16, ``torch.compile``).  An explicit ``"onnx"`` that cannot apply is an error.
    """
    if cpu_path not in CPU_PATHS:
        raise UPFusionError(f"Unknown CPU path {cpu_path!r}; use 'auto', 'eager' or 'onnx'.")
    hints = getattr(fuser, "runtime", None)
    if cpu_path == "eager" or (cpu_path == "auto" and hints is not None and hints.cpu_path == "eager"):
        return "eager"
    reasons = []
    if device.type != "cpu":
        reasons.append(f"it runs on the CPU only, not on {device.type.upper()}")
    if getattr(fuser, "config", None) is None:
        reasons.append("it runs UP-Fusion networks only")
    if precision not in ("auto", "fp32"):
        reasons.append(f"it computes in fp32, not {precision}")
    if compile:
        reasons.append("it replaces torch.compile")
    if not reasons:
        return "onnx"
    if cpu_path == "auto":
        return "eager"
    raise UPFusionError(f"The ONNX CPU path does not apply here: {'; '.join(reasons)}; use cpu_path='eager' or 'auto'.")


class GraphFuser(nn.Module):
    """Run an UP-Fusion network through ONNX Runtime, one exported graph per input shape.

    Parameters
    ----------
    model
        The eager network (eval mode, float32, on the CPU); exported as it is and kept for the fallback.
    cache
        Where exported graphs are kept (:func:`graph_cache_dir` when ``None``).

    Attributes
    ----------
    failed
        ``None`` while the graph path works; after a failure, the one-line reason, and the eager
        network runs from then on.
    exports
        How many graphs this fuser exported (a graph found in the cache is not exported again).
    """

    def __init__(self, model: nn.Module, cache: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.config = getattr(model, "config", None)
        self.runtime = getattr(model, "runtime", None)  # the streams and precision hints of the weights
        self.cache = Path(cache) if cache is not None else graph_cache_dir()
        self.failed: str | None = None
        self.exports = 0
        self._digest: str | None = None
        self._sessions: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def graph_path(self, shapes: tuple[tuple[int, ...], ...]) -> Path:
        """The cache file of the graph for inputs of ``shapes`` (``a``, ``b``, text code)."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        key = hashlib.blake2b(f"{self._digest}|{shapes}|{_versions()}".encode(), digest_size=12).hexdigest()
        name = getattr(self.config, "name", None) or "upfusion"
        return self.cache / f"{name}-{'x'.join(map(str, shapes[0]))}-{key}.onnx"

    def _export(self, shapes: tuple[tuple[int, ...], ...], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        examples = tuple(torch.rand(shape) for shape in shapes)  # distinct tensors: the exporter merges aliased ones
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches: shapes are fixed
                torch.onnx.export(self.model, examples, str(partial), input_names=list(_INPUTS),
                                  output_names=["fused"], dynamo=False, opset_version=17, do_constant_folding=True)  # fmt: skip
            os.replace(partial, path)  # a cache entry is whole or absent
        finally:
            partial.unlink(missing_ok=True)
        self.exports += 1

    def session(self, shapes: tuple[tuple[int, ...], ...], threads: int):
        """The ONNX Runtime session for ``shapes`` with ``threads`` intra-op threads (exported if not cached)."""
        with self._lock:
            session = self._sessions.get((shapes, threads))
            if session is None:
                import onnxruntime as ort

                path = self.graph_path(shapes)
                if not path.exists():
                    self._export(shapes, path)
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                self._sessions[(shapes, threads)] = session
            return session

    def forward(self, a: torch.Tensor, b: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        if self.failed is None and a.device.type == "cpu":
            inputs = [t.detach().to(torch.float32).contiguous() for t in (a, b, text_code)]
            try:
                session = self.session(tuple(tuple(t.shape) for t in inputs), max(1, torch.get_num_threads()))
                fused = session.run(None, {n: t.numpy() for n, t in zip(_INPUTS, inputs)})[0]
                return torch.from_numpy(fused)
            except Exception as error:  # noqa: BLE001 - any export or runtime failure: eager from now on
                text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                if isinstance(error, MemoryError) or "bad_alloc" in text or "Failed to allocate" in text:
                    raise RuntimeError(f"ONNX Runtime ran out of memory ({text}): can't allocate memory") from None
                with self._lock:  # CPU stream threads may fail together: the first says it, once
                    first, self.failed = self.failed is None, self.failed or text
                if first:
                    log.warning("ONNX Runtime CPU path unavailable (%s); running the eager PyTorch network.", text)
        return self.model(a, b, text_code)

    def clear(self) -> None:
        """Close every open session (the cached graph files stay)."""
        with self._lock:
            self._sessions.clear()
