"""``held_array``: 8 tasks each sum an eighth of a 200 MB array the program holds.

A script loads its data at the top and its task reads it as a global: the commonest way
a large array reaches tasks, never passed as an argument. The standard pools rely on
``fork``: workers forked after the array exists inherit it, without a copy. workpool's
task functions travel by value with the globals they read (here a closure over the
array, which travels the same way), and a large array among them reaches each worker
in shared memory, copy-on-write; or, if the program put it there itself with
``workpool.share``, without any copy. Where workers are spawned (macOS's default), the
standard pools inherit nothing: the array goes to each worker through the pool's
initializer, pickled. Metrics: wall seconds, pool start included, and
the peak memory of the process tree above this process's own (RSS and PSS sums).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.cases.big_array import run_parts, serial_parts
from benchmarks.spec import WORKERS, Framework, Metric, Workload
from benchmarks.workloads import sum_part

HeldSummer = Callable[[Any, int], list[float]]


def _workpool() -> Any:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()
    from workpool.backends.process import default_start_method

    default_start_method()  # settle how workers start before the memory sampler's thread
    return workpool


def workpool_held() -> HeldSummer:
    """``workpool.map`` of a task that reads the array from its closure (as a global)."""
    workpool = _workpool()

    def run(arr: Any, parts: int) -> list[float]:
        def task(part: int) -> float:
            return sum_part(arr, part, parts)

        return workpool.map(task, range(parts), backend="process", workers=WORKERS)

    return run


def workpool_shared() -> HeldSummer:
    """The same, once the program put the array in shared memory (``share``, timed)."""
    workpool = _workpool()

    def run(arr: Any, parts: int) -> list[float]:
        held = workpool.share(arr)

        def task(part: int) -> float:
            return sum_part(held, part, parts)

        return workpool.map(task, range(parts), backend="process", workers=WORKERS)

    return run


def mp_fork_held() -> HeldSummer:
    """``multiprocessing.Pool`` on ``fork``: the workers inherit the parent's global."""
    import multiprocessing

    from benchmarks import workloads

    context = multiprocessing.get_context("fork")

    def run(arr: Any, parts: int) -> list[float]:
        workloads.HELD[:] = [arr]
        try:
            with context.Pool(WORKERS) as pool:
                return pool.starmap(workloads.sum_held_part, [(i, parts) for i in range(parts)])
        finally:
            workloads.HELD.clear()

    return run


def ppe_fork_held() -> HeldSummer:
    """``ProcessPoolExecutor`` on ``fork``: the workers inherit the parent's global."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks import workloads

    context = multiprocessing.get_context("fork")

    def run(arr: Any, parts: int) -> list[float]:
        workloads.HELD[:] = [arr]
        try:
            with ProcessPoolExecutor(WORKERS, mp_context=context) as executor:
                return list(executor.map(workloads.sum_held_part, range(parts), [parts] * parts))
        finally:
            workloads.HELD.clear()

    return run


def mp_spawn_held() -> HeldSummer:
    """``multiprocessing.Pool`` on ``spawn`` (macOS's default), the array as ``initargs``.

    Spawned workers inherit nothing: the portable way to hand them the array is the
    pool's initializer, which pickles it to each worker.
    """
    import multiprocessing

    from benchmarks import workloads

    context = multiprocessing.get_context("spawn")

    def run(arr: Any, parts: int) -> list[float]:
        with context.Pool(WORKERS, initializer=workloads.hold, initargs=(arr,)) as pool:
            return pool.starmap(workloads.sum_held_part, [(i, parts) for i in range(parts)])

    return run


def _framework(key: str, label: str, factory: Callable[[], HeldSummer], **kwargs: Any) -> Framework:
    # Built, timed and checked as big_array's: the array is made before the timer.
    return Framework(key, label, partial(run_parts, factory), **kwargs)


WORKLOAD = Workload(
    name="held_array",
    summary="8 tasks sum an eighth each of a 200 MB array the program holds (a global)",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(
        Metric("peak_rss_mb", "peak Δ RSS-sum MB", "lower", "{:,.0f}"),
        Metric("peak_pss_mb", "peak Δ PSS-sum MB", "lower", "{:,.0f}"),
    ),
    params={"megabytes": 200, "parts": 8, "sample_interval_s": 0.02},
    needs=("numpy", "psutil"),
    frameworks=(
        _framework("workpool", "workpool.map, the task reads it", workpool_held, role="workpool"),
        _framework(
            "workpool_share",
            "workpool.map, after share()",
            workpool_shared,
            role="workpool",
        ),
        _framework("mp_fork", "multiprocessing.Pool (fork: inherited)", mp_fork_held),
        _framework("ppe_fork", "ProcessPoolExecutor (fork: inherited)", ppe_fork_held),
        _framework("mp_spawn", "multiprocessing.Pool (spawn: initargs)", mp_spawn_held),
        _framework("serial", "serial calls", serial_parts, role="reference"),
    ),
)
