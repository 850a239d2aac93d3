"""The ``upfusion`` command line tool.

Each sub-command lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
in the order ``upfusion --help`` shows them.  What several commands share (the
engine flags above all) is in :mod:`.options`.  Errors meant for people
(:class:`~napari_upfusion.errors.UPFusionError`) are printed as one sentence
with exit status 2, and so are failures of the environment (out of memory, a
library that cannot be loaded under a low ``ulimit -v``, an operating-system
error); Ctrl-C exits with 130, SIGTERM with 143 and SIGHUP with 129 after every
clean-up has run (:mod:`.signals`, the one policy for signals); output into a pipe whose
reader has gone ends quietly with 141.  Nothing else is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from ..errors import Terminated, UPFusionError
from .signals import (
    closed_output_status,
    command_policy,
    environment_sentence,
    exit_status,
    forget_handled_interrupt,
)

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


#: What an interrupted command says it left, unless it names its own (``_interrupted`` in its defaults).
INTERRUPTED = "no file was left half-written."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upfusion`` script; returns the exit status."""
    args = None
    with command_policy():
        try:
            args = build_parser().parse_args(argv)
            status = int(args._run(args) or 0)
            sys.stdout.flush()  # a reader that has gone (`| head`) is noticed here, under the policy below
            return status
        except UPFusionError as error:
            print(f"upfusion: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as stop:
            what = "terminated" if isinstance(stop, Terminated) else "interrupted"
            note = getattr(args, "_interrupted", INTERRUPTED).format(**vars(args or argparse.Namespace()))
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: the exit status still says it
                print(f"upfusion: {what}; {note}", file=sys.stderr)
            forget_handled_interrupt()
            return exit_status(stop)
        except (MemoryError, ImportError, OSError) as error:
            closed = closed_output_status(error)
            if closed is not None:  # the reader of our output (`| head`) has gone: stop quietly, as `yes | head` does
                return closed
            print(f"upfusion: error: {environment_sentence(error)}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
