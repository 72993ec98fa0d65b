"""Times every (workload, backend, pool size) of the scaling study.

Pools are started before they are timed and their start-up is measured on its own:
the study is about how work scales with workers, and a start-up cost would hide that
for short workloads. Repetitions are interleaved across configurations, so a passing
load on the machine hits them all alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import workpool
from workpool.bench.workloads import Workload, square

__all__ = ["Configuration", "WorkloadResult", "time_workload"]


@dataclass
class Configuration:
    """One backend at one pool size, and the seconds each repetition took."""

    backend: str
    workers: int
    seconds: list[float] = field(default_factory=list)
    start_seconds: float = 0.0  # starting the pool and its first trivial task

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class WorkloadResult:
    workload: Workload
    serial: Configuration
    pooled: list[Configuration]

    def speedup(self, config: Configuration) -> float:
        return self.serial.median / config.median

    def efficiency(self, config: Configuration) -> float:
        return self.speedup(config) / config.workers


def _drain(pool: workpool.Pool, fn: Callable[[Any], Any], items: list[Any]) -> None:
    for _ in pool.imap(fn, items):
        pass


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def time_workload(
    workload: Workload,
    workers: list[int],
    runs: int,
    on_step: Callable[[str], None] = lambda _: None,
) -> WorkloadResult:
    """Run ``workload`` serially and on each of its engines at each pool size."""
    fn, items = workload.fn, workload.items
    serial = Configuration("serial", 1)
    pooled = [Configuration(b, w) for b in workload.backends for w in workers]
    pools: list[workpool.Pool] = []
    try:
        for config in pooled:
            started = time.perf_counter()
            pool = workpool.Pool(config.workers, backend=config.backend)
            pool.submit(square, 1).result()
            config.start_seconds = time.perf_counter() - started
            pools.append(pool)
            list(pool.imap(fn, items[: max(1, len(items) // 20)]))  # warm every worker up
        for repetition in range(runs):
            on_step(f"{workload.name}: run {repetition + 1} of {runs}")
            serial.seconds.append(_timed(lambda: [fn(item) for item in items]))
            for config, pool in zip(pooled, pools):
                config.seconds.append(_timed(partial(_drain, pool, fn, items)))
    finally:
        for pool in pools:
            pool.shutdown()
    return WorkloadResult(workload, serial, pooled)
