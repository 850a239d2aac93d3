"""Runtime hints: how a set of UP-Fusion weights was checked to run, kept apart from the architecture.

:class:`~napari_upfusion.model.upfusion.UPFusionConfig` says what the network *is*;
:class:`RuntimeHints` says how its weights were validated to *run* (the way timm
keeps ``pretrained_cfg`` apart from the model's arguments).  UP-Fusion ranks
channels with top-k, so rounding can reorder them: a reduced precision is only a
default where it was measured for those weights.

Where a loaded model's hints come from (:func:`napari_upfusion.model.load_model`
puts them on ``model.runtime``, beside ``model.load_report``):

1. a project safetensors file: its metadata key ``"runtime"`` (JSON), written by
   :func:`~napari_upfusion.model.save_checkpoint`;
2. an older project file whose config JSON still carries ``cpu_precision``,
   ``gpu_precision`` or ``cpu_streams``: those fields (:func:`split_runtime`);
3. a file in the authors' layout (no metadata) and a freshly created model: the
   packaged table ``configs/runtime.json`` by config name (:func:`config_runtime`);
   a config it does not list gets the defaults.

The engine reads them in one place each (:func:`napari_upfusion.engine.runner.validated_precision`,
:meth:`napari_upfusion.engine.runner.SliceRunner.streams_for`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..utils.fields import from_fields

__all__ = ["RUNTIME_KEY", "RuntimeHints", "config_runtime", "split_runtime"]

#: The safetensors metadata key that holds a file's hints (JSON).
RUNTIME_KEY = "runtime"


@dataclass(frozen=True)
class RuntimeHints:
    """How a network's weights were validated to run.

    ``cpu_precision`` is what ``precision="auto"`` uses on a CPU with native bf16:
    ``"bf16"`` only for weights checked against float32 (``small``: 0.5-0.7 %
    relative L2 median, 1.3 % at most, on real pairs).  ``gpu_precision`` is what
    it uses on a CUDA GPU: ``"fp32"`` (TF32 off) unless the weights were checked at
    another precision on a GPU.  ``cpu_streams`` is how many slices run side by side
    (one thread each) on a CPU when slices go one at a time: 2 pays for a small
    network; the paper network gains nothing from it and needs twice the memory, so
    the table gives it 1.  ``cpu_path`` is what ``cpu_path="auto"`` runs on a CPU:
    ``"onnx"`` (the network in fp32 through ONNX Runtime) where its output was checked
    against eager fp32 (``small``: 3e-7 relative L2 on real and synthetic slices,
    4.7e-4 at most on the golden inputs, and as fast as its bf16), ``"eager"`` where
    the graph's arithmetic order breaks the network's channel-ranking near-ties the
    other way on real slices (the paper network: relative L2 0.4-0.5 on 1 of 3 real
    slices and on the bench's synthetic stack, 2e-5 on the golden inputs).
    """

    cpu_precision: str = "fp32"
    gpu_precision: str = "fp32"
    cpu_streams: int = 2
    cpu_path: str = "onnx"

    def __post_init__(self) -> None:
        if self.cpu_precision not in ("fp32", "bf16"):
            raise ValueError(f"cpu_precision must be 'fp32' or 'bf16', not {self.cpu_precision!r}.")
        if self.gpu_precision not in ("fp32", "tf32", "bf16", "fp16"):
            raise ValueError(f"gpu_precision must be 'fp32', 'tf32', 'bf16' or 'fp16', not {self.gpu_precision!r}.")
        streams = self.cpu_streams
        if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= 64:
            raise ValueError(f"cpu_streams must be a whole number from 1 to 64, not {streams!r}.")
        if self.cpu_path not in ("eager", "onnx"):
            raise ValueError(f"cpu_path must be 'eager' or 'onnx', not {self.cpu_path!r}.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeHints:
        """Hints from a mapping of field names (unknown fields are an error)."""
        return from_fields(cls, data, "runtime hint")


#: The hint fields that configs written before :class:`RuntimeHints` existed carry among their architecture.
_FIELDS = tuple(f.name for f in dataclasses.fields(RuntimeHints))


def split_runtime(data: Mapping[str, Any]) -> tuple[dict[str, Any], RuntimeHints | None]:
    """A config dictionary without its runtime fields, and the hints they give (``None`` if it has none).

    For configs written before the hints had their own place (the config JSON of older
    project checkpoints, a user's config file): ``cpu_precision``, ``gpu_precision`` and
    ``cpu_streams`` become :class:`RuntimeHints`, the rest is the architecture.
    """
    architecture = {k: v for k, v in data.items() if k not in _FIELDS}
    found = {k: data[k] for k in _FIELDS if k in data}
    return architecture, (RuntimeHints.from_dict(found) if found else None)


@cache
def _table() -> dict[str, RuntimeHints]:
    text = resources.files(__package__).joinpath("configs", "runtime.json").read_text(encoding="utf-8")
    return {name: RuntimeHints.from_dict(entry) for name, entry in json.loads(text).items()}


def config_runtime(name: str) -> RuntimeHints:
    """The packaged hints of the named config (``configs/runtime.json``); the defaults for a config it does not list."""
    return _table().get(name, RuntimeHints())
