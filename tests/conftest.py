"""Shared fixtures: the backends to run every test on, and the no-leftovers guard.

Every test is checked for what it leaves behind: once it ends, no worker process it
started may still run (the fork server and the resource tracker, which
``multiprocessing`` keeps for the whole session, are not ours), and no workpool thread
may still be alive. Waits are conditions with a deadline.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.util import find_spec

import psutil
import pytest

# Subinterpreters (backend="interpreter") exist from Python 3.14 on.
HAS_INTERPRETERS = sys.version_info >= (3, 14) and find_spec("concurrent.interpreters") is not None
BACKENDS = ["serial", "thread", "process"] + (["interpreter"] if HAS_INTERPRETERS else [])
START_METHODS = [
    m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()
]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def named_shared_memory() -> set[str]:
    """The entries of /dev/shm, but for POSIX semaphores (``sem.*``).

    workpool makes no semaphore; other programs on the machine make and remove them at
    any moment (every multiprocessing Lock is one), which says nothing about a test.
    """
    return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.")}


def left_in_shared_memory(before: set[str], timeout: float = 10.0) -> set[str]:
    """Entries of /dev/shm made since ``before`` that are still there after ``timeout``.

    workpool's memory never has a name there; but other programs on the machine may
    create and remove named segments while a test runs: only one that stays counts.
    """
    left: set[str] = set()

    def settled() -> bool:
        nonlocal left
        left = named_shared_memory() - before
        return not left

    wait_for(settled, timeout)
    return left


def left_to_the_cycle_collector(call: Callable[[], object]) -> list[str]:
    """What of workpool's (or which exception) only a collection of cycles frees, once
    ``call()`` has returned and dropped what it raised."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call()
        gc.collect()
        return sorted(
            {
                type(thing).__qualname__
                for thing in gc.garbage
                if isinstance(thing, BaseException) or type(thing).__module__.startswith("workpool")
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _session_helpers() -> set[int]:
    """Processes kept for the whole session: fork server, resource tracker, zygote."""
    from workpool.backends.process import zygote

    pids: set[int] = set()
    if zygote._zygote is not None:
        pids.add(zygote._zygote.pid)
    try:
        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid:
            pids.add(pid)
    except ImportError:
        pass
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid:
        pids.add(pid)
    return pids


#: Processes that a longer-lived fixture checks when it ends, not each test, with their
#: descendants: each entry gives their pids as they are now. The Dask workers of a
#: cluster shared by a module keep their local pools from one test to the next, and a
#: worker its nanny starts again is the cluster's too, not something a test left; the
#: cluster's fixture checks that all of them are gone once it has closed the cluster.
checked_by_their_fixture: list[Callable[[], set[int]]] = []


def live_worker_processes() -> list[psutil.Process]:
    """Descendants of this process that are still running, other than session helpers."""
    helpers = _session_helpers()
    checked = set().union(*(current() for current in checked_by_their_fixture))
    alive = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in helpers:
            continue
        try:
            if checked and (
                child.pid in checked or any(parent.pid in checked for parent in child.parents())
            ):
                continue
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


def live_workpool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("workpool-") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a worker process or a workpool thread running."""
    before = {p.pid for p in live_worker_processes()}
    yield
    leftover: list[psutil.Process] = []

    def processes_gone() -> bool:
        nonlocal leftover
        leftover = [p for p in live_worker_processes() if p.pid not in before]
        return not leftover

    if not wait_for(processes_gone, timeout=10):
        for process in leftover:
            process.kill()
        pytest.fail(f"worker processes left running: {[p.pid for p in leftover]}")
    if not wait_for(lambda: not live_workpool_threads(), timeout=10):
        pytest.fail(f"workpool threads left running: {live_workpool_threads()}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    return str(request.param)


# Python 3.12+ warns when a multi-threaded process forks: the supervisor thread makes
# every pool's process multi-threaded, and these tests choose fork on purpose.
FORK_WARNING = "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"


@pytest.fixture(
    params=[
        pytest.param(m, marks=pytest.mark.filterwarnings(FORK_WARNING)) if m == "fork" else m
        for m in START_METHODS
    ]
)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make a file read-only for this process, as its mode says even to root.

    Root writes any file whatever its mode, so for root ``os.access`` is told the
    truth the mode tells everyone else.
    """

    def make(path: str) -> None:
        os.chmod(path, 0o444)
        if os.geteuid() == 0:
            real = os.access
            marked = os.path.abspath(path)

            def access(name: str, mode: int, **kwargs: bool) -> bool:
                if os.path.abspath(name) == marked and mode & os.W_OK:
                    return False
                return real(name, mode, **kwargs)

            monkeypatch.setattr(os, "access", access)

    return make


def group_members(group: int) -> list[int]:
    """The processes of a process group that still run (a zombie has ended)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members
