"""What every writer shares: the data type stored, and output that appears whole or not at all.

:func:`staged_output` is how every file or folder of :mod:`napari_upfusion.engine.io`
is written: into a fresh staging folder beside the target, then moved into place with
``os.replace``; on any failure nothing is left behind and an existing file is
untouched.  An existing file is only replaced with ``overwrite=True``.  A process
killed while writing can leave only its staging folder, ``.<name>.<random>.partial``
(:func:`~napari_upfusion.utils.files.partial_prefix`), never a partial ``<name>``; the
command line removes it on Ctrl-C and SIGTERM, and a batch removes those of its outputs.  (Single files that are not images, such as caches and
reports, go through :func:`napari_upfusion.utils.files.atomic_path`.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import InputError, UPFusionError
from ...utils.files import check_output_folder, os_error_sentence, partial_prefix

__all__ = ["staged_output", "stored_dtype"]


def stored_dtype(array: np.ndarray) -> np.ndarray:
    """Float data as float32 and booleans as uint8, for NIfTI, MetaImage and NRRD."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    return array.astype(np.uint8) if array.dtype == bool else array


@contextlib.contextmanager
def staged_output(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A fresh staging folder beside ``path``; what is written in it is moved into place when the block ends.

    Every file or folder written into the staging folder is moved to ``path``'s
    folder with ``os.replace`` (the one named like ``path`` last, so that it
    appears only when its companions are in place); on any failure, or if the
    block raises, nothing is moved and the staging folder is removed.

    Parameters
    ----------
    path
        The target (absolute); its folder must exist.
    overwrite
        Replace existing targets (a folder target is moved aside first, then removed).

    Yields
    ------
    pathlib.Path
        The staging folder, ``.<name>.<random>.partial`` beside ``path``.

    Raises
    ------
    InputError
        Missing folder, an existing target without ``overwrite``, an unwritable
        folder, or a failure while writing (then nothing was written).
    """
    folder = path.parent
    check_output_folder(path, overwrite=overwrite)
    try:
        staging = Path(tempfile.mkdtemp(prefix=partial_prefix(path), suffix=".partial", dir=folder))
    except OSError as error:
        raise InputError(os_error_sentence(error, folder)) from None
    try:
        yield staging
        produced = sorted(staging.iterdir(), key=lambda item: item.name == path.name)  # the main file last
        clashes = [folder / item.name for item in produced if (folder / item.name).exists() and item.name != path.name]
        if clashes and not overwrite:
            raise InputError(f"{clashes[0]} already exists; pass --force (overwrite=True) to replace it.")
        for item in produced:
            target = folder / item.name
            if item.is_dir() and target.exists():  # os.replace cannot replace a non-empty folder
                os.replace(target, staging / f"{item.name}.replaced")
            os.replace(item, target)
    except UPFusionError:
        raise
    except OSError as error:
        reason = os_error_sentence(error, path)
        raise InputError(f"Writing {path.name} failed, so nothing was written: {reason[:1].lower()}{reason[1:]}") from None
    except Exception as error:
        raise InputError(
            f"Writing {path} failed ({type(error).__name__}), so nothing was written; "
            f"check the free space and permissions of {folder}."
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
