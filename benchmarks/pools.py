"""Long-lived pools of each library, opened as context managers that yield a caller.

``roundtrip`` sends many single tasks through one open pool and ``cold_start`` opens
a pool for one task; both need the same thing from every library: "open a pool of
``WORKERS`` processes with default options, run ``fn(x)`` on it and wait for the
result, shut it down". Each opener here yields a ``call(fn, x)`` that does the middle
step with the library's own single-task API, and leaving the ``with`` block shuts the
pool down the way its documentation suggests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from benchmarks.mappers import import_joblib
from benchmarks.spec import WORKERS

__all__ = [
    "Call",
    "Opener",
    "open_joblib",
    "open_mp_pool",
    "open_mpire",
    "open_pebble",
    "open_ppe",
    "open_workpool",
]

Call = Callable[[Callable[[Any], Any], Any], Any]
Opener = Callable[[], AbstractContextManager[Call]]


@contextmanager
def open_workpool(start_method: str | None = None) -> Iterator[Call]:
    """``workpool.Pool(WORKERS, backend="process")``; ``submit(fn, x).result()``."""
    import workpool

    with workpool.Pool(WORKERS, backend="process", start_method=start_method) as pool:
        yield lambda fn, x: pool.submit(fn, x).result()


@contextmanager
def open_ppe() -> Iterator[Call]:
    """``ProcessPoolExecutor(WORKERS)``; ``submit(fn, x).result()``."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(WORKERS) as executor:
        yield lambda fn, x: executor.submit(fn, x).result()


@contextmanager
def open_mp_pool(start_method: str | None = None) -> Iterator[Call]:
    """``multiprocessing.Pool(WORKERS)``; ``apply(fn, (x,))``. Its ``with`` terminates.

    ``start_method`` picks a context other than the default one, for reference rows.
    """
    import multiprocessing

    context = multiprocessing.get_context(start_method)
    with context.Pool(WORKERS) as pool:
        yield lambda fn, x: pool.apply(fn, (x,))


@contextmanager
def open_pebble() -> Iterator[Call]:
    """pebble ``ProcessPool(max_workers=WORKERS)``; ``schedule(fn, args=(x,)).result()``."""
    from pebble import ProcessPool

    with ProcessPool(max_workers=WORKERS) as pool:
        yield lambda fn, x: pool.schedule(fn, args=(x,)).result()


@contextmanager
def open_mpire() -> Iterator[Call]:
    """mpire ``WorkerPool(n_jobs=WORKERS)``; ``apply(fn, args=(x,))``."""
    from mpire.pool import WorkerPool

    with WorkerPool(n_jobs=WORKERS) as pool:
        yield lambda fn, x: pool.apply(fn, args=(x,))


@contextmanager
def open_joblib() -> Iterator[Call]:
    """joblib has no single-task call: ``Parallel(n_jobs=WORKERS)`` over one ``delayed``.

    joblib keeps its loky workers between calls by itself; leaving the block shuts
    them down so the teardown is paid where the other libraries pay theirs.
    """
    parallel, delayed, release = import_joblib()
    try:
        yield lambda fn, x: parallel(n_jobs=WORKERS)([delayed(fn)(x)])[0]
    finally:
        release()
