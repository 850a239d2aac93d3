"""Files between runs: the user cache folder, writes that are never half-done, and SHA-256 sums read in blocks.

The one place for each of these ideas: every layer that keeps a file (prompt codes,
checkpoints, reports, training shards) writes it through :func:`atomic_path` (or
:func:`atomic_write_text` / :func:`atomic_write_bytes`), and every checksum is
:func:`file_sha256`.  Nothing is ever written into the package folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs

__all__ = ["CACHE_ENV", "atomic_path", "atomic_write_bytes", "atomic_write_text", "cache_dir", "file_sha256"]

#: Environment variable that moves the whole cache (checkpoints, CLIP weights, prompt codes).
CACHE_ENV = "UPFUSION_CACHE_DIR"

_BLOCK = 1 << 22  # bytes hashed at a time


def cache_dir() -> Path:
    """The user cache folder: ``$UPFUSION_CACHE_DIR`` if set, else the platform's user cache."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("napari-upfusion"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` when the block ends without error.

    The folder is created if needed.  If the block raises, the temporary file is
    removed and ``path`` is left as it was, so a reader never sees a half-written file.

    Yields
    ------
    pathlib.Path
        ``.<name>.<pid>.partial`` in the folder of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str], *, remember: bool = False) -> str:
    """SHA-256 of a file, read in blocks of 4 MiB (memory stays small whatever the file's size).

    With ``remember``, the sum is kept per (path, size, modification time) in the
    cache, so a big file that does not change (a checkpoint, CLIP weights) is
    hashed once; a read-only cache only costs hashing again next time.
    """
    path = Path(path)
    if not remember:
        return _sha256(path)
    stat = path.stat()
    memo_file = cache_dir() / "file_hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        memo[key] = _sha256(path)
        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=1))
        except OSError:
            pass
    return memo[key]
