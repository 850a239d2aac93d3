"""What several commands share: the engine flags (written once), the output format, number types and the slice
progress bar.

:func:`add_engine_options` adds the flags that choose and build the engine (``--model``,
``--checkpoint``, ``--device``, ``--precision``, ``--batch-size``, ``--clip-weights``,
``--compile``, ``--cpu-path``) with one name, meaning and help text everywhere; a command names the ones
it takes and may change a default.  :func:`engine_options` reads them back as the
engine's :class:`~napari_upfusion.engine.options.EngineOptions`.  Nothing here imports
torch: ``upfusion --help`` must answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..engine.options import PRECISION_NAMES, EngineOptions

__all__ = [
    "OUTPUT_FORMATS",
    "PRECISION_CHOICES",
    "add_engine_options",
    "add_output_format",
    "batch_size",
    "engine_options",
    "number",
    "output_format",
    "path_argument",
    "slice_progress",
    "whole_number",
]

#: ``--precision`` choices of every command that fuses (see :class:`~napari_upfusion.engine.options.EngineOptions`).
PRECISION_CHOICES = list(PRECISION_NAMES)


def path_argument(text: str) -> Path:
    """A file or folder argument as a ``Path``; an empty one is refused (``Path("")`` would quietly mean the current
    folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder name")
    return Path(text)


def whole_number(flag: str, minimum: int = 1, multiple: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for ``flag``: a whole number from ``minimum`` to ``maximum``, a multiple of ``multiple``."""

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum) or value % multiple:
            need = f"a whole number of at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
            need += f" and a multiple of {multiple}" if multiple > 1 else ""
            raise argparse.ArgumentTypeError(f"{flag} must be {need}, not {text!r}")
        return value

    return parse


def number(flag: str, above: float, maximum: float) -> Callable[[str], float]:
    """An argparse ``type`` for ``flag``: a finite number greater than ``above`` and at most ``maximum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and above < value <= maximum):
            raise argparse.ArgumentTypeError(f"{flag} must be a number greater than {above:g} and at most {maximum:g}, "
                                             f"not {text!r}")  # fmt: skip
        return value

    return parse


def batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a positive whole number (an argparse ``type``)."""
    if text == "auto":
        return text
    try:
        return whole_number("--batch-size")(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--batch-size must be 'auto' or a positive whole number, not {text!r}"
        ) from None


#: Each engine flag: its option name (``dest``) -> the ``add_argument`` keywords.
ENGINE_FLAGS: dict[str, dict[str, Any]] = {
    "model": {
        "default": "small",
        "help": "small (bundled), paper, average, maximum, laplacian, or a checkpoint path (default: %(default)s)",
    },
    "checkpoint": {"type": path_argument, "help": "path of a checkpoint (the authors' Fuse.pth or our safetensors)"},
    "device": {
        "default": "auto",
        "help": "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N (default: %(default)s)",
    },
    "precision": {
        "default": "auto",
        "choices": PRECISION_CHOICES,
        "help": "auto: what the model was validated at (fp32 for paper everywhere; TF32 off); bf16, fp16 or tf32 "
        "(GPU) only when asked, with a warning where not validated (channel rankings may change)",
    },
    "batch_size": {"type": batch_size, "default": "auto", "help": "slices per batch (default: from free memory)"},
    "clip_weights": {"type": path_argument, "help": "CLIP ViT-B/32 weights file (paper model, new prompts)"},
    "compile": {"action": "store_true", "help": "torch.compile the network (pays on a GPU for long volumes)"},
    "cpu_path": {
        "default": "auto",
        "choices": ["auto", "eager", "onnx"],
        "help": "how the network runs on the CPU: onnx (fp32 through ONNX Runtime, exported once per slice size "
        "and cached), eager (PyTorch), auto (onnx for small, eager for paper, eager with bf16 or --compile) "
        "(default: %(default)s)",
    },
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_engine_options(parser: argparse.ArgumentParser, *names: str, **defaults: Any) -> None:
    """Add the engine flags ``names`` (option names of :data:`ENGINE_FLAGS`, in that order) to ``parser``.

    ``--model`` and ``--checkpoint`` are mutually exclusive when both are added.  ``defaults``
    changes an option's default (``device="cpu"``).
    """
    unknown = sorted(set(names) - set(ENGINE_FLAGS)) + sorted(set(defaults) - set(names))
    if unknown:
        raise ValueError(f"not engine flags of this command: {', '.join(unknown)}")
    exclusive = parser.add_mutually_exclusive_group() if {"model", "checkpoint"} <= set(names) else None
    for name in names:
        keywords = {**ENGINE_FLAGS[name], **({"default": defaults[name]} if name in defaults else {})}
        target = exclusive if exclusive is not None and name in ("model", "checkpoint") else parser
        target.add_argument(_flag(name), dest=name, **keywords)


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options the parsed engine flags give (``--checkpoint`` is the model when given)."""
    given = {name: getattr(args, name) for name in EngineOptions.names() if hasattr(args, name)}
    if getattr(args, "checkpoint", None) is not None:
        given["model"] = args.checkpoint
    return EngineOptions(**given)


#: ``--format`` choices: ``auto`` (each output's extension, or its input's family, decides) or a format that is
#: written as a folder (a DICOM series).
OUTPUT_FORMATS = ["auto", "dicom"]


def add_output_format(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--format`` to ``parser``; ``what`` says what the extension decides without it."""
    parser.add_argument(
        "--format", choices=OUTPUT_FORMATS, default="auto", type=str.lower,
        help=f"auto: {what}; dicom: a new folder that receives a DICOM series, linked to a's series when a is "
        "DICOM, else with generated patient and study identifiers (default: %(default)s)",
    )  # fmt: skip


def output_format(args: argparse.Namespace) -> str | None:
    """The ``format`` argument of :func:`~napari_upfusion.engine.io.write_image` that ``--format`` gives."""
    return None if args.format == "auto" else args.format


@contextlib.contextmanager
def slice_progress(desc: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for the engine that draws a slice bar on stderr.

    The bar appears at the first report, when the number of slices is known, and not at all
    for a single slice (a 2-D pair) or with ``quiet``; it is closed when the block ends.
    """
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="slice", desc=desc, disable=quiet or total < 2)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
