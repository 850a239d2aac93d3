"""Where weights live: shipped in the package, the authors' checkpoint on this machine, the user cache.

Nothing is ever downloaded here: the project's own weights ship inside the
package (``napari_upfusion/model/weights/upfusion_<name>.safetensors``), and the
authors' ``Fuse.pth`` is looked for where the user put it, with instructions when
it is absent.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ...errors import WeightsNotFoundError
from ...utils.files import cache_dir

__all__ = [
    "PAPER_CHECKPOINT_ENV",
    "PAPER_CHECKPOINT_LINKS",
    "PAPER_CHECKPOINT_NAME",
    "bundled_names",
    "bundled_weights",
    "default_paper_checkpoint_path",
    "find_paper_checkpoint",
]

PAPER_CHECKPOINT_ENV = "UPFUSION_PAPER_CHECKPOINT"
PAPER_CHECKPOINT_NAME = "Fuse.pth"
PAPER_CHECKPOINT_LINKS = (
    "https://drive.google.com/file/d/1nOs9xAkjfHSNRqNgYO0CPuY7gpEg8k2X/view",
    "https://pan.baidu.com/s/1U9UjyeNt6y6bDbty3UMrUA?pwd=w74h",
)
_MODEL_PACKAGE = "napari_upfusion.model"  # the bundled files are in its weights/ folder


def bundled_names() -> list[str]:
    """Names of the weights shipped inside the package (``small``, ...)."""
    folder = resources.files(_MODEL_PACKAGE).joinpath("weights")
    files = [p.name for p in folder.iterdir() if p.name.endswith(".safetensors")]
    return sorted(name[: -len(".safetensors")].removeprefix("upfusion_") for name in files)


def bundled_weights(name: str = "small") -> Path:
    """Path of weights shipped inside the package (``upfusion_<name>.safetensors``)."""
    path = Path(str(resources.files(_MODEL_PACKAGE).joinpath("weights", f"upfusion_{name}.safetensors")))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"The bundled '{name}' weights are missing from the installation ({path}); reinstall napari-upfusion."
        )
    return path


def default_paper_checkpoint_path() -> Path:
    """Where the authors' checkpoint is looked for when no path or environment variable is given."""
    return cache_dir() / PAPER_CHECKPOINT_NAME


def find_paper_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the authors' ``Fuse.pth``: ``path``, then ``$UPFUSION_PAPER_CHECKPOINT``, then the user cache.

    Never downloads.  When absent, raises :class:`WeightsNotFoundError` saying
    where to get the file and where to put it.
    """
    if path is not None:
        origin, candidate = "the given path", Path(path).expanduser()
    elif os.environ.get(PAPER_CHECKPOINT_ENV):
        origin, candidate = f"${PAPER_CHECKPOINT_ENV}", Path(os.environ[PAPER_CHECKPOINT_ENV]).expanduser()
    else:
        origin, candidate = "the user cache", default_paper_checkpoint_path()
    if candidate.is_file():
        return candidate
    raise WeightsNotFoundError(
        f"The authors' UP-Fusion checkpoint was not found at {candidate} ({origin}); download Fuse.pth from "
        f"{PAPER_CHECKPOINT_LINKS[0]} or {PAPER_CHECKPOINT_LINKS[1]} and save it as {default_paper_checkpoint_path()} "
        f"or set {PAPER_CHECKPOINT_ENV} to its path."
    )
