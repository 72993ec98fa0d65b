"""Workers started by exec: the launcher for processes that cannot fork or use multiprocessing.

A daemonic process that runs threads (a Dask worker started by its nanny) can neither
host the zygote nor start ``multiprocessing`` children. The pool must work there all
the same, with every guarantee: a crash costs one task, a hung task is killed, and no
worker outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import workpool
from conftest import wait_for
from daemonic import hold_workers, map_with_a_crash
from faults import crash_on, hang_on, hold_descriptors_then_die, kill_holder, pid_of
from helpers import recall, remember
from workpool._options import PoolSpec, run_options
from workpool.backends.process import ProcessBackend, exec_launch
from workpool.inputs import InputSource
from workpool.run import MapRun
from workpool.tasks import CallMode


@pytest.fixture(params=["pidfd", "exit pipe"])
def sentinel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way of noticing that an exec'd worker ended (the pipe is the portable one)."""
    if request.param == "pidfd" and not exec_launch.HAS_PIDFD:
        # pidfd_open is Linux's own, and the portable paths (WORKPOOL_PORTABLE=1) do
        # without it: there, the exit pipe is the way, and it is the other parameter.
        pytest.skip("pidfds are Linux's (pidfd_open); the portable paths use the exit pipe")
    monkeypatch.setattr(exec_launch, "HAS_PIDFD", request.param == "pidfd")
    return str(request.param)


@contextlib.contextmanager
def exec_pool(**shape: Any) -> Iterator[ProcessBackend]:
    """A process engine of two workers started by exec."""
    backend = ProcessBackend(PoolSpec(backend="process", workers=2, start_method="exec", **shape))
    try:
        yield backend
    finally:
        backend.shutdown(wait=True, cancel_pending=True)


def run(backend: ProcessBackend, fn: Any, items: list[Any], **options: Any) -> list[Any]:
    total = len(items)
    call = MapRun(
        backend,
        fn,
        CallMode.ONE,
        InputSource(items),
        total,
        run_options(options, backend="process"),
    )
    return call.collect()


def exec_map(fn: Any, items: list[Any], **options: Any) -> tuple[list[Any], str]:
    """``fn`` over ``items`` on a pool whose workers start by exec; the results and method."""
    with exec_pool() as backend:
        return run(backend, fn, items, **options), backend.start_method


@pytest.mark.parametrize(("how", "described"), [("exit", "code 7"), ("sigkill", "SIGKILL")])
def test_a_crash_costs_one_task(sentinel: str, how: str, described: str) -> None:
    results, method = exec_map(crash_on(5, how), list(range(30)), return_exceptions=True)
    assert method == "exec"
    crashed = results[5]
    assert isinstance(crashed, workpool.WorkerCrashed)
    assert described in str(crashed)
    assert "input position 5" in str(crashed)
    assert [r for i, r in enumerate(results) if i != 5] == [x * x for x in range(30) if x != 5]


def test_a_worker_that_dies_while_another_process_holds_its_descriptors_is_noticed(
    sentinel: str, tmp_path: Path
) -> None:
    # The worker forks a process that keeps its socket and exit pipe open, then dies:
    # only its pidfd, or waitpid, can tell the pool it has ended.
    pid_file = tmp_path / "pids"
    outcome: list[tuple[list[Any], str]] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            exec_map(hold_descriptors_then_die, [str(pid_file)], return_exceptions=True)
        )
    )
    runner.start()
    try:
        runner.join(timeout=30)
        noticed = not runner.is_alive()
    finally:
        kill_holder(pid_file)  # it lets go of the descriptors: the call ends either way
        runner.join(timeout=30)
    assert noticed, "the worker's death was seen only once the process holding its pipes ended"
    [crashed], _ = outcome[0]
    assert isinstance(crashed, workpool.WorkerCrashed)
    assert "SIGKILL" in str(crashed)


