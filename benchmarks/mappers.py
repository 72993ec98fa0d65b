"""How each library runs a one-shot parallel map: start a pool, map, shut it down.

Each function here is a *factory*: calling it imports the library (so a measurement
process loads only the library it measures) and returns a ``mapper(fn, items)``.
The split keeps import time out of every timer: a workload calls the factory first
and times only the mapper. (``cold_start`` is where import time is measured, apart.)

Each mapper uses its library's default options except the ones named in the
factory's signature, uses the library's idiomatic form (a ``with`` block where it has
one), and returns the results as a list once the pool is gone, so a timer around it
covers pool start, the work, and teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.spec import WORKERS

__all__ = [
    "Mapper",
    "MapperFactory",
    "import_joblib",
    "import_workpool",
    "joblib_map",
    "mp_pool_map",
    "mpire_map",
    "pebble_map",
    "ppe_map",
    "serial_map",
    "workpool_auto_map",
    "workpool_map",
]

MapFn = Callable[[Any], Any]
Mapper = Callable[[MapFn, Sequence[Any]], list[Any]]
MapperFactory = Callable[[], Mapper]


def serial_map() -> Mapper:
    """The yardstick: a plain list comprehension in this process."""
    return lambda fn, items: [fn(x) for x in items]


def import_workpool() -> Any:
    """``workpool``, with every public name and its process engine loaded.

    ``import workpool`` loads a name's module only when the name is first used, and the
    process engine when a pool of processes first starts, so the first call would
    otherwise import part of the library inside its timer, while the peers' pool
    modules (``multiprocessing.pool``, ``concurrent.futures.process``, ...) are all
    imported before theirs. The ``cold_start`` workload times the imports on their own.
    """
    import importlib

    import workpool

    for name in workpool.__all__:
        getattr(workpool, name)
    importlib.import_module("workpool.backends.process.engine")
    return workpool


def workpool_map() -> Mapper:
    """``workpool.map`` on processes (default start method and adaptive chunksize)."""
    workpool = import_workpool()

    return lambda fn, items: workpool.map(fn, items, backend="process", workers=WORKERS)


def workpool_auto_map() -> Mapper:
    """``workpool.map`` with ``backend="auto"`` (the default): it measures, then picks."""
    workpool = import_workpool()

    return lambda fn, items: workpool.map(fn, items, workers=WORKERS)


def mp_pool_map(chunksize: int | None = None, start_method: str | None = None) -> Mapper:
    """``multiprocessing.Pool.map``; its default chunksize is about len/(4*workers).

    ``start_method``: a context other than the default one (fork, where 3.14 made the
    fork server the default on Linux).
    """
    import multiprocessing.pool

    context = multiprocessing.get_context(start_method)

    def run(fn: MapFn, items: Sequence[Any]) -> list[Any]:
        with context.Pool(WORKERS) as pool:
            return pool.map(fn, items, chunksize)

    return run


def ppe_map(chunksize: int = 1) -> Mapper:
    """``ProcessPoolExecutor.map``; its default chunksize is 1."""
    from concurrent.futures import ProcessPoolExecutor

    def run(fn: MapFn, items: Sequence[Any]) -> list[Any]:
        with ProcessPoolExecutor(WORKERS) as executor:
            return list(executor.map(fn, items, chunksize=chunksize))

    return run


def pebble_map(chunksize: int = 1) -> Mapper:
    """pebble ``ProcessPool.map``; its default chunksize is 1."""
    from pebble import ProcessPool

    def run(fn: MapFn, items: Sequence[Any]) -> list[Any]:
        with ProcessPool(max_workers=WORKERS) as pool:
            return list(pool.map(fn, items, chunksize=chunksize).result())

    return run


def mpire_map() -> Mapper:
    """mpire ``WorkerPool.map`` (its default chunk size is len/(4*workers))."""
    from mpire.pool import WorkerPool

    def run(fn: MapFn, items: Sequence[Any]) -> list[Any]:
        with WorkerPool(n_jobs=WORKERS) as pool:
            return list(pool.map(fn, items))

    return run


def import_joblib() -> tuple[Any, Any, Callable[[], None]]:
    """joblib's ``Parallel`` and ``delayed``, and a function that shuts its workers down.

    joblib keeps its loky workers alive after a call, for reuse, and would pay their
    teardown at interpreter exit, outside any timer; the harness calls the third item
    at the end of each timed call so joblib pays for teardown like everyone else.
    """
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    def release() -> None:
        get_reusable_executor(reuse=True).shutdown(wait=True)

    return Parallel, delayed, release


def joblib_map() -> Mapper:
    """joblib ``Parallel(n_jobs)`` over ``delayed`` calls (loky backend, auto batching)."""
    parallel, delayed, release = import_joblib()

    def run(fn: MapFn, items: Sequence[Any]) -> list[Any]:
        results = list(parallel(n_jobs=WORKERS)(delayed(fn)(x) for x in items))
        release()
        return results

    return run
