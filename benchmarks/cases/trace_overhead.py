"""``trace_tiny`` and ``trace_1ms``: what ``trace=`` costs, against the same call without it.

Both run ``workpool.map`` on 2 processes, pool start, shutdown and writing the trace
included. ``trace_tiny`` maps ``x*x`` over 200,000 items, where a pool's own overhead
is all there is and tracing's cost shows most; ``trace_1ms`` maps 1,000 items that
each wait 1 ms, the kind of work a trace is for. The two frameworks alternate within
every repetition, so each "on" run has an "off" run beside it: ``overhead`` is each
pair's on/off wall-time ratio minus one, and its median is the number to read.
``cpu_overhead`` is the same for the CPU time of the calling process, where all the
recording and writing happens: on a machine busy with other work, wall times of a
0.1 s call swing by half, while the caller's CPU time still shows what tracing adds.
The trace file's size is reported too (it must stay under 20 MB for 200,000 items).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import nap, square


def run_traced(traced: bool, params: Mapping[str, Any]) -> Sample:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    n, wait = int(params["items"]), float(params["wait"])
    fn = partial(nap, seconds=wait) if wait else square
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "run.json")
        options: dict[str, Any] = {"backend": "process", "workers": WORKERS}
        if traced:
            options["trace"] = path
        cpu = time.process_time()
        seconds, results = timed(lambda: workpool.map(fn, range(n), **options))
        cpu = time.process_time() - cpu
        size = os.path.getsize(path) if traced else 0
    check(len(results) == n and results[-1] == (n - 1 if wait else (n - 1) ** 2), "results")
    metrics = {"seconds": seconds, "cpu_seconds": cpu}
    if traced:
        metrics["trace_mb"] = size / 1e6
    return Sample(metrics, {"items": n})


def add_overhead(samples: dict[str, list[dict[str, float]]], context: Mapping[str, Any]) -> None:
    """Give each traced run the ratio of its times to the untraced run of its repetition."""
    on, off = samples.get("on", []), samples.get("off", [])
    if len(on) != len(off):  # a failed run breaks the pairing: say nothing rather than guess
        return
    for traced, plain in zip(on, off):
        traced["overhead"] = traced["seconds"] / plain["seconds"] - 1
        traced["cpu_overhead"] = traced["cpu_seconds"] / plain["cpu_seconds"] - 1


def _workload(name: str, summary: str, items: int, wait: float) -> Workload:
    return Workload(
        name=name,
        summary=summary,
        primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
        extras=(
            Metric("overhead", "on/off - 1 (paired)", "lower", "{:+.1%}"),
            Metric("cpu_overhead", "caller CPU on/off - 1", "lower", "{:+.1%}"),
            Metric("trace_mb", "trace MB", "lower", "{:.2f}"),
        ),
        params={"items": items, "wait": wait},
        derive=add_overhead,
        frameworks=(
            Framework("on", "workpool.map, trace=FILE", partial(run_traced, True), "workpool"),
            Framework("off", "workpool.map, no trace", partial(run_traced, False)),
        ),
    )


TINY = _workload(
    "trace_tiny", "trace= on/off: map(x*x) over range(200,000) on 2 processes", 200_000, 0.0
)
ONE_MS = _workload(
    "trace_1ms", "trace= on/off: 1,000 items of 1 ms (sleep) on 2 processes", 1_000, 0.001
)
