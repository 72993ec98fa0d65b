"""Calibrate ``workloads.burn`` once per run so one task takes a chosen time serially.

A fixed loop count would mean different work on every machine; calibrating makes
``cpu_tasks`` mean "32 tasks of ~30 ms" wherever it runs. The calibrated count is
passed to every measurement of the run, so all frameworks do exactly the same work.
"""

from __future__ import annotations

import time

from benchmarks.workloads import burn

__all__ = ["calibrate_burn"]


def _seconds(n: int, repeats: int) -> float:
    """The fastest wall time of ``burn(n)`` over ``repeats`` runs.

    On a shared machine, noise only ever slows a run down, so the fastest of a few is
    the best estimate of what the work itself costs.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        burn(n)
        times.append(time.perf_counter() - start)
    return min(times)


def calibrate_burn(target_seconds: float) -> tuple[int, float]:
    """A loop count ``n`` for which ``burn(n)`` takes about ``target_seconds``.

    Returns ``n`` and the measured time of ``burn(n)``. Grows ``n`` until one call
    takes a measurable time, scales it linearly to the target, then corrects once with
    the fastest of several runs.
    """
    n = 10_000
    while _seconds(n, 1) < target_seconds / 10:
        n *= 2
    n = max(1, round(n * target_seconds / _seconds(n, 3)))
    n = max(1, round(n * target_seconds / _seconds(n, 5)))
    return n, _seconds(n, 5)
