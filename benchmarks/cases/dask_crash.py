"""``dask_crash``: 1,000 tiny items on a warm Dask cluster, one of which kills its process.

With plain ``client.map`` the item kills its Dask worker; the nanny restarts it, Dask
runs the item again, and after ``allowed-failures`` deaths gives up on it
(``KilledWorker``), blaming any other task that was on the dying worker too. workpool
runs the item in a local process inside the Dask worker, so only that process dies.
Metrics: results kept, Dask workers lost (counted by the scheduler), wall seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks import dask_cluster
from benchmarks.measure import check, timed
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import square_but_exit_at_500


class WorkerDepartures:
    """A scheduler plugin that counts the workers the scheduler lost."""

    name = "benchmark-worker-departures"

    def __init__(self) -> None:
        self.count = 0

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.count += 1


def _departures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.plugins[WorkerDepartures.name].count)


def _register(client: Any) -> None:
    from distributed.diagnostics.plugin import SchedulerPlugin

    plugin = type("Departures", (WorkerDepartures, SchedulerPlugin), {})()
    client.register_plugin(plugin)


def run_workpool(params: Mapping[str, Any]) -> Sample:
    import workpool

    n = int(params["items"])
    with dask_cluster.warm_cluster() as client:
        _register(client)
        seconds, results = timed(
            lambda: workpool.map(
                square_but_exit_at_500,
                range(n),
                backend="dask",
                address=client,
                return_exceptions=True,
            )
        )
        lost = client.run_on_scheduler(_departures)
    kept = [r for r in results if isinstance(r, int)]
    check(kept == [x * x for x in range(n) if x != 500], "a result is wrong or missing")
    check(type(results[500]).__name__ == "WorkerCrashed", f"item 500 gave {results[500]!r}")
    return Sample({"kept": len(kept), "lost": lost, "seconds": seconds})


def run_client_map(params: Mapping[str, Any]) -> Sample:
    n = int(params["items"])
    with dask_cluster.warm_cluster() as client:
        _register(client)

        def run() -> list[Any]:
            futures = client.map(square_but_exit_at_500, range(n), pure=False)
            return list(client.gather(futures, errors="skip"))

        seconds, kept = timed(run)
        lost = client.run_on_scheduler(_departures)
    check(set(kept) <= {x * x for x in range(n)}, "a result is wrong")
    return Sample({"kept": len(kept), "lost": lost, "seconds": seconds})


WORKLOAD = Workload(
    name="dask_crash",
    summary="1,000 tiny items on a warm Dask cluster; item 500 kills its process (os._exit)",
    primary=Metric("kept", "results kept", "higher", "{:,.0f}"),
    extras=(
        Metric("lost", "Dask workers lost", "lower", "{:.0f}"),
        Metric("seconds", "wall s", "lower", "{:.2f}", ratio=True),
    ),
    params={"items": 1000},
    needs=("distributed",),
    frameworks=(
        Framework(
            "workpool",
            "workpool.map(backend='dask', return_exceptions=True)",
            run_workpool,
            "workpool",
        ),
        Framework("client_map", "client.map(pure=False) + gather(errors='skip')", run_client_map),
    ),
)
