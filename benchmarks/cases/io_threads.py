"""``io_threads``: 400 sleeps of 10 ms on 32 threads, against the ideal of 400 x 10 ms / 32.

Sleeping releases the GIL, so 32 threads could overlap perfectly and finish in 0.125 s;
how far above that a library lands is its scheduling and chunking cost for I/O-bound
work. Pool start and shutdown are included. Metrics: wall seconds, and wall / ideal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import nap

ThreadMapper = Callable[[Callable[[Any], Any], Sequence[Any], int], list[Any]]


def workpool_threads() -> ThreadMapper:
    """``workpool.map(backend="thread")`` (adaptive chunksize)."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    return lambda fn, items, workers: workpool.map(fn, items, backend="thread", workers=workers)


def workpool_auto() -> ThreadMapper:
    """``workpool.map`` with ``backend="auto"`` (the default) and the same 32 workers."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    return lambda fn, items, workers: workpool.map(fn, items, workers=workers)


def workpool_auto_unsized() -> ThreadMapper:
    """``workpool.map`` as a newcomer writes it: ``backend="auto"``, workers left to it."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    return lambda fn, items, workers: workpool.map(fn, items)


def tpe_threads() -> ThreadMapper:
    """``ThreadPoolExecutor(workers).map`` (one item per task, as always for threads)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
        with ThreadPoolExecutor(workers) as executor:
            return list(executor.map(fn, items))

    return run


def run_threads(factory: Callable[[], ThreadMapper], params: Mapping[str, Any]) -> Sample:
    """Time ``tasks`` naps of ``sleep_s`` on ``workers`` threads."""
    mapper = factory()  # imports the library, outside the timer
    tasks, workers, sleep_s = int(params["tasks"]), int(params["workers"]), params["sleep_s"]
    ideal = tasks * sleep_s / workers
    work = partial(nap, seconds=sleep_s)
    seconds, results = timed(lambda: mapper(work, range(tasks), workers))
    check(results == list(range(tasks)), "results missing or out of order")
    return Sample({"seconds": seconds, "x_ideal": seconds / ideal}, {"ideal_s": ideal})


WORKLOAD = Workload(
    name="io_threads",
    summary="400 x sleep(10 ms) on 32 threads; ideal = 400 x 0.01 / 32 = 0.125 s",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(Metric("x_ideal", "÷ ideal (lower is better)", "lower", "{:.2f}x"),),
    params={"tasks": 400, "workers": 32, "sleep_s": 0.01},
    frameworks=(
        Framework(
            "workpool",
            "workpool.map(backend='thread')",
            partial(run_threads, workpool_threads),
            "workpool",
        ),
        Framework("tpe", "ThreadPoolExecutor.map", partial(run_threads, tpe_threads)),
        Framework(
            "workpool_auto",
            "workpool.map(workers=32), backend='auto'",
            partial(run_threads, workpool_auto),
            "reference",
        ),
        Framework(
            "workpool_auto_default",
            "workpool.map(), backend='auto' and its own workers",
            partial(run_threads, workpool_auto_unsized),
            "reference",
        ),
    ),
)
