"""Functions the Dask tests run on a cluster; importable by name on its workers."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any


def token(_: object) -> str:
    """A value no other call returns: proof that this call ran."""
    return uuid.uuid4().hex


def dask_worker_pid(_: object) -> int:
    """The pid of the Dask worker whose local process ran this task (its parent)."""
    return os.getppid()


def interval(seconds: float) -> tuple[float, float]:
    """Sleep; return when this task started and ended."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def array_sum_plus(array: Any, k: int) -> float:
    return float(array.sum()) + k


def scribble(array: Any) -> None:
    array[0] = 1


def wait_long(x: int) -> int:
    """Take ten seconds (far longer than any test waits for a cancellation), unless x is 0."""
    if x:
        time.sleep(10)
    return x


def fail_on_one_else_wait_long(x: int) -> int:
    if x == 1:
        raise ValueError("bad input 1")
    return wait_long(x)


def local_processes() -> int:
    """Run on a Dask worker: how many processes it has started that still run."""
    import psutil

    children = psutil.Process().children()
    return sum(1 for child in children if child.status() != psutil.STATUS_ZOMBIE)


def ones(count: int) -> Any:
    """A NumPy array big enough to come back from a process worker in shared memory."""
    import numpy

    return numpy.ones(count)
