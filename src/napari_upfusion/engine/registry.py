"""Fusers by name: the UP-Fusion weights and any other slice fuser registered beside them.

A *slice fuser* is a ``torch.nn.Module`` whose ``forward(a, b, text_code)``
takes two ``[B, 1, H, W]`` float tensors in ``[0, 1]`` (``H`` and ``W``
multiples of 8) and a text code ``[1, D]`` (or ``None`` when its
``uses_text`` attribute is false) and returns ``[B, 1, H, W]``.  The engine
clamps the result to ``[0, 1]``.

The built-in fusers are declared as data in :data:`BUILTIN_FUSERS`, the way npe2
declares a plugin's commands: each names its factory as a ``"module:callable"``
string (plus keyword arguments), which is imported only when that fuser is built.
So importing this module registers nothing by side effect, imports nothing heavy,
and the engine never imports the modules beside it (the classical fusers of
:mod:`napari_upfusion.fusers`) by code.  :func:`register_fuser` adds more at run time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:  # the registry stays light: nothing heavy is imported until a fuser is built
    import torch
    from torch import nn

__all__ = ["BUILTIN_FUSERS", "FuserInfo", "available_fusers", "build_fuser", "register_fuser", "uses_text"]


@dataclass(frozen=True)
class FuserInfo:
    """A registered fuser: how to build it, a one-line description, and how it takes a prompt.

    ``factory`` is either a callable ``factory(device) -> module`` or a
    ``"package.module:callable"`` string: that callable is imported when the fuser
    is built and called with ``kwargs``; the module it returns is moved to the
    device and put in eval mode.  ``prompt`` is ``"free"`` (any text, through
    CLIP), ``"table"`` (only the built-in prompts of config ``config``) or
    ``"none"`` (no text at all).
    """

    name: str
    factory: Callable[[torch.device], nn.Module] | str
    description: str
    needs_weights: bool = False
    prompt: str = "free"
    config: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt not in ("free", "table", "none"):
            raise ValueError(f"prompt must be 'free', 'table' or 'none', not {self.prompt!r}.")
        if isinstance(self.factory, str) and self.factory.count(":") != 1:
            raise ValueError(f"a factory string is 'package.module:callable', not {self.factory!r}.")

    def build(self, device: torch.device) -> nn.Module:
        """The fuser on ``device``."""
        if not isinstance(self.factory, str):
            return self.factory(device)
        module_name, _, attribute = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(**self.kwargs).to(device).eval()


_NETWORK = "napari_upfusion.model.checkpoint.load:load_model"
_CLASSICAL = "napari_upfusion.fusers.classical:{}"

#: The fusers that ship with the package, in the order every menu lists them.
BUILTIN_FUSERS: tuple[FuserInfo, ...] = (
    FuserInfo(
        "small",
        _NETWORK,
        "the project's own small UP-Fusion, shipped in the package (CPU-friendly)",
        prompt="table",
        config="small",
        kwargs={"source": "small"},
    ),
    FuserInfo(
        "paper",
        _NETWORK,
        "the authors' released UP-Fusion weights (Fuse.pth, which you download)",
        needs_weights=True,
        config="paper",
        kwargs={"source": "paper"},
    ),
    FuserInfo(
        "average",
        _CLASSICAL.format("AverageFuser"),
        "classical: the pixel-wise mean of the two images",
        prompt="none",
    ),
    FuserInfo(
        "maximum",
        _CLASSICAL.format("MaximumFuser"),
        "classical: the pixel-wise maximum of the two images",
        prompt="none",
    ),
    FuserInfo(
        "laplacian",
        _CLASSICAL.format("LaplacianFuser"),
        "classical: Laplacian-pyramid fusion (larger detail per level, averaged base)",
        prompt="none",
    ),
)

_REGISTRY: dict[str, FuserInfo] = {info.name: info for info in BUILTIN_FUSERS}


def register_fuser(
    name: str,
    factory: Callable[[torch.device], nn.Module] | str,
    description: str,
    needs_weights: bool = False,
    prompt: str = "free",
    config: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Make ``name`` usable wherever a model is chosen (API, CLI, widget); see :class:`FuserInfo`."""
    _REGISTRY[name] = FuserInfo(name, factory, description, needs_weights, prompt, config, dict(kwargs or {}))


def available_fusers() -> dict[str, FuserInfo]:
    """Every registered fuser by name: the built-in ones first, then those registered since, in that order."""
    return dict(_REGISTRY)


def build_fuser(name: str, device: torch.device) -> nn.Module:
    """Instantiate the fuser registered as ``name`` on ``device``."""
    try:
        info = _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise InputError(f"There is no fuser named {name!r}; choose one of {known} or give a checkpoint path.") from None
    return info.build(device)


def uses_text(fuser: nn.Module) -> bool:
    """Whether ``fuser`` reads the text code (UP-Fusion does; classical fusers do not)."""
    return bool(getattr(fuser, "uses_text", True))
