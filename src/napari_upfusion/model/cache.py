"""Where napari-upfusion keeps files between runs (never in the package folder)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir", "CACHE_ENV"]

#: Environment variable that moves the whole cache (checkpoints, CLIP weights, prompt codes).
CACHE_ENV = "UPFUSION_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache folder: ``$UPFUSION_CACHE_DIR`` if set, else the platform's user cache."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("napari-upfusion"))
