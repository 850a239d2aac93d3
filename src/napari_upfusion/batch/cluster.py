"""Running a batch's pairs on a Dask cluster: a local one of worker processes, or an existing scheduler.

Only paths, settings and small outcome records travel through the scheduler; each
worker is warmed once (``warm(threads)`` loads the engine it keeps for every pair it
gets), so a model problem is raised here once, before any pair runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import InputError, UPFusionError

__all__ = ["DaskPool"]

T = TypeVar("T")
_QUIETEN_TIMEOUT_S = 5.0


class _TerminalSignalsToTheBatch(WorkerPlugin):
    """A Dask worker plugin: a worker process ignores Ctrl-C and hang-ups.

    A Ctrl-C at the terminal, or a hang-up, goes to every process of the terminal's group: each local worker
    printed its own ``KeyboardInterrupt`` traceback, and on a hang-up died with its output half-written.  The
    batch process alone takes them now: it closes the cluster and removes what the workers left.  (Plugins set up
    in the worker's event loop, which runs in the worker process's main thread, where signals are handled.)
    """

    name = "napari-upfusion-terminal-signals"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
                if number is not None:
                    signal.signal(number, signal.SIG_IGN)


def _quiet_while_closing() -> None:
    """Runs on each local worker as the batch closes its cluster: the scheduler may close before a worker's next
    heartbeat reaches it, and that worker then logged "Failed to communicate with scheduler during heartbeat" with
    a traceback, under the batch's own last sentence.  The workers are going away, so their logs go quiet."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _start_resource_tracker_deaf_to_hangups() -> None:
    """Start multiprocessing's resource tracker (which the local cluster's worker processes use) from this thread
    with SIGHUP blocked, so that the tracker keeps it blocked: it ignores Ctrl-C and SIGTERM by itself, but a
    hang-up killed it, and its replacement printed a ``KeyError`` traceback for every shared-memory name."""
    from multiprocessing import resource_tracker

    if not hasattr(signal, "SIGHUP") or not hasattr(signal, "pthread_sigmask"):
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class DaskPool:
    """A ``distributed`` client on ``scheduler`` (an address) or on a local cluster of ``local_workers`` processes.

    ``warm(threads)`` runs once on each worker before any work (``threads``: torch threads per
    worker on a local cluster, else ``None``); ``where`` says where the work runs.
    """

    def __init__(self, scheduler: str | None, local_workers: int | None, warm: Callable[[int | None], str]) -> None:
        from distributed import Client, LocalCluster

        self.client, self.cluster = None, None
        threads = None
        if scheduler is not None:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise UPFusionError(
                    f"Cannot reach the Dask scheduler at {scheduler} ({type(error).__name__}); check the address "
                    "and that the scheduler is running."
                ) from None
            self.where = f"dask scheduler {scheduler}"
        else:
            if not local_workers or local_workers < 1:
                raise InputError(f"--local-workers must be at least 1, got {local_workers}.")
            _start_resource_tracker_deaf_to_hangups()
            self.cluster = LocalCluster(
                n_workers=local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=":0", scheduler_kwargs={"dashboard": False},  # no web server on a fixed port
                silence_logs=logging.ERROR,  # not "killing a slow-to-exit worker" at the end
            )  # fmt: skip
            self.client = Client(self.cluster)
            self.client.register_plugin(_TerminalSignalsToTheBatch())
            threads = max(1, (os.cpu_count() or 1) // local_workers)
            self.where = f"local cluster of {local_workers} worker processes"
        try:
            self.client.wait_for_workers(1, timeout=120)
            workers = list(self.client.scheduler_info()["workers"])
            warmed = [
                self.client.submit(warm, threads, workers=[w], allow_other_workers=False, pure=False) for w in workers
            ]
            self.client.gather(warmed)  # a model problem raises here, once
        except BaseException:
            self.close()
            raise

    def map(self, function: Callable[..., Any], items: Sequence[T], **kwargs: Any) -> Iterator[tuple[T, Any]]:
        """``(item, function(item, **kwargs))`` as each finishes on a worker, or ``(item, the exception)`` when the
        task itself failed (a worker died, for instance)."""
        from distributed import as_completed

        futures = self.client.map(function, items, **kwargs, pure=False)
        which = {future.key: item for future, item in zip(futures, items)}
        for future in as_completed(futures):
            try:
                yield which[future.key], future.result()
            except Exception as error:  # noqa: BLE001 - reported as that item's outcome
                yield which[future.key], error
            finally:
                future.release()

    def _quieten_workers(self) -> None:
        with contextlib.suppress(Exception):
            self.client.run(_quiet_while_closing, on_error="ignore")

    def close(self) -> None:
        """Close the client, and the local cluster if this pool started one (its workers are quietened first)."""
        if self.client is not None and self.cluster is not None:
            # in a thread, waited for 5 s at most: a worker stuck in a call that holds the GIL must not hold up
            # the close (a Ctrl-C has to end the batch whatever the workers are doing)
            quieten = threading.Thread(target=self._quieten_workers, daemon=True)
            quieten.start()
            quieten.join(_QUIETEN_TIMEOUT_S)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
