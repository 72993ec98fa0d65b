"""``skewed_tasks``: 16 pure-Python tasks of uneven length on 2 workers, pool start included.

Real work is rarely uniform: a batch of files holds a few large ones. Here two tasks
(the first and the third) take ``long_factor`` times as long as the other fourteen,
which take ~20 ms each (the same calibrated ``burn`` as ``cpu_tasks``). The best a pool
of two can do is give each worker one long task and half of the short ones: half the
serial time. A pool that hands a worker its next task while it still runs the current
one can leave a task queued behind a long one while the other worker runs out of work.
Metrics: wall seconds, and parallel efficiency = serial seconds / (workers x wall
seconds), with serial taken from the serial framework's median in the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import mappers
from benchmarks.cases.cpu_tasks import add_efficiency
from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import burn

LONG_POSITIONS = (0, 2)


def task_sizes(params: Mapping[str, Any]) -> list[int]:
    """Each task's loop count: ``burn_n``, and ``long_factor`` times that where long."""
    n, tasks, factor = int(params["burn_n"]), int(params["tasks"]), int(params["long_factor"])
    return [n * factor if i in LONG_POSITIONS else n for i in range(tasks)]


def run_tasks(factory: mappers.MapperFactory, params: Mapping[str, Any]) -> Sample:
    """Time ``mapper(burn, sizes)``; check every task computed what a serial run does."""
    sizes = task_sizes(params)
    mapper = factory()  # imports the library, outside the timer
    expected = [burn(n) for n in sorted(set(sizes))]  # outside the timer; warms up too
    by_size = dict(zip(sorted(set(sizes)), expected))
    seconds, results = timed(lambda: mapper(burn, sizes))
    check(results == [by_size[n] for n in sizes], "burn results differ from a serial run")
    return Sample({"seconds": seconds}, {"tasks": len(sizes), "burn_n": int(params["burn_n"])})


def calibrate(params: Mapping[str, Any]) -> dict[str, Any]:
    """Find ``burn_n`` for a short task of ``task_seconds``; ``burn_task_s`` is what the
    whole list of tasks takes serially, per task (for efficiency without a serial row)."""
    from benchmarks.calibrate import calibrate_burn

    n, seconds = calibrate_burn(float(params["task_seconds"]))
    tasks, factor = int(params["tasks"]), int(params["long_factor"])
    per_task = seconds * (tasks - len(LONG_POSITIONS) + factor * len(LONG_POSITIONS)) / tasks
    return {"burn_n": n, "burn_task_s": per_task}


def _framework(key: str, label: str, factory: mappers.MapperFactory, **kwargs: Any) -> Framework:
    return Framework(key, label, partial(run_tasks, factory), **kwargs)


WORKLOAD = Workload(
    name="skewed_tasks",
    summary="16 pure-Python tasks, two 15x longer than the rest (~20 ms), pool start included",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(Metric("efficiency", "efficiency", "higher", "{:.0%}"),),
    params={"tasks": 16, "task_seconds": 0.020, "long_factor": 15},
    calibrate=calibrate,
    derive=add_efficiency,
    frameworks=(
        _framework("workpool", "workpool.map", mappers.workpool_map, role="workpool"),
        _framework("mp", "multiprocessing.Pool.map", mappers.mp_pool_map),
        _framework("ppe", "ProcessPoolExecutor.map", mappers.ppe_map),
        _framework("mpire", "mpire WorkerPool.map", mappers.mpire_map, needs=("mpire",)),
        _framework("joblib", "joblib Parallel", mappers.joblib_map, needs=("joblib",)),
        _framework("serial", "serial list comprehension", mappers.serial_map, role="reference"),
    ),
)
