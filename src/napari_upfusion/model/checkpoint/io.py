"""Reading and writing weights files, safely: nothing in a checkpoint can ever run code.

Files are opened only with ``torch.load(..., weights_only=True)`` or safetensors.
:func:`read_checkpoint_file` accepts safetensors, any ``torch.save`` file and
gzip-compressed torch files (decompressed in a stream that stops at
:data:`MAX_DECOMPRESSED_BYTES`, so a decompression bomb is refused by its size),
and refuses unsafe, truncated, corrupt or foreign files with one sentence.  :func:`save_checkpoint` writes the project's own format:
safetensors whose metadata holds the network's
:class:`~napari_upfusion.model.upfusion.UPFusionConfig` (key ``"config"``) and its
:class:`~napari_upfusion.model.runtime.RuntimeHints` (key ``"runtime"``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from ...errors import CheckpointError
from ...utils.files import atomic_path
from ..runtime import RUNTIME_KEY, RuntimeHints

if TYPE_CHECKING:
    from ..upfusion import UPFusion

__all__ = [
    "BACKBONE_PREFIX",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_DECOMPRESSED_BYTES",
    "read_checkpoint_file",
    "save_checkpoint",
]

FORMAT_NAME = "napari-upfusion"
FORMAT_VERSION = "1"
#: State-dict prefix of SCPM's backbone: left out of files whose config takes it from a pretrained source.
BACKBONE_PREFIX = "scpm.backbone."
#: The most bytes a gzip-compressed checkpoint may expand to: four times the authors' ``Fuse.pth`` (about 0.5 GB).
MAX_DECOMPRESSED_BYTES = 2 << 30
_CHUNK = 1 << 22


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def _decompressed(path: Path, where: str, limit: int) -> tempfile.SpooledTemporaryFile:
    """The gzip file ``path`` decompressed into a temporary file (in memory while small), refused once it passes
    ``limit`` bytes (at once when its trailer says so): nothing larger is ever written or held."""
    refusal = CheckpointError(
        f"The checkpoint {where} expands to more than {_size(limit)} when decompressed, more than any UP-Fusion "
        "checkpoint holds, so it was refused (it may be a decompression bomb); give the uncompressed weights file "
        "or another checkpoint."
    )
    with open(path, "rb") as handle:  # the trailer's size (modulo 4 GiB): an honest bomb is refused at once
        handle.seek(max(0, path.stat().st_size - 4))
        if int.from_bytes(handle.read(4), "little") > limit:
            raise refusal
    sink = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 - returned open, closed by the caller
    total = 0
    try:
        with gzip.open(path, "rb") as source:
            while block := source.read(_CHUNK):
                total += len(block)
                if total > limit:
                    raise refusal
                sink.write(block)
    except BaseException:
        sink.close()
        raise
    sink.seek(0)
    return sink


def _describe(path: Path) -> str:
    return f"'{path}'"


def _sniff(path: Path) -> str | None:
    """The container kind from the first bytes: 'zip', 'gzip', 'pickle', 'safetensors' or None."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def _is_zip(path: Path) -> bool:
    """Whether ``path`` is a readable zip archive; :func:`zipfile.is_zipfile` raises on some damaged end records
    (found by fuzzing: a zip64 end record that claims several disks)."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return False


def read_checkpoint_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw content of a weights file and its metadata (safetensors only).

    Accepts safetensors, any ``torch.save`` file (read with
    ``weights_only=True``) and gzip-compressed torch files.  Raises
    :class:`CheckpointError` with one sentence for unsafe, truncated, corrupt
    or foreign files.
    """
    path = Path(path)
    where = _describe(path)
    if not path.is_file():
        raise CheckpointError(f"The checkpoint {where} does not exist or is not a file; check the path.")
    kind = _sniff(path)
    corrupt = f"The checkpoint {where} is truncated or corrupted; download or copy it again."
    if kind is None:
        raise CheckpointError(f"The file {where} is not a PyTorch or safetensors checkpoint; give the path of a weights file.")
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return load_safetensors(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"The checkpoint {where} is not a readable safetensors file ({error}); it may be truncated "
                "or corrupted, so download or copy it again."
            ) from None
    if kind == "zip" and not _is_zip(path):
        raise CheckpointError(corrupt)
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: the refusal below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            if kind == "gzip":
                with _decompressed(path, where, MAX_DECOMPRESSED_BYTES) as source:
                    content = torch.load(source, map_location="cpu", weights_only=True)
            else:
                content = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) and "GLOBAL" in str(error).upper():
            raise CheckpointError(
                f"The checkpoint {where} contains Python objects that could run code when loaded, so it "
                "was refused; use a file that holds tensors only (a plain state dict or safetensors)."
            ) from None
        raise CheckpointError(
            f"The checkpoint {where} is not a weights file this tool can read safely (its pickled data is damaged or "
            "uses features that could run code), so it was refused; use a file that holds tensors only (a plain "
            "state dict or safetensors)."
        ) from None
    except CheckpointError:
        raise
    except (EOFError, gzip.BadGzipFile, zipfile.BadZipFile):
        raise CheckpointError(corrupt) from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for damaged files; each means "unreadable"
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        problem = "is a TorchScript archive, not a weights file" if "TorchScript" in text else f"could not be read ({text})"
        raise CheckpointError(f"The checkpoint {where} {problem}; download or copy it again.") from None
    if not isinstance(content, dict):
        raise CheckpointError(
            f"The checkpoint {where} holds a {type(content).__name__}, not a dictionary of tensors; "
            "give the path of an UP-Fusion weights file."
        )
    return content, {}


def save_checkpoint(
    model: UPFusion,
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float16,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` in the project's format: safetensors (``dtype``) with its config and runtime hints.

    A backbone whose weights come from a pretrained source (``config.backbone_weights``)
    is left out; :func:`~.load.load_model` takes it from that source again.  The hints
    are ``model.runtime`` (the defaults for a model that has none).

    The file is written to a temporary name and renamed, so it is never half-written.
    """
    path = Path(path)
    pretrained = model.config.backbone_weights is not None  # those weights come from their package when loading
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
        if not (pretrained and k.startswith(BACKBONE_PREFIX))
    }
    runtime = getattr(model, "runtime", None) or RuntimeHints()
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        RUNTIME_KEY: runtime.to_json(),
    }
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_safetensors(state, str(tmp), metadata=meta)
    return path
