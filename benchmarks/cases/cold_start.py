"""``cold_start``: import, create a pool, get one trivial result, shut down, in a new process.

Each measurement runs in a fresh interpreter, so whatever a library starts once per
process (workpool's and multiprocessing's fork server, loky's executor) is paid here
as a user meets it. Metrics, in milliseconds: create + first result + shutdown (the
primary), create + first result alone, the library's import, and the whole measuring
process from launch to exit as the driver saw it (interpreter start and exit
included, the same harness overhead for everyone).

The modules imported first are those that hold each library's process pool, so that
the import column compares like with like: for workpool, whose ``import workpool``
loads nothing until a name is used and whose process engine loads when a pool of
processes first starts, ``workpool.pool`` and the engine (as ``multiprocessing.pool``
brings ``multiprocessing``'s connections, queues and threads). The ``whole_script``
workload times everything together, as a program pays it.

Start methods differ by default (workpool: fork server; the standard library on
Python < 3.14, pebble, mpire: fork; joblib: loky's own spawn), so two reference rows
swap them: workpool with fork, and ``multiprocessing.Pool`` from a fork server.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import pools
from benchmarks.measure import check
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import worker_pid


def run_cold(modules: tuple[str, ...], opener: pools.Opener, params: Mapping[str, Any]) -> Sample:
    """Time importing ``modules``, then one task through a pool opened and shut here."""
    start = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    imported = time.perf_counter()
    with opener() as call:
        where = call(worker_pid, None)
        answered = time.perf_counter()
    closed = time.perf_counter()
    check(where != os.getpid(), "the task ran in the calling process")
    return Sample(
        {
            "ms": (closed - imported) * 1000,
            "first_result_ms": (answered - imported) * 1000,
            "import_ms": (imported - start) * 1000,
        }
    )


# The pool's module and the process engine's (the zygote's launcher is among them).
_WORKPOOL = ("workpool.pool", "workpool.backends.process.engine")


def _framework(
    key: str, label: str, modules: tuple[str, ...], opener: pools.Opener, **kwargs: Any
) -> Framework:
    return Framework(key, label, partial(run_cold, modules, opener), **kwargs)


WORKLOAD = Workload(
    name="cold_start",
    summary="fresh process: create a pool, one trivial result, shut down",
    primary=Metric("ms", "ms", "lower", "{:,.1f}"),
    extras=(
        Metric("first_result_ms", "to 1st result ms", "lower", "{:,.1f}"),
        Metric("import_ms", "import ms", "lower", "{:,.1f}"),
        Metric("process_ms", "whole process ms", "lower", "{:,.0f}"),
    ),
    frameworks=(
        _framework("workpool", "workpool.Pool", _WORKPOOL, pools.open_workpool, role="workpool"),
        _framework("mp", "multiprocessing.Pool", ("multiprocessing.pool",), pools.open_mp_pool),
        _framework("ppe", "ProcessPoolExecutor", ("concurrent.futures.process",), pools.open_ppe),
        _framework(
            "pebble", "pebble ProcessPool", ("pebble",), pools.open_pebble, needs=("pebble",)
        ),
        _framework("mpire", "mpire WorkerPool", ("mpire",), pools.open_mpire, needs=("mpire",)),
        _framework("joblib", "joblib Parallel", ("joblib",), pools.open_joblib, needs=("joblib",)),
        # Reference rows, never counted as the best peer: they separate the cost of the
        # start method (fork server vs fork) from the cost of the library.
        _framework(
            "workpool_fork",
            "workpool.Pool(start_method='fork')",
            _WORKPOOL,
            partial(pools.open_workpool, "fork"),
            role="reference",
        ),
        _framework(
            "mp_forkserver",
            "multiprocessing.Pool (forkserver context)",
            ("multiprocessing.pool",),
            partial(pools.open_mp_pool, "forkserver"),
            role="reference",
        ),
        _framework(
            "mp_spawn",
            "multiprocessing.Pool (spawn context)",
            ("multiprocessing.pool",),
            partial(pools.open_mp_pool, "spawn"),
            role="reference",
        ),
    ),
)
