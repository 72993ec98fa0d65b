"""The workloads of ``workpool bench``: each a function, its items and what it shows.

The functions live at module level so that worker processes can import them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["WORKLOADS", "Workload", "build_workloads"]


def spin(loops: int) -> int:
    """Pure-Python CPU work: holds the GIL (unless the build has none)."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def nap(seconds: float) -> float:
    """Waiting, as I/O does: the GIL is released while it sleeps."""
    time.sleep(seconds)
    return seconds


def numpy_sort(seed: int) -> float:
    """Sort a million floats: NumPy releases the GIL while it sorts."""
    import numpy as np

    values = np.random.default_rng(seed).random(1_000_000)
    values.sort(kind="heapsort")
    return float(values[0])


def square(x: int) -> int:
    """The notebook's squares: far less work than shipping it anywhere costs."""
    return x * x


@dataclass(frozen=True)
class Workload:
    name: str
    fn: Callable[[Any], Any]
    items: list[Any]
    description: str
    backends: tuple[str, ...] = ("thread", "process")  # besides serial


def _pooled_backends(*, in_subinterpreters: bool = True) -> tuple[str, ...]:
    """The engines to time: threads, processes, and subinterpreters where Python has them."""
    from workpool._options import BACKENDS

    if in_subinterpreters and "interpreter" in BACKENDS:
        return ("thread", "process", "interpreter")
    return ("thread", "process")


WORKLOADS = ("cpu", "io", "numpy", "tiny")


def _calibrate_spin(target_seconds: float) -> int:
    """Loops of ``spin`` that take about ``target_seconds`` here."""
    loops = 10_000
    while True:
        started = time.perf_counter()
        spin(loops)
        took = time.perf_counter() - started
        if took > 0.005:
            return max(1, int(loops * target_seconds / took))
        loops *= 4


def build_workloads(names: list[str], *, quick: bool) -> tuple[list[Workload], list[str]]:
    """The workloads asked for, sized for ``quick`` or full runs, and notes on skipped ones."""
    built: list[Workload] = []
    notes: list[str] = []
    for name in names:
        if name == "cpu":
            per_item = 0.005
            count = 64 if quick else 256
            loops = _calibrate_spin(per_item)
            built.append(
                Workload(
                    "cpu",
                    spin,
                    [loops] * count,
                    f"{count} pure-Python loops of ~5 ms",
                    _pooled_backends(),
                )
            )
        elif name == "io":
            count = 64 if quick else 400
            built.append(
                Workload("io", nap, [0.01] * count, f"{count} waits of 10 ms", _pooled_backends())
            )
        elif name == "numpy":
            try:
                import numpy  # noqa: F401
            except ImportError:
                notes.append("numpy: skipped, NumPy is not installed (pip install numpy)")
                continue
            count = 16 if quick else 64
            built.append(
                # NumPy cannot be imported in a subinterpreter: no interpreter rows.
                Workload(
                    "numpy",
                    numpy_sort,
                    list(range(count)),
                    f"{count} NumPy sorts of 1M",
                    _pooled_backends(in_subinterpreters=False),
                )
            )
        elif name == "tiny":
            count = 100_000 if quick else 1_000_000
            built.append(
                Workload(
                    "tiny", square, list(range(count)), f"{count:,} squares", _pooled_backends()
                )
            )
        else:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    return built, notes
