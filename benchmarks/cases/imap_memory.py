"""``imap_memory``: a lazy imap over 10 million items holds a bounded amount in flight.

The input is a generator and the results are consumed and dropped as they come, so a
library that reads ahead without bound, or keeps results, grows with the input. Metric:
peak growth of this process's RSS during the run (the workers' memory is their own).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import square

Consumer = Callable[[Iterator[int]], int]
MB = 1_000_000


def workpool_imap() -> Consumer:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()
    from workpool.backends.process import default_start_method

    default_start_method()  # settle how workers start before the sampler's thread

    def run(items: Iterator[int]) -> int:
        count = 0
        for _ in workpool.imap(square, items, backend="process", workers=WORKERS):
            count += 1
        return count

    return run


def mp_imap() -> Consumer:
    import multiprocessing.pool

    def run(items: Iterator[int]) -> int:
        count = 0
        with multiprocessing.Pool(WORKERS) as pool:
            for _ in pool.imap(square, items, chunksize=1000):
                count += 1
        return count

    return run


class _PeakRSS:
    """This process's peak RSS while it runs, sampled every 20 ms on a thread."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.baseline = self.peak = self._me.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._me.memory_info().rss)


def run_consume(factory: Callable[[], Consumer], params: Mapping[str, Any]) -> Sample:
    consume = factory()
    n = int(params["items"])
    with _PeakRSS() as rss:
        seconds, count = timed(lambda: consume(x for x in range(n)))
    check(count == n, f"{count} results for {n} items")
    return Sample(
        {"growth_mb": (rss.peak - rss.baseline) / MB, "items_per_s": n / seconds},
        {"baseline_mb": rss.baseline / MB},
    )


WORKLOAD = Workload(
    name="imap_memory",
    summary="lazy imap(x*x) over a generator of 10 million items, results dropped",
    primary=Metric("growth_mb", "parent RSS growth MB", "lower", "{:,.1f}"),
    extras=(Metric("items_per_s", "items/s", "higher", "{:,.0f}"),),
    params={"items": 10_000_000},
    quick_params={"items": 10_000_000},
    needs=("psutil",),
    frameworks=(
        Framework(
            "workpool", "workpool.imap", partial(run_consume, workpool_imap), role="workpool"
        ),
        Framework(
            "mp_c1000", "multiprocessing.Pool.imap (chunksize=1000)", partial(run_consume, mp_imap)
        ),
    ),
)
