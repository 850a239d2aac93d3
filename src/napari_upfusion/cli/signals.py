"""The command line's one policy for signals, warnings and failures of the environment.

While a command runs (:func:`command_policy`):

* Ctrl-C (SIGINT) raises :class:`KeyboardInterrupt`, and SIGTERM and SIGHUP (the terminal
  or SSH session went away) raise :class:`~napari_upfusion.errors.Terminated` (a
  ``KeyboardInterrupt``) in the main thread, so every clean-up runs as the exception
  unwinds: staging folders and temporary files are removed, CPU stream threads are
  stopped and joined (:class:`~napari_upfusion.engine.runner.SliceRunner`), a batch
  report is marked ``interrupted``.  A second signal while that clean-up runs is
  ignored, so that it finishes; a third ends the process at once.  A SIGHUP that the
  process was started ignoring (``nohup upfusion batch …``) stays ignored.
  :func:`exit_status` gives 130 for Ctrl-C, 143 for SIGTERM and 129 for SIGHUP.
* The package's own warnings (:class:`~napari_upfusion.errors.InputWarning`,
  :class:`~napari_upfusion.errors.PrecisionWarning`) are printed as
  ``upfusion: warning: <sentence>``; the readers' own log lines (nibabel's "pixdim
  should be positive", tifffile's, Pillow's) are not printed raw: what matters in them
  is checked and said by the package (SimpleITK's and GDCM's are off for good, see
  :func:`~napari_upfusion.engine.io.sitk.simpleitk`).
* :func:`environment_sentence` puts what the environment can throw at a command (an
  out-of-memory, a library that cannot be loaded under a low ``ulimit -v``, an
  operating-system error) into one sentence.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

from ..errors import InputWarning, PrecisionWarning, Terminated
from ..utils.files import os_error_sentence

__all__ = ["closed_output_status", "command_policy", "environment_sentence", "exit_status", "forget_handled_interrupt"]

_OURS = (InputWarning, PrecisionWarning)
#: Loggers of the libraries that read files, quietened below ERROR while a command runs.
_READERS = ("nibabel", "tifffile", "PIL")


def exit_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number: 143 for SIGTERM and 129 for SIGHUP (:class:`Terminated`), 130 for Ctrl-C."""
    return 128 + (stop.signal if isinstance(stop, Terminated) else signal.SIGINT)


def forget_handled_interrupt() -> None:
    """Make CPython forget a Ctrl-C that this command has handled, so that the exit status is :func:`exit_status`'s.

    CPython remembers a :class:`KeyboardInterrupt` that ended code run from a string (``exec`` of source text, as
    :mod:`dataclasses` and :func:`collections.namedtuple` do while torch is imported) and, when the program was
    started with ``python -m``, kills itself with SIGINT at exit however the interrupt was handled afterwards (exit
    status -2 instead of 130).  Running any source text to its end clears that memory.
    """
    exec("")  # noqa: S102 - empty source: its only effect is to clear the interpreter's flag


def closed_output_status(error: BaseException) -> int | None:
    """141 (128 + SIGPIPE, what a shell reports for ``yes | head``) when ``error`` is a broken pipe on standard
    output, whose reader (``head``, ``less``) has gone: nothing is said, and standard output is pointed at
    ``/dev/null`` so that the interpreter's last flush does not complain either.  ``None`` for any other error,
    including a broken pipe elsewhere."""
    if not isinstance(error, BrokenPipeError):
        return None
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real standard output, or no poll on this system
        return None
    if not gone:
        return None
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
    return 128 + signal.SIGPIPE


def _show(message, category, filename, lineno, file=None, line=None, *, previous=warnings.showwarning) -> None:
    if issubclass(category, _OURS):
        print(f"upfusion: warning: {message}", file=sys.stderr, flush=True)
    else:
        previous(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def command_policy() -> Iterator[None]:
    """Signals become exceptions in the main thread and the package's warnings one line each, while the block runs;
    the previous handlers are put back afterwards (see the module docstring)."""
    loggers = {name: logging.getLogger(name) for name in _READERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show
            yield from _signals_as_exceptions()
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def _signals_as_exceptions() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def handler(signum: int, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
        if len(received) >= 3:  # pragma: no cover - the user insists: stop now
            os._exit(128 + signum)

    numbers = [signal.SIGINT, signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
        numbers.append(hangup)
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def environment_sentence(error: BaseException) -> str:
    """One sentence for a failure of the environment rather than of the input: memory, libraries, the system."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, MemoryError) or any(
        clue in text for clue in ("failed to map segment", "cannot allocate memory", "Cannot allocate memory")
    ):
        return (
            "This process ran out of memory (a memory limit such as `ulimit -v` may be too low for PyTorch, which "
            "needs several GiB of address space); raise the limit, close other programs or use a smaller input."
        )
    if isinstance(error, ImportError):
        name = getattr(error, "name", None) or "a library"
        return f"{name} could not be loaded ({text}); reinstall napari-upfusion with its dependencies."
    if isinstance(error, OSError):
        return os_error_sentence(error)
    return text  # pragma: no cover - only the kinds above are passed here
