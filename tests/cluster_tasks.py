"""Functions the Dask tests run on a cluster; importable by name on its workers."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
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


class WaitLong:
    """Take ten seconds (far longer than any test waits for a cancellation), unless x is 0.

    Each process that starts waiting leaves its pid in ``directory`` first, so a test
    can check that the processes running a cancelled call's tasks were stopped.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def __call__(self, x: int) -> int:
        if x:
            (Path(self.directory) / str(os.getpid())).touch()
            time.sleep(10)
        return x


class FailOnOneElseWaitLong(WaitLong):
    """Item 1 fails, once another item is waiting long (or after 30 s)."""

    def __call__(self, x: int) -> int:
        if x == 1:
            deadline = time.monotonic() + 30
            while not any(Path(self.directory).iterdir()) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise ValueError("bad input 1")
        return super().__call__(x)


def waiters_gone(directory: str | Path) -> bool:
    """Have all the processes that waited long (``WaitLong``) in ``directory`` ended?"""
    import psutil

    for entry in Path(directory).iterdir():
        try:
            if psutil.Process(int(entry.name)).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def local_processes() -> int:
    """Run on a Dask worker: how many processes it has started that still run."""
    import psutil

    while True:
        try:
            children = psutil.Process().children()
        except (psutil.Error, OSError):  # a process ended while /proc was read: again
            continue
        running = 0
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
                running += child.status() != psutil.STATUS_ZOMBIE
        return running


def ones(count: int) -> Any:
    """A NumPy array big enough to come back from a process worker in shared memory."""
    import numpy

    return numpy.ones(count)


def process_and_parent(_: object) -> tuple[int, int]:
    """The pid of the local process that ran this task, and of its Dask worker."""
    return os.getpid(), os.getppid()


def keep_idle_pools_for(seconds: float) -> float:
    """Run on a Dask worker: stop idle local pools after ``seconds``; the old setting."""
    from workpool.backends.dask import node

    old, node.IDLE_SECONDS = node.IDLE_SECONDS, seconds
    return old
