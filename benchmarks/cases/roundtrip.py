"""``roundtrip``: latency of one trivial task through an already-running pool.

The pool is started and warmed up first (so worker start-up is excluded), then each
of ``calls`` single tasks is timed from submission to result in hand. This is the
floor on what any one task costs. Metrics: median (p50) and p90 in microseconds.
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
    ),
)
