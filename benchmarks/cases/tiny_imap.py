"""``tiny_imap``: a lazy map over a generator of unknown length, results consumed as they come.

A generator has no ``len``, so a library cannot size its chunks from the total; this
shows how each one copes with that for trivial items. Pool start and shutdown are
included. Metric: items per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import square

Sink = Callable[[Any], None]
Imapper = Callable[[Callable[[Any], Any], Iterable[Any], Sink], None]


def workpool_imap() -> Imapper:
    """``workpool.imap`` on processes; the pool stops when the iterator is exhausted."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    def run(fn: Callable[[Any], Any], inputs: Iterable[Any], sink: Sink) -> None:
        for result in workpool.imap(fn, inputs, backend="process", workers=WORKERS):
            sink(result)

    return run


def mp_pool_imap(chunksize: int = 1) -> Imapper:
    """``multiprocessing.Pool.imap``; its default chunksize is 1."""
    import multiprocessing.pool

    def run(fn: Callable[[Any], Any], inputs: Iterable[Any], sink: Sink) -> None:
        with multiprocessing.Pool(WORKERS) as pool:
            for result in pool.imap(fn, inputs, chunksize):
                sink(result)

    return run


def run_imap(factory: Callable[[], Imapper], params: Mapping[str, Any]) -> Sample:
    """Time consuming an imap over a generator of ``params["items"]`` numbers."""
    n = int(params["items"])
    imapper = factory()  # imports the library, outside the timer
    received: list[int] = [0, 0]  # count, running sum

    def sink(value: int) -> None:
        received[0] += 1
        received[1] += value

    def generate() -> Iterator[int]:
        yield from range(n)

    seconds, _ = timed(lambda: imapper(square, generate(), sink))
    check(received[0] == n, f"{received[0]} results for {n} items")
    check(received[1] == (n - 1) * n * (2 * n - 1) // 6, "sum of squares")
    return Sample({"items_per_s": n / seconds, "seconds": seconds}, {"items": n})


WORKLOAD = Workload(
    name="tiny_imap",
    summary="lazy imap(x*x) over a 200,000-item generator, results consumed",
    primary=Metric("items_per_s", "items/s", "higher", "{:,.0f}"),
    extras=(Metric("seconds", "wall s", "lower", "{:.3f}"),),
    params={"items": 200_000},
    frameworks=(
        Framework("workpool", "workpool.imap", partial(run_imap, workpool_imap), "workpool"),
        Framework(
            "mp",
            "multiprocessing.Pool.imap (chunksize=1)",
            partial(run_imap, mp_pool_imap),
            quick={"items": 50_000},
        ),
        Framework(
            "mp_c1000",
            "multiprocessing.Pool.imap (chunksize=1000)",
            partial(run_imap, partial(mp_pool_imap, 1000)),
        ),
    ),
)
