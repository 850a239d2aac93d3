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


def seed_files(folder: Path) -> dict[str, Path]:
    """One small, valid file of every format the readers take, to be mutated by the fuzz tests and fuzz/."""
    import imageio.v3 as iio
    import SimpleITK as sitk
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    volume = (rng.random((5, 16, 12)) * 900).astype(np.int16)
    files = {
        "nii": nifti(folder / "seed.nii", volume.T.copy()),
        "nii.gz": nifti(folder / "seed.nii.gz", volume.T.copy()),
    }
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.5, 0.7, 2.0))
    for ext in ("mha", "nrrd"):
        sitk.WriteImage(image, str(folder / f"seed.{ext}"))
        files[ext] = folder / f"seed.{ext}"
    piece = sitk.GetImageFromArray(volume[0])
    for tag, value in {"0008|0060": "CT", "0020|0032": "0\\0\\0", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
        piece.SetMetaData(tag, value)
    sitk.WriteImage(piece, str(folder / "seed.dcm"))
    files["dcm"] = folder / "seed.dcm"
    grey = (rng.random((16, 20)) * 255).astype(np.uint8)
    iio.imwrite(folder / "seed.png", grey)
    iio.imwrite(folder / "seed.jpg", grey)
    tifffile.imwrite(folder / "seed.tif", volume.astype(np.uint16))
    files.update(png=folder / "seed.png", jpg=folder / "seed.jpg", tif=folder / "seed.tif")
    return files


def seed_checkpoints(folder: Path, config) -> dict[str, Path]:
    """A tiny network's weights in the project's safetensors format, in the authors' layout, and gzip-compressed."""
    import gzip

    import torch

    from napari_upfusion.model import create_model, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model(config).eval()
    files = {"safetensors": save_checkpoint(model, folder / "seed.safetensors")}
    torch.save({"AWF": {f"module.{k}": v for k, v in list(model.state_dict().items())[:6]}}, folder / "seed.pth")
    files["pth"] = folder / "seed.pth"
    (folder / "seed.pth.gz").write_bytes(gzip.compress(files["pth"].read_bytes()))
    files["pth.gz"] = folder / "seed.pth.gz"
    return files
