"""What workpool's Dask backend costs per task, beside Dask's own futures, on one cluster.

Run from the repository root::

    .venv/bin/python -m benchmarks.dask_overhead              # 5 repetitions
    .venv/bin/python -m benchmarks.dask_overhead --reps 3 --only roundtrip,submits

Unlike the ``dask_*`` workloads of ``python -m benchmarks`` (a fresh cluster for every
measurement), this keeps one warm ``LocalCluster`` (2 single-threaded worker processes,
nanny-started, on 127.0.0.1) and one ``Pool(backend="dask", address=client)`` on it for
the whole run, and alternates workpool and ``client.submit``/``client.map`` measurement
by measurement (the order flips every repetition), so that the load of a shared machine
falls on both alike. It gives each side's median over the repetitions and the ratio
workpool / Dask (lower is better for workpool; 1.0 is parity). Beside each wall time,
``cpu_s`` is the CPU time that every process of the run spent meanwhile (this one, with
the cluster's scheduler, and the workers with their local pools): other jobs on the
machine stretch wall times, far less the CPU each side needs.

- ``roundtrip``: ``submit(echo, i).result()`` one at a time (p50 and p90 of 200 calls
  after 20 warm-up calls);
- ``submits``: 3,000 ``submit(square, i)``, then every result (the Pool's
  ``concurrent.futures`` Futures; Dask's futures through one ``client.gather``);
- ``map_tiny``: ``map(square, range(10_000))`` (workpool's chunks against Dask's task
  per item);
- ``map_coarse``: 64 tasks of ~50 ms of pure-Python work (``burn``, calibrated).

To see where the time goes, run it under a sampling profiler that follows every
process (the cluster's scheduler runs in this process, its workers and their local
pools in others), e.g. ``py-spy record --subprocesses --format raw -o stacks.txt --
.venv/bin/python -m benchmarks.dask_overhead --reps 1 --only submits``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.calibrate import calibrate_burn
from benchmarks.dask_cluster import warm_cluster
from benchmarks.measure import check, percentile
from benchmarks.workloads import burn, echo, square

ROUNDTRIP_CALLS = 200
ROUNDTRIP_WARMUP = 20
SUBMITS = 3_000
MAP_ITEMS = 10_000
COARSE_TASKS = 64
COARSE_SECONDS = 0.050

Measure = Callable[[], dict[str, float]]


def _roundtrip(submit: Callable[[Any], Any]) -> dict[str, float]:
    for i in range(ROUNDTRIP_WARMUP):
        submit(i)
    times = []
    for i in range(ROUNDTRIP_CALLS):
        began = time.perf_counter()
        result = submit(i)
        times.append(time.perf_counter() - began)
        check(result == i, "echo returned something else")
    return {"p50_ms": percentile(times, 0.5) * 1e3, "p90_ms": percentile(times, 0.9) * 1e3}


def _cpu_seconds() -> float:
    """CPU time of this process (the client, and the local cluster's scheduler) and
    every process under it (the Dask workers, their nannies and local pools)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def _wall(run: Callable[[], list[Any]], expected: list[Any]) -> dict[str, float]:
    cpu = _cpu_seconds()
    began = time.perf_counter()
    results = run()
    seconds = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu
    check(results == expected, "results differ from a serial run")
    return {"s": seconds, "cpu_s": cpu}


def workpool_side(pool: Any, burn_n: int) -> dict[str, Measure]:
    def submits() -> list[int]:
        futures = [pool.submit(square, i) for i in range(SUBMITS)]
        return [f.result() for f in futures]

    return {
        "roundtrip": lambda: _roundtrip(lambda i: pool.submit(echo, i).result()),
        "submits": lambda: _wall(submits, [i * i for i in range(SUBMITS)]),
        "map_tiny": lambda: _wall(
            lambda: list(pool.map(square, range(MAP_ITEMS))), [i * i for i in range(MAP_ITEMS)]
        ),
        "map_coarse": lambda: _wall(
            lambda: list(pool.map(burn, [burn_n] * COARSE_TASKS)),
            [burn(burn_n)] * COARSE_TASKS,
        ),
    }


def dask_side(client: Any, burn_n: int) -> dict[str, Measure]:
    def submits() -> list[int]:
        futures = [client.submit(square, i, pure=False) for i in range(SUBMITS)]
        return list(client.gather(futures))

    def mapped(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(client.gather(client.map(fn, items, pure=False)))

    return {
        "roundtrip": lambda: _roundtrip(lambda i: client.submit(echo, i, pure=False).result()),
        "submits": lambda: _wall(submits, [i * i for i in range(SUBMITS)]),
        "map_tiny": lambda: _wall(
            lambda: mapped(square, list(range(MAP_ITEMS))), [i * i for i in range(MAP_ITEMS)]
        ),
        "map_coarse": lambda: _wall(
            lambda: mapped(burn, [burn_n] * COARSE_TASKS), [burn(burn_n)] * COARSE_TASKS
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="roundtrip,submits,map_tiny,map_coarse")
    parser.add_argument(
        "--sides", default="workpool,dask", help="whose side to run (one, when profiling)"
    )
    args = parser.parse_args()
    chosen = args.only.split(",")

    import workpool

    burn_n, _ = calibrate_burn(COARSE_SECONDS)
    with warm_cluster() as client, workpool.Pool(backend="dask", address=client) as pool:
        pool.submit(square, 1).result()  # its local pools start on the workers
        sides = {"workpool": workpool_side(pool, burn_n), "dask": dask_side(client, burn_n)}
        samples: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rep in range(args.reps):
            order = [side for side in sides if side in args.sides.split(",")]
            if rep % 2:
                order.reverse()
            for workload in chosen:
                for side in order:
                    sample = sides[side][workload]()
                    samples.setdefault((workload, side), []).append(sample)
        if len(order) < 2:
            return
        print(f"{'workload':<12} {'metric':<7} {'workpool':>10} {'dask':>10} {'ratio':>7}")
        for workload in chosen:
            for metric in samples[(workload, "workpool")][0]:
                ours = statistics.median(s[metric] for s in samples[(workload, "workpool")])
                theirs = statistics.median(s[metric] for s in samples[(workload, "dask")])
                print(
                    f"{workload:<12} {metric:<7} {ours:>10.3f} {theirs:>10.3f} "
                    f"{ours / theirs:>7.2f}"
                )


if __name__ == "__main__":
    main()
