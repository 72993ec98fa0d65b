"""The cluster every Dask workload runs on, and the peers' ways of using it.

Each measurement process starts one ``LocalCluster`` of ``WORKERS`` single-threaded
worker processes on 127.0.0.1 (nanny-started, as on a real cluster), warms it (every
worker has run a task and imported workpool's remote side), and only then starts the
timer: the numbers compare what each library does with a cluster that is up, not how
fast Dask starts one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from benchmarks.spec import WORKERS

__all__ = [
    "client_map",
    "joblib_dask_map",
    "warm_cluster",
    "workpool_dask_map",
    "workpool_dask_map_again",
]


def _warm_up() -> int:
    import workpool.backends.dask.remote  # noqa: F401 - what workpool's tasks import first

    return 0


@contextlib.contextmanager
def warm_cluster() -> Iterator[Any]:
    """A client of a fresh two-worker LocalCluster whose workers have run a task."""
    from distributed import Client, LocalCluster

    from workpool.backends.dask.cluster import loopback_cluster_options

    cluster = LocalCluster(
        n_workers=WORKERS, silence_logs=logging.ERROR, **loopback_cluster_options()
    )
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(WORKERS)
        client.run(_warm_up)
        yield client
    finally:
        client.close()
        cluster.close()


Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def workpool_dask_map(client: Any) -> Mapper:
    import workpool.backends.dask  # else the first call imports it, inside the timer

    def mapper(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return workpool.map(fn, items, backend="dask", address=client)

    return mapper


def workpool_dask_map_again(client: Any) -> Mapper:
    """workpool on a cluster that has run a workpool call before (its local pools are up).

    Each Dask worker keeps the local process pool a call started for the next call
    (for a minute): this is what every call but a program's first one sees.
    """
    mapper = workpool_dask_map(client)
    mapper(abs, range(4 * WORKERS))
    return mapper


def client_map(client: Any) -> Mapper:
    """Dask's own way: a task per item (``pure=False``: equal items are not merged)."""

    def mapper(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        futures = client.map(fn, items, pure=False)
        return list(client.gather(futures))

    return mapper


def joblib_dask_map(client: Any) -> Mapper:
    """joblib's Dask backend, with its defaults (it batches items itself)."""
    import joblib

    def mapper(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        # joblib finds the cluster through Dask's current client.
        with client.as_current(), joblib.parallel_config(backend="dask"):
            return list(joblib.Parallel()(joblib.delayed(fn)(x) for x in items))

    return mapper
