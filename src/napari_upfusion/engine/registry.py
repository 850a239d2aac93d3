"""Fusers by name: the UP-Fusion weights and any other slice fuser registered beside them.

A *slice fuser* is a ``torch.nn.Module`` whose ``forward(a, b, text_code)``
takes two ``[B, 1, H, W]`` float tensors in ``[0, 1]`` (``H`` and ``W``
multiples of 8) and a text code ``[1, D]`` (or ``None`` when its
``uses_text`` attribute is false) and returns ``[B, 1, H, W]``.  The engine
clamps the result to ``[0, 1]``.

The package's ``__init__`` declares every built-in fuser here with a factory
that imports its module only when the fuser is built, so the engine never
imports the modules beside it (the classical baselines, for instance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # the registry stays light: nothing heavy is imported until a fuser is built
    import torch
    from torch import nn

__all__ = ["FuserInfo", "available_fusers", "build_fuser", "register_fuser", "uses_text"]


@dataclass(frozen=True)
class FuserInfo:
    """A registered fuser: how to build it, a one-line description, and how it takes a prompt.

    ``prompt`` is ``"free"`` (any text, through CLIP), ``"table"`` (only the
    built-in prompts of config ``config``) or ``"none"`` (no text at all).
    """

    name: str
    factory: Callable[[torch.device], nn.Module]
    description: str
    needs_weights: bool = False
    prompt: str = "free"
    config: str | None = None


_REGISTRY: dict[str, FuserInfo] = {}


def register_fuser(
    name: str,
    factory: Callable[[torch.device], nn.Module],
    description: str,
    needs_weights: bool = False,
    prompt: str = "free",
    config: str | None = None,
) -> None:
    """Make ``name`` usable wherever a model is chosen (API, CLI, widget); see :class:`FuserInfo`."""
    if prompt not in ("free", "table", "none"):
        raise ValueError(f"prompt must be 'free', 'table' or 'none', not {prompt!r}.")
    _REGISTRY[name] = FuserInfo(name, factory, description, needs_weights, prompt, config)


def available_fusers() -> dict[str, FuserInfo]:
    """Every registered fuser by name, in registration order."""
    return dict(_REGISTRY)


def build_fuser(name: str, device: torch.device) -> nn.Module:
    """Instantiate the fuser registered as ``name`` on ``device``."""
    try:
        info = _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise InputError(f"There is no fuser named {name!r}; choose one of {known} or give a checkpoint path.") from None
    return info.factory(device)


def uses_text(fuser: nn.Module) -> bool:
    """Whether ``fuser`` reads the text code (UP-Fusion does; classical fusers do not)."""
    return bool(getattr(fuser, "uses_text", True))
