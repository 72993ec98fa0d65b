"""``cpu_tasks``: 32 pure-Python tasks of ~30 ms each on 2 workers, pool start included.

Here the work dominates, so a good pool should approach twice the serial speed.
``burn``'s loop count is calibrated once per run (the driver passes it as
``burn_n``) so that one task takes ~30 ms serially on this machine. Metrics: wall
seconds, and parallel efficiency = serial seconds / (workers x wall seconds), with
serial taken from the serial framework's median in the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import mappers
from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import burn


def run_tasks(factory: mappers.MapperFactory, params: Mapping[str, Any]) -> Sample:
    """Time ``mapper(burn, [burn_n] * tasks)``; check every task computed the same sum."""
    n, tasks = int(params["burn_n"]), int(params["tasks"])
    mapper = factory()  # imports the library, outside the timer
    expected = burn(n)  # outside the timer; also warms this process up
    seconds, results = timed(lambda: mapper(burn, [n] * tasks))
    check(results == [expected] * tasks, "burn results differ from a serial run")
    return Sample({"seconds": seconds}, {"tasks": tasks, "burn_n": n})


def add_efficiency(samples: dict[str, list[dict[str, float]]], context: Mapping[str, Any]) -> None:
    """Give every sample an ``efficiency``: serial / (WORKERS x its wall time).

    Serial is the serial framework's median in this run; without it (filtered out or
    failed), the calibrated task time times the number of tasks stands in.
    """
    serial_runs = [m["seconds"] for m in samples.get("serial", []) if "seconds" in m]
    if serial_runs:
        serial = statistics.median(serial_runs)
    else:
        serial = float(context["burn_task_s"]) * float(context["tasks"])
    for runs in samples.values():
        for metrics in runs:
            if metrics.get("seconds"):
                metrics["efficiency"] = serial / (WORKERS * metrics["seconds"])


def calibrate(params: Mapping[str, Any]) -> dict[str, Any]:
    """Find ``burn_n``, the loop count for which one task takes ``task_seconds`` serially."""
    from benchmarks.calibrate import calibrate_burn

    n, seconds = calibrate_burn(float(params["task_seconds"]))
    return {"burn_n": n, "burn_task_s": seconds}


def _framework(key: str, label: str, factory: mappers.MapperFactory, **kwargs: Any) -> Framework:
    return Framework(key, label, partial(run_tasks, factory), **kwargs)


WORKLOAD = Workload(
    name="cpu_tasks",
    summary="32 pure-Python tasks of ~30 ms each (calibrated), pool start included",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(Metric("efficiency", "efficiency", "higher", "{:.0%}"),),
    params={"tasks": 32, "task_seconds": 0.030},
    calibrate=calibrate,
    derive=add_efficiency,
    frameworks=(
        _framework("workpool", "workpool.map", mappers.workpool_map, role="workpool"),
        _framework(
            "workpool_auto",
            "workpool.map (backend='auto')",
            mappers.workpool_auto_map,
            role="reference",
        ),
        _framework("mp", "multiprocessing.Pool.map", mappers.mp_pool_map),
        _framework("ppe", "ProcessPoolExecutor.map", mappers.ppe_map),
        _framework("mpire", "mpire WorkerPool.map", mappers.mpire_map, needs=("mpire",)),
        _framework("joblib", "joblib Parallel", mappers.joblib_map, needs=("joblib",)),
        _framework("serial", "serial list comprehension", mappers.serial_map, role="reference"),
    ),
)
