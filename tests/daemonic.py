"""Programs the launcher tests run inside a daemonic ``multiprocessing`` process.

A Dask worker started by a nanny is such a process, and it already runs threads: the
two things that stop ``multiprocessing`` and the zygote from starting workers there.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.queues import Queue
from typing import Any

import workpool
from faults import crash_on, sleep_then_pid


def _run_a_thread() -> threading.Event:
    """Be multi-threaded, as a Dask worker is (so the zygote is refused)."""
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="busy-like-a-dask-worker", daemon=True).start()
    return stop


def _worker_pids(pool: workpool.Pool) -> list[int]:
    """The pids of the pool's two workers, once each has run a task (at most 30 s).

    Eight short tasks need not reach both: a worker still starting (exec'd, on a
    loaded machine) may find the other one has run them all.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        pids |= set(pool.map(sleep_then_pid, [0.05] * 8, chunksize=1))
    return sorted(pids)


def map_with_a_crash(report: Queue[Any]) -> None:
    """Run a pool here; report each result (errors as text) and the workers' pids."""
    _run_a_thread()
    with workpool.Pool(2, backend="process") as pool:
        results = list(pool.imap(crash_on(3), range(8), return_exceptions=True))
        pids = _worker_pids(pool)
    report.put(([r if isinstance(r, int) else repr(r) for r in results], pids))


def hold_workers(report: Queue[Any]) -> None:
    """Start a pool, report its workers' pids, and wait to be killed."""
    _run_a_thread()
    pool = workpool.Pool(2, backend="process")
    report.put(_worker_pids(pool))
    time.sleep(60)
    os._exit(0)  # not reached: the test kills this process first
