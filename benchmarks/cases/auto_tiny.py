"""``auto_tiny``: ``backend="auto"`` on work too small to ship anywhere.

``workpool.map(square, range(200_000))`` with the default ``backend="auto"`` must see
that shipping an item costs more than squaring it and stay in this process. The
yardstick is the plain loop; the fixed process backend shows what a wrong choice
would cost. Metric: items/s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import square

Mapper = Callable[[int], list[int]]


def serial_loop() -> Mapper:
    return lambda n: [square(x) for x in range(n)]


def workpool_auto() -> Mapper:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    return lambda n: workpool.map(square, range(n))


def workpool_process() -> Mapper:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    return lambda n: workpool.map(square, range(n), backend="process")


def run_tiny(factory: Callable[[], Mapper], params: Mapping[str, Any]) -> Sample:
    mapper = factory()
    n = int(params["items"])
    seconds, results = timed(lambda: mapper(n))
    check(len(results) == n and results[-1] == (n - 1) ** 2, "wrong results")
    return Sample({"items_per_s": n / seconds, "seconds": seconds})


WORKLOAD = Workload(
    name="auto_tiny",
    summary="workpool.map(x*x) over range(200,000) with backend='auto', first call in a process",
    primary=Metric("items_per_s", "items/s", "higher", "{:,.0f}"),
    extras=(Metric("seconds", "wall s", "lower", "{:.4f}"),),
    params={"items": 200_000},
    frameworks=(
        Framework(
            "workpool",
            "workpool.map (backend='auto')",
            partial(run_tiny, workpool_auto),
            role="workpool",
        ),
        Framework(
            "serial", "serial list comprehension", partial(run_tiny, serial_loop), role="reference"
        ),
        Framework(
            "workpool_process",
            "workpool.map (backend='process')",
            partial(run_tiny, workpool_process),
            role="reference",
        ),
    ),
)
