"""The functions that the benchmarks run inside workers.

They live at module level in an importable module because a pool that starts its
workers by spawn or from a fork server sends functions by reference: the worker
imports ``benchmarks.workloads`` and looks the name up. Every one of them is cheap
to import (no numpy, no pool library), so worker start-up costs the same for all.
"""

from __future__ import annotations

import os
import time
from typing import Any


def square(x: int) -> int:
    """The tiny task: so little work that a pool's per-item overhead is all we see."""
    return x * x


def burn(n: int) -> int:
    """Pure-Python CPU work that holds the GIL; ``n`` is calibrated to take ~30 ms."""
    return sum(i * i for i in range(n))


def echo(x: Any) -> Any:
    """A trivial task for round-trip latency: the argument comes straight back."""
    return x


def worker_pid(_: Any = None) -> int:
    """A trivial task that also proves where it ran: the pid of the worker process."""
    return os.getpid()


def nap(x: Any, seconds: float = 0.01) -> Any:
    """I/O-like waiting that releases the GIL, for the thread workload."""
    time.sleep(seconds)
    return x


def sum_part(arr: Any, part: int, parts: int = 8) -> float:
    """Sum one ``parts``-th of a NumPy array (``arr[part*n//parts:(part+1)*n//parts]``)."""
    n = len(arr)
    return float(arr[part * n // parts : (part + 1) * n // parts].sum())


# The array ``sum_held_part`` reads: set by the parent before it forks its workers,
# which inherit it (the standard pools' way to hand every worker a large array).
HELD: list[Any] = []


def hold(arr: Any) -> None:
    """A pool initializer: keep ``arr`` in ``HELD`` (how spawned workers get it)."""
    HELD[:] = [arr]


def sum_held_part(part: int, parts: int = 8) -> float:
    """``sum_part`` of the array this process holds in ``HELD``."""
    return sum_part(HELD[0], part, parts)


def make_array(megabytes: int) -> Any:
    """A task whose result is large: a float64 array of ``megabytes`` MB (1 MB = 10**6 B)."""
    import numpy as np

    return np.arange(megabytes * 1_000_000 // 8, dtype=np.float64)


def make_array_in_shared_memory(megabytes: int) -> Any:
    """``make_array``'s values, written into ``workpool.empty`` rather than a fresh array.

    One pass, as ``numpy.arange`` makes: each block of the result is a small, cached
    ramp plus the block's start, written straight into the shared array.
    """
    import numpy as np

    import workpool

    out = workpool.empty(megabytes * 1_000_000 // 8)
    ramp = np.arange(1 << 14, dtype=np.float64)
    for start in range(0, len(out), len(ramp)):
        block = out[start : start + len(ramp)]
        np.add(ramp[: len(block)], start, out=block)
    return out


def square_but_exit_at_500(x: int) -> int:
    """The poison item: input 500 ends its process at once, as a segfault or OOM kill would."""
    if x == 500:
        os._exit(7)
    return x * x
