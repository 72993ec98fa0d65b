"""Long-lived pools of each library, opened as context managers that yield a caller.

``roundtrip`` sends many single tasks through one open pool and ``cold_start`` opens
a pool for one task; both need the same thing from every library: "open a pool of
``WORKERS`` processes with default options, run ``fn(x)`` on it and wait for the
result, shut it down". Each opener here yields a ``call(fn, x)`` that does the middle
step with the library's own single-task API, and leaving the ``with`` block shuts the
pool down the way its documentation suggests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.connection import Connection
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
    "open_pipe_floor",
    "open_ppe",
    "open_workpool",
    "pinned",
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


@contextmanager
def open_pipe_floor() -> Iterator[Call]:
    """No pool: one process that answers ``(fn, x)`` over a ``multiprocessing.Pipe``.

    The least a call into another Python process can cost here: one pickled message
    each way, one process woken each way, and nothing else (no queue, no thread, no
    bookkeeping). A reference for the pools' round trips, not a competitor.
    """
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    answerer = multiprocessing.Process(target=_answer, args=(theirs,), daemon=True)
    answerer.start()
    theirs.close()

    def call(fn: Callable[[Any], Any], x: Any) -> Any:
        ours.send((fn, x))
        return ours.recv()

    try:
        yield call
    finally:
        ours.send(None)
        answerer.join()
        ours.close()


def _answer(connection: Connection) -> None:
    while (message := connection.recv()) is not None:
        fn, x = message
        connection.send(fn(x))


def pinned(opener: Opener) -> Opener:
    """``opener``, with this process and every process it starts kept on one CPU.

    All the threads and processes of a round trip then share one CPU, so waking one
    never needs another CPU woken: what is left is the work each of them does. Set
    before the pool starts, the affinity is inherited by its threads and workers.
    """

    @contextmanager
    def open_pinned() -> Iterator[Call]:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        with opener() as call:
            yield call

    return open_pinned
