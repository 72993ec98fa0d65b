"""``roundtrip``: latency of one trivial task through an already-running pool.

The pool is started and warmed up first (so worker start-up is excluded), then each
of ``calls`` single tasks is timed from submission to result in hand. This is the
floor on what any one task costs. Metrics: median (p50) and p90 in microseconds.

Reference rows separate what a library does from what the machine charges for waking
a process or thread on another CPU: the least any call into another Python process
costs (one process answering over a Pipe, no pool), and workpool, multiprocessing and
that floor again with everything kept on one CPU (Linux only), where no wake-up has to
reach another CPU. A trip wakes the worker, then whoever reads its answer, then (in a
pool with a result thread) the caller: on a virtual machine each wake-up of an idle CPU
can cost tens of microseconds, which the one-CPU rows leave out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import pools
from benchmarks.measure import check, percentile
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import echo, worker_pid


def run_roundtrip(opener: pools.Opener, params: Mapping[str, Any]) -> Sample:
    """Warm the pool with ``warmup`` calls, then time ``calls`` calls one by one."""
    warmup, calls = int(params["warmup"]), int(params["calls"])
    latencies_ns: list[int] = []
    with opener() as call:
        check(call(worker_pid, None) != os.getpid(), "the task ran in the calling process")
        for x in range(warmup):
            call(echo, x)
        for x in range(calls):
            start = time.perf_counter_ns()
            result = call(echo, x)
            latencies_ns.append(time.perf_counter_ns() - start)
            if result != x:
                raise RuntimeError(f"wrong result: echo({x}) returned {result!r}")
    micros = [ns / 1000 for ns in latencies_ns]
    return Sample(
        {"p50_us": percentile(micros, 0.5), "p90_us": percentile(micros, 0.9)},
        {"calls": calls, "warmup": warmup, "mean_us": sum(micros) / len(micros)},
    )


def _framework(key: str, label: str, opener: pools.Opener, **kwargs: Any) -> Framework:
    return Framework(key, label, partial(run_roundtrip, opener), **kwargs)


def _one_cpu_rows() -> tuple[Framework, ...]:
    """workpool, multiprocessing and the floor with every thread and process on one CPU."""
    if not hasattr(os, "sched_setaffinity"):  # Linux only
        return ()
    rows = (
        ("workpool_1cpu", "workpool, all on one CPU", pools.open_workpool),
        ("mp_1cpu", "multiprocessing.Pool, all on one CPU", pools.open_mp_pool),
        ("floor_1cpu", "no pool, all on one CPU", pools.open_pipe_floor),
    )
    return tuple(
        _framework(key, label, pools.pinned(opener), role="reference")
        for key, label, opener in rows
    )


WORKLOAD = Workload(
    name="roundtrip",
    summary="one trivial task on a warm pool: submit, wait for the result",
    primary=Metric("p50_us", "p50 µs", "lower", "{:,.0f}"),
    extras=(Metric("p90_us", "p90 µs", "lower", "{:,.0f}", ratio=True),),
    params={"calls": 2000, "warmup": 200},
    frameworks=(
        _framework(
            "workpool", "workpool.Pool.submit().result()", pools.open_workpool, role="workpool"
        ),
        _framework("ppe", "ProcessPoolExecutor.submit().result()", pools.open_ppe),
        _framework("mp", "multiprocessing.Pool.apply()", pools.open_mp_pool),
        _framework(
            "pebble", "pebble ProcessPool.schedule().result()", pools.open_pebble, needs=("pebble",)
        ),
        _framework("mpire", "mpire WorkerPool.apply()", pools.open_mpire, needs=("mpire",)),
        _framework(
            "floor",
            "no pool: one process answering over a Pipe",
            pools.open_pipe_floor,
            role="reference",
        ),
        *_one_cpu_rows(),
    ),
)
