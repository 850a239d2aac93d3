"""The engine options, written once: which fuser, where and how it runs.

:class:`EngineOptions` is the one definition of the options that choose and build a
:class:`~napari_upfusion.engine.api.FusionEngine`: their names, order, defaults and
meaning.  :func:`~napari_upfusion.engine.api.get_engine` takes exactly these fields,
:class:`~napari_upfusion.engine.api.FusionEngine` and :func:`~napari_upfusion.fuse`
take them as keywords (:func:`takes_engine_options` shows them in their signatures),
and the napari layer helpers split them off other keywords with :meth:`EngineOptions.split`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRECISION_NAMES", "EngineOptions", "takes_engine_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: Every ``precision`` an engine takes (see :class:`EngineOptions`).
PRECISION_NAMES = ("auto", "fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class EngineOptions:
    """Which fuser, on which device, at which precision and batch size.

    Attributes
    ----------
    model
        A registered fuser name (``"small"``, ``"paper"``, ``"average"``, ...; see
        :func:`~napari_upfusion.engine.registry.available_fusers`), a checkpoint path,
        or a ready ``torch.nn.Module`` slice fuser.
    device
        ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    precision
        ``"auto"``: the precision the fuser's weights were checked at on that device
        (:func:`~napari_upfusion.engine.runner.validated_precision`): fp32 (TF32 off)
        for ``paper`` on every device and for ``small`` on a GPU, bf16 for ``small``
        on a CPU with native bf16.  ``"fp32"``, ``"bf16"``, or on a GPU ``"tf32"`` or
        ``"fp16"``: an explicit reduced precision that was not validated runs with a
        :class:`~napari_upfusion.errors.PrecisionWarning` (channel rankings may change).
    batch_size
        Slices per batch, or ``"auto"``: one slice at a time on the model's CPU
        streams, batches on a GPU that follow free memory and halve on out-of-memory.
    clip_weights
        CLIP ViT-B/32 weights file, for CLIP-conditioned networks and new prompts
        (default: found where :func:`~napari_upfusion.model.text.clip.find_clip_weights` looks).
    compile
        Run the network through ``torch.compile`` (CUDA graphs on a GPU): compiled once
        per slice shape and kept between volumes; falls back to eager execution for good
        if compilation fails.  It pays for long volumes on a GPU; on the CPU it measured
        no faster in fp32 (``upfusion bench``).
    cpu_path
        How an UP-Fusion network runs on the CPU: ``"onnx"`` in fp32 through ONNX Runtime,
        exported once per slice shape and cached in the user cache
        (:mod:`~napari_upfusion.engine.cpu_graph`; falls back to eager with one log line if
        export fails); ``"eager"``: PyTorch as is; ``"auto"`` (the default): what the
        weights' runtime hints say, ``onnx`` for ``small`` (fp32 accuracy at bf16 speed),
        ``eager`` for ``paper`` (the graph's arithmetic order flips channel rankings on some
        real slices), and ``eager`` wherever ``onnx`` cannot apply (a GPU, bf16, ``compile``).
    """

    model: str | os.PathLike[str] | nn.Module = "small"
    device: str | torch.device = "auto"
    precision: str = "auto"
    batch_size: int | str = "auto"
    clip_weights: str | os.PathLike[str] | None = None
    compile: bool = False
    cpu_path: str = "auto"

    def __post_init__(self) -> None:
        from ..errors import InputError

        size = self.batch_size
        if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise InputError(f"batch_size must be 'auto' or a whole number of at least 1, not {size!r}.")
        if self.precision not in PRECISION_NAMES:
            raise InputError(f"Unknown precision {self.precision!r}; use one of {', '.join(PRECISION_NAMES)}.")
        if not isinstance(self.compile, bool):
            raise InputError(f"compile must be True or False, not {self.compile!r}.")

    def cache_key(self) -> tuple | None:
        """What engines are cached by (:func:`~napari_upfusion.engine.api.get_engine`); ``None`` for a module,
        which is never cached."""
        if not isinstance(self.model, (str, os.PathLike)):
            return None
        return (os.fspath(self.model), str(self.device), self.precision, str(self.batch_size), str(self.clip_weights),
                self.compile, self.cpu_path)  # fmt: skip

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments (the values themselves: a module is not copied)."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, options: Mapping[str, Any]) -> tuple[EngineOptions, dict[str, Any]]:
        """The engine options among ``options`` (the others default), and the remaining keywords."""
        names = cls.names()
        return cls(**{k: v for k, v in options.items() if k in names}), {
            k: v for k, v in options.items() if k not in names
        }


def takes_engine_options(function: F) -> F:
    """Show the fields of :class:`EngineOptions` as keyword parameters in ``function``'s signature.

    ``function`` declares them as ``**options`` and builds ``EngineOptions(**options)``
    (which refuses an unknown name); its signature, as ``help()`` and ``inspect`` show
    it, lists each option with its default in place of ``**options``.
    """
    signature = inspect.signature(function)
    fields = inspect.signature(EngineOptions).parameters.values()
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in parameters}
    parameters += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fields if p.name not in taken]
    function.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return function
