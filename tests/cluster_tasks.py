"""Functions the Dask tests run on a cluster; importable by name on its workers."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import time
import uuid
from pathlib import Path
from typing import Any


def dask_setup(worker: object) -> None:
    """The preload of the tests' own clusters: a worker that crashes prints where first."""
    faulthandler.enable()


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

    A process marks itself in ``directory`` while it waits (``waiting-<pid>``), and turns
    the mark into ``waited-<pid>`` if the wait ends: a test can tell the processes that
    were stopped in the middle of a task from those that finished theirs and may rightly
    be kept for later work by their node.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def __call__(self, x: int) -> int:
        if x:
            mark = Path(self.directory) / f"waiting-{os.getpid()}"
            mark.touch()
            time.sleep(10)
            mark.replace(mark.with_name(f"waited-{os.getpid()}"))
        return x


class FailOnOneElseWaitLong(WaitLong):
    """Item 1 fails, once another item is waiting long (or after 30 s)."""

    def __call__(self, x: int) -> int:
        if x == 1:
            deadline = time.monotonic() + 30
            while not waiting(self.directory) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise ValueError("bad input 1")
        return super().__call__(x)


def waiting(directory: str | Path) -> list[int]:
    """The processes marked as waiting long (``WaitLong``) in ``directory``.

    Those running a wait now, and those stopped in the middle of one.
    """
    marks = [p.name for p in Path(directory).iterdir()]
    return [int(name.removeprefix("waiting-")) for name in marks if name.startswith("waiting-")]


def waiters_gone(directory: str | Path) -> bool:
    """Have the processes still marked as waiting in ``directory`` all ended?

    A process whose wait finished is not asked about: it is idle, and its node may keep it.
    """
    import psutil

    for pid in waiting(directory):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
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


class MarkDone:
    """Take a moment, then leave ``done-<x>`` in ``directory``: proof that item x ran."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def __call__(self, x: int) -> int:
        time.sleep(0.05)
        (Path(self.directory) / f"done-{x}").touch()
        return x


class Rendezvous:
    """Wait until ``count`` tasks are running at once (or 5 s pass); return how many met.

    Each task leaves ``arrived-<x>`` in ``directory``: tasks that can run side by side
    all see ``count`` marks; tasks made to run one after another see fewer.
    """

    def __init__(self, directory: str | Path, count: int) -> None:
        self.directory = str(directory)
        self.count = count

    def __call__(self, x: int) -> int:
        (Path(self.directory) / f"arrived-{x}").touch()
        deadline = time.monotonic() + 5
        while True:
            marks = [p.name for p in Path(self.directory).iterdir()]
            arrived = sum(1 for name in marks if name.startswith("arrived-"))
            if arrived >= self.count or time.monotonic() > deadline:
                return arrived
            time.sleep(0.01)
