"""The ``upfusion`` command line tool.

Each sub-command lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
in the order ``upfusion --help`` shows them.  What several commands share (the
engine flags above all) is in :mod:`.options`.  Errors meant for people
(:class:`~napari_upfusion.errors.UPFusionError`) are printed as one sentence
with exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import UPFusionError

COMMANDS = ["demo", "info", "fuse", "batch", "evaluate", "bench", "train", "make_data", "download"]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

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
