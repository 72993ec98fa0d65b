"""Measuring instruments used inside a measurement process: clocks, percentiles, memory.

Only the standard library is imported at module level; psutil is imported when the
memory sampler starts, so workloads that do not sample memory do not need it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TreeMemorySampler", "check", "percentile", "start_methods", "timed"]

T = TypeVar("T")


def timed(call: Callable[[], T]) -> tuple[float, T]:
    """Run ``call`` once; its wall time in seconds (``perf_counter``) and its result."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def check(condition: bool, what: str) -> None:
    """Fail the measurement (not the harness) when a framework computed a wrong answer.

    A fast wrong answer is no result, so every workload validates its output outside
    the timed region. This is a correctness check, never a timing assertion.
    """
    if not condition:
        raise RuntimeError(f"wrong result: {what}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` by linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def start_methods() -> dict[str, str]:
    """Which start method the standard library uses by default in this process."""
    import multiprocessing

    return {"multiprocessing_default": multiprocessing.get_start_method(allow_none=False)}


class TreeMemorySampler:
    """Samples the memory of this process and all its descendants on a thread.

    Every ``interval`` seconds it sums the RSS (and the PSS, which splits pages shared
    between processes fairly) of this process and every descendant, and keeps the
    peaks. ``rss_delta`` is the peak RSS sum minus this process's RSS when sampling
    started: what the run cost in memory beyond what the caller already held.

    Summed RSS counts a page shared by several processes once per process, so a pool
    forked after a big allocation shows that allocation again in every worker even
    though nothing was copied; PSS does not. Both are reported.
    """

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._psutil: Any = psutil
        self._me: Any = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self.baseline_rss = 0
        self.baseline_pss = 0
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self.max_processes = 0

    def __enter__(self) -> TreeMemorySampler:
        info = self._me.memory_full_info()
        self.baseline_rss = info.rss
        self.baseline_pss = getattr(info, "pss", info.rss)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def rss_delta(self) -> int:
        return max(0, self.peak_rss - self.baseline_rss)

    @property
    def pss_delta(self) -> int:
        return max(0, self.peak_pss - self.baseline_pss)

    def _loop(self) -> None:
        self._sample()
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        psutil = self._psutil
        try:
            processes = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = counted = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.Error:  # exited between listing and reading: it holds nothing
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            counted += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.max_processes = max(self.max_processes, counted)
        self.samples += 1
