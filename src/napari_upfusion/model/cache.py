"""Where napari-upfusion keeps files between runs (never in the package folder)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import platformdirs

__all__ = ["CACHE_ENV", "atomic_write_text", "cache_dir", "file_sha256"]

#: Environment variable that moves the whole cache (checkpoints, CLIP weights, prompt codes).
CACHE_ENV = "UPFUSION_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache folder: ``$UPFUSION_CACHE_DIR`` if set, else the platform's user cache."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("napari-upfusion"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) in the cache so a big file is hashed once."""
    path = Path(path)
    stat = path.stat()
    memo_file = cache_dir() / "file_hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        memo[key] = digest.hexdigest()
        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=1))
        except OSError:  # a read-only cache only costs a re-hash next time
            pass
    return memo[key]
