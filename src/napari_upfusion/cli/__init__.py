"""The ``upfusion`` command line tool.

Each sub-command lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
in the order ``upfusion --help`` shows them.  Errors meant for people
(:class:`~napari_upfusion.errors.UPFusionError`) are printed as one sentence
with exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence

from ..errors import UPFusionError

COMMANDS = ["demo", "info", "fuse", "batch", "evaluate", "bench", "train", "make_data", "download"]


#: ``--precision`` choices of every command that fuses (see :class:`~napari_upfusion.engine.api.FusionEngine`).
PRECISION_CHOICES = ["auto", "fp32", "tf32", "bf16", "fp16"]


def whole_number(flag: str, minimum: int = 1, multiple: int = 1) -> Callable[[str], int]:
    """An argparse ``type`` for ``flag``: a whole number of at least ``minimum``, a multiple of ``multiple``."""

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or value % multiple:
            need = f"a whole number of at least {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
            raise argparse.ArgumentTypeError(f"{flag} must be {need}, not {text!r}")
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


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="upfusion",
        description="Fuse co-registered images or volumes of two modalities with UP-Fusion.",
    )
    parser.add_argument("--version", action="version", version=f"napari-upfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __package__)
        command = module.add_parser(sub)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upfusion`` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UPFusionError as error:
        print(f"upfusion: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("upfusion: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
