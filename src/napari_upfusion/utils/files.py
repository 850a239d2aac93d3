"""Files between runs: the user cache folder, writes that are never half-done, SHA-256 sums read in blocks,
and what an operating-system error means in words.

The one place for each of these ideas: every layer that keeps a file (prompt codes,
checkpoints, reports, training shards) writes it through :func:`atomic_path` (or
:func:`atomic_write_text` / :func:`atomic_write_bytes`), every checksum is
:func:`file_sha256`, every temporary name beside a target is :func:`partial_prefix`
(so that whoever cleans up finds them), and every ``OSError`` a user may meet is put
into one sentence by :func:`os_error_sentence`.  :func:`path_kind` and
:func:`check_output_folder` are the file-system checks that the engine's one place of
checks (:mod:`napari_upfusion.engine.validate`) and its writers share.  Nothing is ever written into the
package folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from ..errors import InputError

__all__ = [
    "CACHE_ENV",
    "NAME_MAX",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "check_output_folder",
    "file_sha256",
    "os_error_sentence",
    "partial_prefix",
    "path_kind",
    "short_path",
]

#: Environment variable that moves the whole cache (checkpoints, CLIP weights, prompt codes).
CACHE_ENV = "UPFUSION_CACHE_DIR"

_BLOCK = 1 << 22  # bytes hashed at a time
#: The longest file name (in bytes) that common file systems (ext4, XFS, APFS, NTFS in UTF-16 units) allow.
NAME_MAX = 255
#: The longest path (in bytes, with its terminating NUL) that Linux takes in one system call.
PATH_MAX = 4096
#: Bytes of a target's name kept in the name of its temporary file or staging folder (room for the rest).
_PARTIAL_NAME_BYTES = 200


def short_path(path: str | os.PathLike[str], limit: int = 120) -> str:
    """``path`` as text for a message, its middle cut out when it is longer than ``limit`` characters."""
    text = os.fspath(path)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def os_error_sentence(error: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One sentence saying what an operating-system error means for ``path`` and what to do about it.

    The one mapping from ``errno`` to words, used wherever a file is read or written:
    a name too long, a full disk, a read-only file system, a permission refused, a folder
    where a file is expected (and the reverse), a missing path, a loop of links...  Any
    other error is named by the system's own text.

    Parameters
    ----------
    error
        The error; its ``filename`` is used when ``path`` is not given.
    path
        The file or folder the operation was about.
    """
    where = short_path(path if path is not None else (error.filename or "the file"))
    folder = short_path(os.path.dirname(os.fspath(path if path is not None else error.filename or "")) or ".")
    code = error.errno
    if code == errno.ENAMETOOLONG:
        full = os.fsencode(os.path.abspath(path if path is not None else error.filename or ""))
        if len(full) >= PATH_MAX:
            return (
                f"The path {where} is {len(full):,} bytes long, more than the {PATH_MAX - 1:,} a path may have on this "
                "system; choose a shorter path."
            )
        return (
            f"The name {where} is too long for the file system (a file name may have at most {NAME_MAX} bytes); "
            "choose a shorter name."
        )
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"The disk that holds {folder} is full (or over its quota); free some space or choose another folder."
    if code == errno.EROFS:
        return f"{where} is on a read-only file system; choose a folder you may write to."
    if code in (errno.EACCES, errno.EPERM):
        return f"Permission to use {where} was refused; choose a file or folder you may use, or change its permissions."
    if code == errno.EISDIR:
        return f"{where} is a folder, not a file; give the path of a file."
    if code == errno.ENOTDIR:
        return f"A part of {where} is a file, not a folder; check the path."
    if code == errno.ENOENT:
        return f"{where} does not exist; check the path and try again."
    if code == errno.EEXIST:
        return f"{where} already exists; choose another name or remove it first."
    if code == errno.ELOOP:
        return f"{where} is a loop of symbolic links; check the path."
    if code in (errno.EMFILE, errno.ENFILE):
        return "Too many files are open; close other programs and try again."
    if code == errno.ENOMEM:
        return "The system ran out of memory; close other programs or use a smaller input."
    if code == errno.EIO:
        return f"The disk reported an input/output error for {where}; check the disk, then copy the file again."
    reason = error.strerror or type(error).__name__
    return f"The operating system refused to use {where} ({reason}); check the path, the free space and the permissions."


def path_kind(path: str | os.PathLike[str]) -> str | None:
    """``"dir"``, ``"file"`` (anything else that exists) or ``None`` (nothing there); an unusable path (a name
    too long, a loop of links, a NUL byte...) is refused in one sentence."""
    try:
        mode = os.stat(path).st_mode
    except ValueError:
        raise InputError(f"The path {short_path(repr(os.fspath(path)))} holds a NUL byte; check how it was written.") from None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise InputError(os_error_sentence(error, path)) from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def check_output_folder(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse an output file whose name the file system cannot take, whose folder is missing or may not be
    written, or that exists when ``overwrite`` is false; returns ``path`` as a ``Path``."""
    path = Path(path).expanduser()
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise InputError(os_error_sentence(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)), path.name))
    folder = path.parent if str(path.parent) else Path(".")
    kind = path_kind(folder)
    if kind is None:
        raise InputError(
            f"The folder {short_path(folder)} does not exist; create it first or choose another output path."
        )
    if kind != "dir":
        raise InputError(f"{short_path(folder)} is a file, not a folder; choose another output path.")
    if path_kind(path) is not None and not overwrite:
        raise InputError(
            f"{short_path(path)} already exists; pass --force (overwrite=True) to replace it or choose another name."
        )
    if not os.access(folder, os.W_OK):
        raise InputError(f"The folder {short_path(folder)} is not writable; choose a folder you may write to.")
    return path


def partial_prefix(path: str | os.PathLike[str]) -> str:
    """The start of the name of every temporary file or staging folder written beside ``path``: ``.<name>.``.

    A long name is cut so that the temporary name stays within :data:`NAME_MAX` bytes;
    what follows is a unique part and ``.partial``.
    """
    return f".{os.fsdecode(os.fsencode(Path(path).name)[:_PARTIAL_NAME_BYTES])}."


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
        ``.<name>.<pid>.partial`` (:func:`partial_prefix`) in the folder of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{partial_prefix(path)}{os.getpid()}.partial")
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
