"""``big_array``: one 200 MB float64 array handed to 8 tasks that each sum an eighth of it.

Passing a large argument to many tasks is where pools differ most: pickling it per
task copies it through a pipe every time, while joblib memory-maps it once. Metrics:
wall seconds, and the peak memory of this process and all its descendants (sampled
every 20 ms) above this process's own memory before the run, as a sum of RSS (which
counts pages a forked worker shares with its parent once per process) and as a sum
of PSS (which splits shared pages fairly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from benchmarks.mappers import import_joblib
from benchmarks.measure import TreeMemorySampler, check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import sum_part

PartSummer = Callable[[Any, int], list[float]]
MB = 1_000_000


def serial_parts() -> PartSummer:
    """The yardstick: the same calls in this process, no copy at all."""
    return lambda arr, parts: [sum_part(arr, i, parts) for i in range(parts)]


def workpool_parts() -> PartSummer:
    """``workpool.starmap`` with the array repeated in every argument tuple."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()
    from workpool.backends.process import default_start_method

    default_start_method()  # settle how workers start before the memory sampler's thread

    def run(arr: Any, parts: int) -> list[float]:
        args = [(arr, i, parts) for i in range(parts)]
        return workpool.starmap(sum_part, args, backend="process", workers=WORKERS)

    return run


def mp_pool_parts() -> PartSummer:
    """``multiprocessing.Pool.starmap`` with the array repeated in every argument tuple."""
    import multiprocessing.pool

    def run(arr: Any, parts: int) -> list[float]:
        with multiprocessing.Pool(WORKERS) as pool:
            return pool.starmap(sum_part, [(arr, i, parts) for i in range(parts)])

    return run


def ppe_parts() -> PartSummer:
    """``ProcessPoolExecutor.map`` over the array repeated, the part numbers and ``parts``."""
    from concurrent.futures import ProcessPoolExecutor

    def run(arr: Any, parts: int) -> list[float]:
        with ProcessPoolExecutor(WORKERS) as executor:
            return list(executor.map(sum_part, [arr] * parts, range(parts), [parts] * parts))

    return run


def joblib_parts() -> PartSummer:
    """joblib ``Parallel``: by default it memory-maps arrays over 1 MB instead of pickling."""
    parallel, delayed, release = import_joblib()

    def run(arr: Any, parts: int) -> list[float]:
        results = list(
            parallel(n_jobs=WORKERS)(delayed(sum_part)(arr, i, parts) for i in range(parts))
        )
        release()
        return results

    return run


def run_parts(factory: Callable[[], PartSummer], params: Mapping[str, Any]) -> Sample:
    """Build the array, then time the framework under the process-tree memory sampler."""
    import numpy as np

    summer = factory()  # imports the library, outside the timer
    parts = int(params["parts"])
    arr = np.arange(int(params["megabytes"]) * MB // 8, dtype=np.float64)
    expected = serial_parts()(arr, parts)  # outside the timer; also touches every page
    with TreeMemorySampler(float(params["sample_interval_s"])) as sampler:
        seconds, results = timed(lambda: summer(arr, parts))
    check(len(results) == parts, f"{len(results)} results for {parts} parts")
    check(
        all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(results, expected, strict=True)),
        "part sums differ from a serial run",
    )
    return Sample(
        {
            "seconds": seconds,
            "peak_rss_mb": sampler.rss_delta / MB,
            "peak_pss_mb": sampler.pss_delta / MB,
        },
        {
            "array_mb": arr.nbytes / MB,
            "baseline_rss_mb": sampler.baseline_rss / MB,
            "memory_samples": sampler.samples,
            "max_processes": sampler.max_processes,
        },
    )


def _framework(key: str, label: str, factory: Callable[[], PartSummer], **kwargs: Any) -> Framework:
    return Framework(key, label, partial(run_parts, factory), **kwargs)


WORKLOAD = Workload(
    name="big_array",
    summary="a 200 MB float64 array passed to 8 tasks that each sum one eighth",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(
        Metric("peak_rss_mb", "peak Δ RSS-sum MB", "lower", "{:,.0f}", ratio=True),
        Metric("peak_pss_mb", "peak Δ PSS-sum MB", "lower", "{:,.0f}"),
    ),
    params={"megabytes": 200, "parts": 8, "sample_interval_s": 0.02},
    needs=("numpy", "psutil"),
    frameworks=(
        _framework("workpool", "workpool.starmap", workpool_parts, role="workpool"),
        _framework("mp", "multiprocessing.Pool.starmap", mp_pool_parts),
        _framework("ppe", "ProcessPoolExecutor.map", ppe_parts),
        _framework("joblib", "joblib Parallel", joblib_parts, needs=("joblib",)),
        _framework("serial", "serial calls (no copy)", serial_parts, role="reference"),
    ),
)
