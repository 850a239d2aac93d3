"""What the tests of hostile inputs share: real files, the command line run in this process, and the bar of
docs/reliability.md (one sentence, a non-zero exit, no traceback, inputs unchanged, nothing left behind)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_upfusion.cli import main

RNG = np.random.default_rng(17)


def nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """``data`` saved as NIfTI at ``path`` (identity affine by default)."""
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def pair(folder: Path, shape: tuple[int, int, int] = (40, 36, 6)) -> tuple[Path, Path]:
    """An MRI-like int16 and a PET-like float32 NIfTI volume on one grid, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    a = nifti(folder / "a.nii.gz", (RNG.random(shape) * 800).astype(np.int16))
    b = nifti(folder / "b.nii.gz", (RNG.random(shape) * 5).astype(np.float32))
    return a, b


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file, folder and link under ``folders``: its SHA-256, ``dir`` or its target (links are not followed)."""
    found: dict[str, str] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = Path(root, name)
                key = str(path)
                if path.is_symlink():
                    found[key] = f"-> {os.readlink(path)}"
                elif path.is_dir():
                    found[key] = "dir"
                else:
                    found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(argv: list[str], capsys, match: str, *folders: Path, code: int = 2) -> str:
    """Run ``upfusion argv`` in this process and check the bar: exit ``code``, one line ``upfusion: error: ...``
    matching ``match``, no traceback, and ``folders`` exactly as they were (inputs unchanged, nothing left behind)."""
    before = snapshot(*folders)
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == code, (status, out, err)
    assert lines and lines[-1].startswith("upfusion: error: "), err
    assert "Traceback" not in err and sum(line.startswith("upfusion: error") for line in lines) == 1, err
    assert re.search(match, lines[-1]), lines[-1]
    assert snapshot(*folders) == before, "a file changed or was left behind"
    return lines[-1]


@contextlib.contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs") -> Iterator[Path]:
    """``mount`` a file system at ``target`` for the block (a tmpfs, or with ``--bind`` a read-only view);
    the test is skipped where this process may not mount (not root, a container without the right)."""
    target.mkdir(parents=True, exist_ok=True)
    kind = [] if "--bind" in options else ["-t", "tmpfs"]
    done = subprocess.run(["mount", *kind, *options, source, str(target)], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}); run as root to test this")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def no_network(monkeypatch) -> Iterator[list[str]]:
    """Record (and refuse) every attempt to resolve a name or open a connection while the block runs."""
    import socket

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
