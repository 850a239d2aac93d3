"""Dataclasses read from plain mappings (JSON), refusing unknown field names instead of dropping them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["from_fields"]

T = TypeVar("T")


def from_fields(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)`` for a dataclass ``cls``; a name that is not one of its fields raises ``ValueError``
    naming ``what`` the fields are of."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields: {', '.join(unknown)}.")
    return cls(**data)
