"""Running a batch's pairs on a Dask cluster: a local one of worker processes, or an existing scheduler.

Only paths, settings and small outcome records travel through the scheduler; each
worker is warmed once (``warm(threads)`` loads the engine it keeps for every pair it
gets), so a model problem is raised here once, before any pair runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import InputError, UPFusionError

__all__ = ["DaskPool"]

T = TypeVar("T")


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
            self.cluster = LocalCluster(
                n_workers=local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=":0", scheduler_kwargs={"dashboard": False},  # no web server on a fixed port
                silence_logs=logging.ERROR,  # not "killing a slow-to-exit worker" at the end
            )  # fmt: skip
            self.client = Client(self.cluster)
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

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
