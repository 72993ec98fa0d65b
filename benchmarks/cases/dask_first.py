"""``dask_first``: how soon the first result of a lazy map arrives on a warm Dask cluster.

workpool's ``imap`` reads an endless generator and yields as soon as the first chunk
is back; its time includes starting the local process pools on the workers. Dask's
``client.map`` needs a finite list (1,000 items here); its first result is the first
item's. A lone ``client.submit().result()`` is the floor: one task's
round trip. Metric: milliseconds from the call to the first result in hand.
"""

from __future__ import annotations

import importlib
import itertools
import time
from typing import Any

from benchmarks import dask_cluster
from benchmarks.measure import check
from benchmarks.spec import Framework, Metric, Sample, Workload
from benchmarks.workloads import square


def _first(start: Any) -> Sample:
    """Time ``start()``, which returns the first result and a way to finish."""
    importlib.import_module("workpool.backends.dask")  # imports stay out of the timer

    with dask_cluster.warm_cluster() as client:
        began = time.perf_counter()
        first, finish = start(client)
        elapsed = time.perf_counter() - began
        finish()
    check(first == 0, f"the first result is {first!r}, not square(0)")
    return Sample({"first_ms": elapsed * 1000})


def _workpool(client: Any) -> tuple[Any, Any]:
    import workpool

    results = workpool.imap(square, itertools.count(), backend="dask", address=client)
    return next(results), results.close  # type: ignore[attr-defined]


def _client_map(client: Any) -> tuple[Any, Any]:
    futures = client.map(square, range(1000), pure=False)
    return futures[0].result(), lambda: client.cancel(futures)


def _client_submit(client: Any) -> tuple[Any, Any]:
    return client.submit(square, 0, pure=False).result(), lambda: None


WORKLOAD = Workload(
    name="dask_first",
    summary="first result of a lazy map on a warm Dask cluster of 2 workers",
    primary=Metric("first_ms", "first result ms", "lower", "{:,.0f}"),
    needs=("distributed",),
    frameworks=(
        Framework(
            "workpool",
            "workpool.imap(endless generator)",
            lambda params: _first(_workpool),
            "workpool",
        ),
        Framework(
            "client_map",
            "client.map(1,000 items), first item's result",
            lambda params: _first(_client_map),
        ),
        Framework(
            "client_submit",
            "client.submit().result() (one task)",
            lambda params: _first(_client_submit),
            "reference",
        ),
    ),
)