def test_workers_are_fresh_interpreters_children_of_the_pool(sentinel: str) -> None:
    with exec_pool() as backend:
        pids = set(run(backend, pid_of, [None] * 40, chunksize=1))
        for pid in pids:
            worker = psutil.Process(pid)
            assert worker.ppid() == os.getpid()
            assert any("exec_worker" in part for part in worker.cmdline())


def test_hung_task_is_killed_and_its_worker_replaced(sentinel: str) -> None:
    results, _ = exec_map(
        hang_on(2), list(range(6)), task_timeout=0.5, return_exceptions=True, chunksize=1
    )
    assert isinstance(results[2], workpool.TaskTimeout)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 1, 9, 16, 25]


def test_initializer_runs_in_each_exec_worker() -> None:
    with exec_pool(initializer=remember, initargs=("ready",)) as backend:
        assert run(backend, recall, [None] * 10, chunksize=1) == ["ready"] * 10


def test_a_pool_inside_a_daemonic_threaded_process_works() -> None:
    context = multiprocessing.get_context("spawn")
    report = context.Queue()
    daemon = context.Process(target=map_with_a_crash, args=(report,), daemon=True)
    daemon.start()
    try:
        results, pids = report.get(timeout=60)
    finally:
        daemon.join(30)
    assert daemon.exitcode == 0
    assert results[:3] == [0, 1, 4] and results[4:] == [16, 25, 36, 49]
    assert "WorkerCrashed" in results[3] and "input position 3" in results[3]
    assert len(pids) == 2


def test_exec_workers_die_with_their_daemonic_parent() -> None:
    context = multiprocessing.get_context("spawn")
    report = context.Queue()
    daemon = context.Process(target=hold_workers, args=(report,), daemon=True)
    daemon.start()
    try:
        pids = report.get(timeout=60)
        workers = [psutil.Process(pid) for pid in pids]
        # No zygote can be forked from a threaded process; one started by exec is safe
        # here, and forks them.
        assert all(daemon.pid in {a.pid for a in w.parents()} for w in workers)
        assert all(w.ppid() != daemon.pid for w in workers)
    finally:
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.join(30)

    def gone(worker: psutil.Process) -> bool:
        try:
            return not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # it ended and was reaped between the two questions
            return True

    assert wait_for(lambda: all(gone(w) for w in workers), timeout=5), [
        w.pid for w in workers if not gone(w)
    ]


# A script fed on standard input that runs a thread before its first pool: no zygote
# can be forked then (an exec'd one serves), and the fork server, were it the fallback,
# would run "<stdin>" as the main module before every worker, which no file holds.
STDIN_SCRIPT = """
import threading, time
import workpool

def square(x):
    return x * x

threading.Thread(target=time.sleep, args=(1,), daemon=True).start()
print(workpool.map(square, range(5), backend="process", workers=2))
"""


def test_a_threaded_script_read_from_stdin_gets_its_workers() -> None:
    done = subprocess.run(
        [sys.executable, "-"], input=STDIN_SCRIPT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[0, 1, 4, 9, 16]"


# Ctrl+C while exec'd workers start (the script above's case): they must not die of it,
# printing tracebacks of processes the user never started; the program handles it.
CTRL_C_AT_WORKER_START = """
import json, os, signal, threading, time
import psutil
import workpool

signal.signal(signal.SIGINT, lambda *_: None)  # a handler: SIG_IGN would survive exec
threading.Thread(target=time.sleep, args=(1,), daemon=True).start()
with workpool.Pool(2, backend="process") as pool:
    deadline = time.monotonic() + 30
    while len(psutil.Process().children(recursive=True)) < 2:  # started, still starting up
        assert time.monotonic() < deadline, "no worker started"
        time.sleep(0.001)
    os.killpg(0, signal.SIGINT)  # as the terminal does
    print(json.dumps(list(pool.map(abs, [-1, -2, -3]))))
"""


def test_ctrl_c_while_exec_workers_start_is_left_to_the_program() -> None:
    done = subprocess.run(
        [sys.executable, "-"],
        input=CTRL_C_AT_WORKER_START,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # its own process group, for the killpg
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[1, 2, 3]"
    assert "KeyboardInterrupt" not in done.stderr
