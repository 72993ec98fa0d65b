"""``dask_tiny``: map(x*x) over 200,000 items on a warm two-worker Dask cluster.

The work is nothing, so this is the per-item cost of each way to use a cluster.
Plain ``client.map`` makes one task per item (about a millisecond each), so it maps
5,000 items and joblib's Dask backend 50,000: the metric, items per second, stays
comparable. workpool's time includes starting its local process pools on the
workers, which a program's first call on a cluster does (later calls find them up).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks import dask_cluster
from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import square


def run_map(make: Any, params: Mapping[str, Any], items: int | None = None) -> Sample:
    """Time one map of ``items`` (default: the workload's) squares on a warm cluster."""
    n = int(params["items"]) if items is None else items
    with dask_cluster.warm_cluster() as client:
        mapper = make(client)
        seconds, results = timed(lambda: mapper(square, range(n)))
    check(results == [x * x for x in range(n)], "results wrong or out of order")
    return Sample({"items_per_s": n / seconds, "seconds": seconds}, {"items": n})


WORKLOAD = Workload(
    name="dask_tiny",
    summary="map(x*x) over range(200,000) on a warm Dask cluster of 2 single-threaded workers",
    primary=Metric("items_per_s", "items/s", "higher", "{:,.0f}"),
    extras=(Metric("seconds", "wall s", "lower", "{:.3f}"),),
    params={"items": 200_000},
    needs=("distributed",),
    frameworks=(
        Framework(
            "workpool",
            "workpool.map(backend='dask')",
            partial(run_map, dask_cluster.workpool_dask_map),
            "workpool",
        ),
        Framework(
            "client_map",
            "client.map(pure=False) + gather (5,000 items)",
            partial(run_map, dask_cluster.client_map, items=5_000),
        ),
        Framework(
            "joblib_dask",
            "joblib Parallel, dask backend (50,000 items)",
            partial(run_map, dask_cluster.joblib_dask_map, items=50_000),
            needs=("joblib",),
        ),
    ),
)
