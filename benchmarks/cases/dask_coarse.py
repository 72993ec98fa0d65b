"""``dask_coarse``: 64 pure-Python tasks of ~50 ms each on a warm two-worker Dask cluster.

Here the work dominates: one task per item is what Dask is built for, and workpool
must not be slower at it (its chunks hold one or two items once it measures them).
Two workpool rows: a program's first call on the cluster, which starts the local
process pools on the workers, and a later one, which finds them up.
``burn``'s loop count is calibrated once per run. Metric: wall seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import dask_cluster
from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import burn


def run_tasks(make: Any, params: Mapping[str, Any]) -> Sample:
    n, tasks = int(params["burn_n"]), int(params["tasks"])
    expected = burn(n)
    with dask_cluster.warm_cluster() as client:
        mapper = make(client)
        seconds, results = timed(lambda: mapper(burn, [n] * tasks))
    check(results == [expected] * tasks, "burn results differ from a serial run")
    return Sample({"seconds": seconds}, {"tasks": tasks, "burn_n": n})


def calibrate(params: Mapping[str, Any]) -> dict[str, Any]:
    from benchmarks.calibrate import calibrate_burn

    n, seconds = calibrate_burn(float(params["task_seconds"]))
    return {"burn_n": n, "burn_task_s": seconds}


WORKLOAD = Workload(
    name="dask_coarse",
    summary="64 pure-Python tasks of ~50 ms (calibrated) on a warm Dask cluster of 2 workers",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    params={"tasks": 64, "task_seconds": 0.050},
    calibrate=calibrate,
    needs=("distributed",),
    frameworks=(
        Framework(
            "workpool",
            "workpool.map(backend='dask')",
            partial(run_tasks, dask_cluster.workpool_dask_map),
            "workpool",
        ),
        Framework(
            "workpool_again",
            "the same, on a cluster that ran a workpool call before",
            partial(run_tasks, dask_cluster.workpool_dask_map_again),
            "workpool",
        ),
        Framework(
            "client_map",
            "client.map(pure=False) + gather",
            partial(run_tasks, dask_cluster.client_map),
        ),
    ),
)
