"""Fusers by name: the UP-Fusion weights and any other slice fuser registered beside them.

A *slice fuser* is a ``torch.nn.Module`` whose ``forward(a, b, text_code)``
takes two ``[B, 1, H, W]`` float tensors in ``[0, 1]`` (``H`` and ``W``
multiples of 8) and a text code ``[1, D]`` (or ``None`` when its
``uses_text`` attribute is false) and returns ``[B, 1, H, W]``.  The engine
clamps the result to ``[0, 1]``.

Modules beside the engine (the classical baselines, for instance) register
themselves here with :func:`register_fuser`; the engine never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import InputError

__all__ = ["FuserInfo", "register_fuser", "available_fusers", "build_fuser", "uses_text"]


@dataclass(frozen=True)
class FuserInfo:
    """A registered fuser: how to build it and a one-line description for menus and ``--help``."""

    name: str
    factory: Callable[[torch.device], nn.Module]
    description: str
    needs_weights: bool


_REGISTRY: dict[str, FuserInfo] = {}


def register_fuser(
    name: str, factory: Callable[[torch.device], nn.Module], description: str, needs_weights: bool = False
) -> None:
    """Make ``name`` usable wherever a model is chosen (API, CLI, widget)."""
    _REGISTRY[name] = FuserInfo(name, factory, description, needs_weights)


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
