"""``tiny_map``: 200,000 trivial items through a one-shot pool, start and shutdown included.

The work per item (``x * x``) is nothing, so this measures a library's per-item
overhead and how well its default chunking hides it. Metric: items per second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import mappers
from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import square


def run_map(factory: mappers.MapperFactory, params: Mapping[str, Any]) -> Sample:
    """Time ``mapper(square, range(n))`` and check every result arrived, in order."""
    n = int(params["items"])
    mapper = factory()  # imports the library, outside the timer
    seconds, results = timed(lambda: mapper(square, range(n)))
    check(len(results) == n, f"{len(results)} results for {n} items")
    check(sum(results) == (n - 1) * n * (2 * n - 1) // 6, "sum of squares")
    check(n == 0 or results[-1] == (n - 1) ** 2, "results out of order")
    return Sample({"items_per_s": n / seconds, "seconds": seconds}, {"items": n})


def _mp_fork_row() -> tuple[Framework, ...]:
    """multiprocessing on fork, its fastest start, where the default is another (3.14+)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return ()
    if multiprocessing.get_start_method(allow_none=False) == "fork":
        return ()  # the "mp" row is this one
    return (
        Framework(
            "mp_fork",
            "multiprocessing.Pool.map (fork context)",
            partial(run_map, partial(mappers.mp_pool_map, start_method="fork")),
        ),
    )


WORKLOAD = Workload(
    name="tiny_map",
    summary="map(x*x) over range(200,000), pool start and shutdown included",
    primary=Metric("items_per_s", "items/s", "higher", "{:,.0f}"),
    extras=(Metric("seconds", "wall s", "lower", "{:.3f}"),),
    params={"items": 200_000},
    frameworks=(
        Framework("workpool", "workpool.map", partial(run_map, mappers.workpool_map), "workpool"),
        Framework("mp", "multiprocessing.Pool.map", partial(run_map, mappers.mp_pool_map)),
        *_mp_fork_row(),
        Framework(
            "ppe",
            "ProcessPoolExecutor.map (chunksize=1)",
            partial(run_map, mappers.ppe_map),
            quick={"items": 20_000},
        ),
        Framework(
            "ppe_c1000",
            "ProcessPoolExecutor.map (chunksize=1000)",
            partial(run_map, partial(mappers.ppe_map, 1000)),
        ),
        Framework(
            "pebble_c1000",
            "pebble ProcessPool.map (chunksize=1000)",
            partial(run_map, partial(mappers.pebble_map, 1000)),
            needs=("pebble",),
        ),
        Framework(
            "joblib",
            "joblib Parallel",
            partial(run_map, mappers.joblib_map),
            needs=("joblib",),
        ),
        Framework(
            "mpire",
            "mpire WorkerPool.map",
            partial(run_map, mappers.mpire_map),
            needs=("mpire",),
        ),
        Framework(
            "serial",
            "serial list comprehension",
            partial(run_map, mappers.serial_map),
            "reference",
        ),
    ),
)
