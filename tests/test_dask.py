"""``backend="dask"``: the same calls, results and error semantics on a real Dask cluster.

Every cluster here is real and listens on 127.0.0.1 only: one of two single-threaded
worker processes shared by most tests, and a few started by the tests that need their
own (no address at all, a worker killed, the command-line tools, an adaptive cluster).
Each test also checks, through the suite's guard, that no process it caused is left:
the local worker processes that run tasks inside each Dask worker are descendants of
this process, like the Dask workers themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import importlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

distributed = pytest.importorskip(
    "distributed", reason="Dask is not installed here (pip install 'workpool[dask]')"
)

import workpool  # noqa: E402
from cluster_tasks import (  # noqa: E402
    FailOnOneElseWaitLong,
    Rendezvous,
    WaitLong,
    array_sum_plus,
    dask_worker_pid,
    interval,
    keep_idle_pools_for,
    local_processes,
    ones,
    process_and_parent,
    scribble,
    token,
    waiters_gone,
    waiting,
)
from conftest import (  # noqa: E402
    checked_by_their_fixture,
    group_members,
    live_worker_processes,
    wait_for,
)
from faults import crash_first_try, crash_on, fail_first_try, hang_on, sleep_then_pid  # noqa: E402
from helpers import (  # noqa: E402
    ArrayStream,
    broken_initializer,
    cube_or_parity,
    fail_on,
    first_value,
    hold,
    raise_pool_error,
    recall,
    remember,
    slow_square,
    square,
    where,
)
from trace_checks import (  # noqa: E402
    assert_each_position_once,
    assert_well_formed,
    instants,
    read_trace,
    spans,
    track_names,
)


def start_cluster(workers: int = 2, **options: Any) -> tuple[Any, Any]:
    """A LocalCluster of single-threaded worker processes on loopback, and a client."""
    from workpool.backends.dask.cluster import loopback_cluster_options

    options.setdefault("preload", ["cluster_tasks"])  # its dask_setup
    cluster = distributed.LocalCluster(n_workers=workers, **loopback_cluster_options(), **options)
    assert_listening_on_loopback_only([psutil.Process()])  # its scheduler, and workers below
    return cluster, distributed.Client(cluster, set_as_default=False)


def assert_listening_on_loopback_only(processes: list[Any]) -> None:
    """None of ``processes`` (with their children) takes connections from beyond this machine."""
    found = [psutil.Process(p.pid) for p in processes]
    found += [child for process in list(found) for child in process.children(recursive=True)]
    listening = [
        (process.pid, connection.laddr)
        for process in found
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    ]
    assert listening, "the cluster listens nowhere: the check looked at the wrong processes"
    wide = [(pid, address) for pid, address in listening if address.ip not in ("127.0.0.1", "::1")]
    assert not wide, f"listening beyond loopback: {wide}"


def stop_cluster(cluster: Any, client: Any, before: set[int]) -> None:
    client.close()
    cluster.close()
    leftover: list[int] = []

    def gone() -> bool:
        nonlocal leftover
        leftover = [p.pid for p in live_worker_processes() if p.pid not in before]
        return not leftover

    assert wait_for(gone, timeout=15), f"processes left after the cluster closed: {leftover}"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A client of a two-worker cluster shared by the module; checked for leftovers.

    Its workers keep local pools from one test to the next: those processes are
    checked here, once the cluster has closed, rather than after each test.
    """
    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster()
    checked_by_their_fixture.append(cluster_workers := lambda: current_worker_pids(cluster))
    try:
        yield client
    finally:
        checked_by_their_fixture.remove(cluster_workers)
        stop_cluster(cluster, client, before)


def current_worker_pids(cluster: Any) -> set[int]:
    """The pids of the worker processes ``cluster``'s nannies run now (read, not asked)."""
    return {nanny.pid for nanny in list(cluster.workers.values()) if nanny.pid is not None}


@pytest.fixture(autouse=True)
def shared_workers_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test during which a worker of the module's cluster died.

    No test here kills one: a worker that dies is a crash (its stack is in the captured
    stderr: the workers print it, ``cluster_tasks.dask_setup``). Its nanny starts
    another, which the later tests use as they did the first.
    """
    if "client" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("client").cluster
    before = current_worker_pids(cluster)
    yield
    died = {pid for pid in before if not running(pid)}
    assert not died, (
        f"the module's Dask worker(s) {sorted(died)} died during this test; "
        f"the cluster's workers are now {sorted(current_worker_pids(cluster))}"
    )


def worker_pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def workpool_tasks(client: Any) -> list[str]:
    """Keys of workpool's tasks the scheduler still knows."""

    def ours(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("workpool-")]

    return list(client.run_on_scheduler(ours))


# --- results -------------------------------------------------------------------------


def test_results_in_input_order_and_as_they_finish(client: Any) -> None:
    assert workpool.map(square, range(500), backend="dask", address=client) == [
        x * x for x in range(500)
    ]
    unordered = workpool.imap(square, range(300), backend="dask", address=client, ordered=False)
    assert sorted(unordered) == [x * x for x in range(300)]
    assert workpool.starmap(pow, [(2, 3), (3, 2)], backend="dask", address=client) == [8, 9]
    assert workpool.map(lambda x: x + 1, [1, 2], backend="dask", address=client) == [2, 3]
    mixed = workpool.map(cube_or_parity, range(-300, 700), backend="dask", address=client)
    assert mixed == [cube_or_parity(x) for x in range(-300, 700)]
    assert [type(r) for r in mixed] == [type(cube_or_parity(x)) for x in range(-300, 700)]


def test_identical_inputs_are_never_merged(client: Any) -> None:
    tokens = workpool.map(token, [1] * 100, backend="dask", address=client, chunksize=1)
    assert len(set(tokens)) == 100


def test_an_exception_keeps_its_type_traceback_and_position(client: Any) -> None:
    with pytest.raises(ValueError, match="bad input 7") as caught:
        workpool.map(fail_on(7), range(20), backend="dask", address=client)
    error = caught.value
    assert isinstance(error.__cause__, workpool.RemoteTraceback)
    assert "in check" in error.__cause__.traceback_text  # the task's own frame
    notes = " ".join(getattr(error, "__notes__", []))
    assert "input position 7" in notes and "Dask worker tcp://127.0.0.1:" in notes
    results = workpool.map(
        fail_on(7), range(20), backend="dask", address=client, return_exceptions=True
    )
    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [x * x for x in range(20) if x != 7]


def test_arguments_of_a_class_defined_in_main_travel_by_value(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script's or a notebook's own class: plain pickle names it ``__main__.<name>``,
    # which no Dask worker can look up (their ``__main__`` is Dask's own).
    name = f"Point_{uuid.uuid4().hex}"
    point = type(name, (), {"__module__": "__main__", "__qualname__": name})
    monkeypatch.setattr(sys.modules["__main__"], name, point, raising=False)
    items = [point() for _ in range(3)]
    for k, item in enumerate(items):
        item.x = k
    assert workpool.map(vars, items, backend="dask", address=client) == [{"x": k} for k in range(3)]
    with workpool.Pool(backend="dask", address=client) as pool:
        assert pool.submit(vars, items[2]).result(timeout=60) == {"x": 2}


def test_objects_of_a_slotted_class_defined_in_main_travel_there_and_back(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cloudpickle alone rebuilds such a class on the worker without its slots.
    name = f"Slotted_{uuid.uuid4().hex}"
    slotted = type(name, (), {"__module__": "__main__", "__qualname__": name, "__slots__": ("x",)})
    monkeypatch.setattr(sys.modules["__main__"], name, slotted, raising=False)
    items = [slotted() for _ in range(3)]
    for k, item in enumerate(items):
        item.x = k
    back = workpool.map(copy.copy, items, backend="dask", address=client)
    assert [(type(item), item.x) for item in back] == [(slotted, k) for k in range(3)]


def test_a_function_the_workers_cannot_import_is_named_as_the_cause(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module next to the script, on this process's path but not on the cluster's.
    name = f"only_here_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    double = importlib.import_module(name).double
    with pytest.raises(ModuleNotFoundError, match=name) as caught:
        workpool.map(double, [1], backend="dask", address=client)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "the function could not be rebuilt on the Dask worker" in notes
    assert "input position 0" in notes


# --- faults --------------------------------------------------------------------------


def test_a_poison_item_fails_alone_and_no_dask_worker_restarts(client: Any) -> None:
    pids = worker_pids(client)
    results = workpool.map(
        crash_on(500), range(1000), backend="dask", address=client, return_exceptions=True
    )
    crashed = results[500]
    assert isinstance(crashed, workpool.WorkerCrashed)
    assert "input position 500" in str(crashed) and "exited with code 7" in str(crashed)
    assert [r for i, r in enumerate(results) if i != 500] == [
        x * x for x in range(1000) if x != 500
    ]
    assert worker_pids(client) == pids  # the same Dask worker processes, all still there


def test_a_submitted_task_that_fails_its_worker_is_named_by_its_function(client: Any) -> None:
    # As on one machine: the function's name, not the wrapper it travels in.
    with workpool.Pool(backend="dask", address=client, task_timeout=1.0) as pool:
        crashed = pool.submit(crash_on(1), 1).exception(timeout=60)
        timed_out = pool.submit(sleep_then_pid, 30).exception(timeout=60)
    assert isinstance(crashed, workpool.WorkerCrashed)
    assert "while running the task crash_on.<locals>.task(...)" in str(crashed)
    assert isinstance(timed_out, workpool.TaskTimeout)
    assert "the task sleep_then_pid(...) ran longer" in str(timed_out)


def test_a_hung_item_times_out_and_the_rest_finish(client: Any) -> None:
    results = workpool.map(
        hang_on(3),
        range(8),
        backend="dask",
        address=client,
        task_timeout=1.0,
        chunksize=1,
        return_exceptions=True,
    )
    assert isinstance(results[3], workpool.TaskTimeout)
    assert [r for i, r in enumerate(results) if i != 3] == [x * x for x in range(8) if x != 3]


def test_retries_recover_exceptions_and_crashes(client: Any, tmp_path: Path) -> None:
    flaky = fail_first_try(tmp_path)
    assert workpool.map(flaky, range(10), backend="dask", address=client, retries=1) == [
        x * x for x in range(10)
    ]
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    dying = crash_first_try(crashes, every=10)
    assert workpool.map(dying, range(30), backend="dask", address=client, retries=1) == [
        x * x for x in range(30)
    ]


def test_a_dask_worker_killed_mid_run_loses_nothing() -> None:
    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster()
    try:
        victim = next(iter(worker_pids(client).values()))
        seen: list[int] = []
        results = workpool.imap(
            slow_square, range(120), backend="dask", address=client, ordered=False, chunksize=2
        )
        for value in results:
            seen.append(value)
            if len(seen) == 20:
                os.kill(victim, signal.SIGKILL)
        assert sorted(seen) == [x * x for x in range(120)]  # every result, exactly once
    finally:
        stop_cluster(cluster, client, before)


@pytest.fixture
def restartable() -> Iterator[tuple[Any, Callable[[int], float]]]:
    """A cluster of the test's own, to restart, its client, and a function that pickles
    large (a closure over 800 kB), which a pool scatters once rather than per task."""
    numpy = pytest.importorskip("numpy")
    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster()
    table = numpy.arange(100_000.0)

    def look_up(x: int) -> float:
        return float(table[x])

    try:
        yield client, look_up
    finally:
        stop_cluster(cluster, client, before)


def test_a_pool_outlives_a_restart_of_its_cluster(
    restartable: tuple[Any, Callable[[int], float]],
) -> None:
    """``client.restart()`` fails the calls it interrupts, as Dask does, not the pool."""
    client, look_up = restartable
    with workpool.Pool(backend="dask", address=client) as pool:
        assert list(pool.map(look_up, range(4))) == [0.0, 1.0, 2.0, 3.0]
        restart_or_skip(client)
        assert list(pool.map(look_up, range(4))) == [0.0, 1.0, 2.0, 3.0]
        results = pool.imap(slow_square, range(200), chunksize=1)
        assert next(results) == 0
        restart_or_skip(client)
        with pytest.raises(concurrent.futures.CancelledError, match="restart"):
            list(results)
        assert list(pool.map(look_up, range(4))) == [0.0, 1.0, 2.0, 3.0]


def test_a_scattered_function_lost_before_the_client_hears_of_it_is_sent_again(
    restartable: tuple[Any, Callable[[int], float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call after a restart can reach the scheduler before the news reaches the client.

    The client then still takes its scattered copy of a large function for held, and
    Dask cancels the task that refers to it for "lost dependencies". Here the client
    never hears (as when the call wins that race): the chunk must go again with the
    function scattered anew, not fail.
    """
    from workpool.backends.dask import engine

    monkeypatch.setattr(engine, "_still_held", lambda copy: True)
    client, look_up = restartable
    with workpool.Pool(backend="dask", address=client) as pool:
        assert list(pool.map(look_up, range(4))) == [0.0, 1.0, 2.0, 3.0]
        restart_or_skip(client)
        assert list(pool.map(look_up, range(4))) == [0.0, 1.0, 2.0, 3.0]
        restart_or_skip(client)
        assert pool.submit(look_up, 5).result(timeout=60) == 5.0


def test_a_task_whose_scattered_function_is_lost_with_every_worker_is_sent_again() -> None:
    """The only workers holding a large function's copy die while a task waits for it.

    Dask forgets the task with the copy ("already forgotten"), as it forgets the
    dependents of any scattered data it loses: nothing of the chunk ran, and the
    worker's nanny starts another, so the chunk must go again, not fail.
    """
    numpy = pytest.importorskip("numpy")
    table = numpy.arange(100_000.0)

    def look_up(x: int) -> float:
        return float(table[x])

    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster(workers=1)
    try:
        with workpool.Pool(backend="dask", address=client) as pool:
            assert pool.submit(look_up, 1).result(timeout=60) == 1.0  # the copy is there now
            (victim,) = worker_pids(client).values()
            # The worker's one thread is taken: the next task waits there, by the copy.
            blocker = client.submit(time.sleep, 60, pure=False)
            assert wait_for(lambda: bool(client.processing()[next(iter(client.nthreads()))]))
            waiting_task = pool.submit(look_up, 5)
            assert wait_for(lambda: len(client.processing()[next(iter(client.nthreads()))]) == 2)
            os.kill(victim, signal.SIGKILL)
            client.cancel(blocker)
            assert waiting_task.result(timeout=60) == 5.0
    finally:
        stop_cluster(cluster, client, before)


@contextlib.contextmanager
def a_worker_dies_as_data_is_scattered(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Kill a Dask worker just after the next scatter has handed its data to another.

    The scheduler of ``start_cluster``'s clusters runs in this process: the scatter's
    first step on it (``scatter_to_workers``) is wrapped here, once.
    """
    scheduler_module = importlib.import_module("distributed.scheduler")
    scatter_to_workers = scheduler_module.scatter_to_workers
    pids = worker_pids(client)
    done = threading.Event()

    async def and_kill(workers: list[str], data: dict[str, Any], **kwargs: Any) -> Any:
        if done.is_set():
            return await scatter_to_workers(workers, data, **kwargs)
        done.set()
        sent = await scatter_to_workers(workers, data, **kwargs)
        others = [address for address in workers if address not in sent[1][sent[0][0]]]
        os.kill(pids[others[0]], signal.SIGKILL)
        return sent

    monkeypatch.setattr(scheduler_module, "scatter_to_workers", and_kill)
    yield
    assert done.is_set(), "nothing was scattered"


def test_a_worker_lost_while_an_array_is_scattered_does_not_hang_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sent to every worker (scatter(broadcast=True)), the array was copied to the others
    # by the scheduler, which retries a worker lost meanwhile forever (Dask #5704), every
    # 30 s, holding a lock that every later broadcast and retire_workers waits for.
    numpy = pytest.importorskip("numpy")
    big = numpy.ones(1 << 18)  # 2 MiB: scattered
    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster()
    try:
        with (
            a_worker_dies_as_data_is_scattered(client, monkeypatch),
            workpool.Pool(backend="dask", address=client) as pool,
        ):
            future = pool.submit(array_sum_plus, big, 1)
            assert future.result(timeout=60) == float(1 << 18) + 1
    finally:
        stop_cluster(cluster, client, before)


def restart_or_skip(client: Any) -> None:
    """``client.restart()``, or skip the test when Dask's restart loses a worker for good.

    Under load a nanny restarting a busy worker can close instead, and no worker comes
    back (dask/distributed#7312, open): the cluster is gone, not the pool, and the
    default wait for it is the test's whole time limit.
    """
    try:
        client.restart(timeout=30)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        pytest.skip(f"Dask's restart did not bring its workers back (distributed#7312): {exc}")


# --- laziness and cancellation -------------------------------------------------------


def test_imap_reads_an_endless_generator_lazily(client: Any) -> None:
    results = workpool.imap(square, itertools.count(), backend="dask", address=client)
    assert list(itertools.islice(results, 2000)) == [x * x for x in range(2000)]
    results.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["one-shot", "pool"])
def test_closing_an_imap_early_cancels_its_tasks_on_the_scheduler(
    client: Any, where: str, tmp_path: Path
) -> None:
    wait_long = WaitLong(tmp_path)
    with workpool.Pool(backend="dask", address=client) as pool:
        if where == "pool":
            results = pool.imap(wait_long, itertools.count(), chunksize=1, ordered=False)
        else:
            results = workpool.imap(
                wait_long, itertools.count(), backend="dask", address=client, chunksize=1
            )
        first = next(results)  # the call runs
        if where == "one-shot":  # in input order (unordered: item 0 may come after others)
            assert first == 0
        assert workpool_tasks(client)  # the window is full of ten-second tasks
        # Some of them are running in a node's local processes at the close. (Not
        # necessarily the first ones: if item 0's node is slow to start it, later items
        # may have waited their ten seconds by then, in processes now idle and kept.)
        assert wait_for(lambda: bool(waiting(tmp_path)), timeout=30)
        results.close()  # type: ignore[attr-defined]
        # Each task takes ten seconds: only a cancellation clears them this fast.
        assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)
    # The local processes running them were stopped (their pool is not kept).
    assert wait_for(lambda: waiters_gone(tmp_path), timeout=5), waiting(tmp_path)
    assert workpool.map(square, range(10), backend="dask", address=client) == [
        x * x for x in range(10)
    ]  # and the workers are free again


def test_a_failure_cancels_the_calls_other_tasks(client: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad input 1"):
        workpool.map(FailOnOneElseWaitLong(tmp_path), range(60), backend="dask", address=client)
    assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)
    assert any(tmp_path.iterdir())  # item 1 failed only once another task was running
    assert wait_for(lambda: waiters_gone(tmp_path), timeout=5), waiting(tmp_path)
    assert workpool.map(square, range(10), backend="dask", address=client) == [
        x * x for x in range(10)
    ]


def test_ctrl_c_in_the_caller_cancels_its_tasks_on_the_scheduler(
    client: Any, tmp_path: Path
) -> None:
    program = textwrap.dedent(
        f"""
        import itertools, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import workpool
        from cluster_tasks import WaitLong

        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
        results = workpool.imap(WaitLong({str(tmp_path)!r}), itertools.count(), backend="dask",
                                address={client.scheduler.address!r}, chunksize=1)
        print(next(results), flush=True)
        next(results)
        """
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline().strip() == "0"
        assert workpool_tasks(client)
        assert wait_for(lambda: bool(waiting(tmp_path)), timeout=30)  # some are running
        os.killpg(caller.pid, signal.SIGINT)
        _, err = caller.communicate(timeout=30)
    finally:
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
    assert "KeyboardInterrupt" in err
    assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)
    # The tasks that were running stopped too: their local processes are gone.
    assert wait_for(lambda: waiters_gone(tmp_path), timeout=5), waiting(tmp_path)


def run_program(program: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` in a fresh interpreter that can import the tests' modules."""
    here = str(Path(__file__).resolve().parent)
    program = f"import sys; sys.path.insert(0, {here!r})\n" + textwrap.dedent(program)
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["address", "local cluster"])
def test_work_given_before_shutdown_without_waiting_is_done_at_exit(
    client: Any, tmp_path: Path, where: str
) -> None:
    # As concurrent.futures promises: shutdown(wait=False) means "finish, without me".
    cluster = f"address={client.scheduler.address!r}" if where == "address" else "workers=1"
    done = run_program(
        f"""
        import workpool
        from cluster_tasks import MarkDone

        pool = workpool.Pool(backend="dask", {cluster})
        for x in range(24):
            pool.submit(MarkDone({str(tmp_path)!r}), x)
        pool.shutdown(wait=False)
        """
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"done-{x}" for x in range(24))
    assert done.stderr == ""


@pytest.mark.parametrize("where", ["address", "local cluster"])
def test_a_pool_still_open_at_exit_finishes_its_work(
    client: Any, tmp_path: Path, where: str
) -> None:
    # A Pool is an Executor: left open, it still does the work it was given.
    cluster = f"address={client.scheduler.address!r}" if where == "address" else "workers=1"
    done = run_program(
        f"""
        import workpool
        from cluster_tasks import MarkDone

        pool = workpool.Pool(backend="dask", {cluster})
        for x in range(6):
            pool.submit(MarkDone({str(tmp_path)!r}), x)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sorted(p.name for p in tmp_path.glob("done-*")) == [f"done-{x}" for x in range(6)]
    assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)


@pytest.mark.parametrize("where", ["address", "local cluster"])
def test_an_imap_left_unread_at_exit_cancels_its_tasks_quietly(
    client: Any, tmp_path: Path, where: str
) -> None:
    # Nobody can read its results any more: its tasks (10 s each) are cancelled.
    cluster = f"address={client.scheduler.address!r}" if where == "address" else "workers=1"
    done = run_program(
        f"""
        import workpool
        from cluster_tasks import WaitLong

        left_unread = workpool.imap(WaitLong({str(tmp_path)!r}), range(12), backend="dask",
                                    {cluster}, chunksize=1)
        print(next(left_unread), flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]
    assert done.stderr == ""
    assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)
    assert wait_for(lambda: waiters_gone(tmp_path), timeout=5), waiting(tmp_path)
    assert not list(tmp_path.glob("waited-*"))  # no waiting task ran to its end


def test_ctrl_c_in_a_terminal_stops_the_call_and_the_local_cluster_quietly(
    tmp_path: Path,
) -> None:
    # A terminal's Ctrl+C reaches its whole process group, the local cluster's worker
    # processes included. It lands while the caller waits for a result that is ten
    # seconds away: the caller gets the KeyboardInterrupt there, the running tasks are
    # stopped rather than waited for, no process of the group is left, and nothing but
    # the caller's own traceback is printed (no worker's, no Dask log line).
    program = textwrap.dedent(
        f"""
        import signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import logging
        import workpool
        from cluster_tasks import WaitLong

        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal

        class Warnings(logging.Handler):  # what Dask's nannies warn of, on stdout
            def emit(self, record):
                print(record.getMessage(), flush=True)

        logging.getLogger("distributed.nanny").addHandler(Warnings(logging.WARNING))
        results = workpool.imap(WaitLong({str(tmp_path)!r}), range(1000), backend="dask",
                                workers=2, chunksize=1)
        print(next(results), flush=True)
        next(results)
        print("not interrupted", flush=True)
        """
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives
    )
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline().strip() == "0"
        assert wait_for(lambda: waiting(tmp_path), timeout=30)  # the next tasks run
        os.killpg(caller.pid, signal.SIGINT)
        out, err = caller.communicate(timeout=60)
        assert wait_for(lambda: not group_members(caller.pid), timeout=15), group_members(
            caller.pid
        )
    finally:
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
    assert caller.returncode == -signal.SIGINT, err  # the KeyboardInterrupt ended it
    # Not "Worker process still alive after 4.0 seconds, killing": the running tasks
    # were stopped at once, not waited for until the nannies gave up on them.
    assert out == ""
    noise = [line for line in err.splitlines() if not line.startswith(("Traceback", "  "))]
    assert noise == ["KeyboardInterrupt"], err
    assert not list(tmp_path.glob("waited-*"))  # no running task ran to its end


def test_ctrl_c_while_the_local_cluster_starts_leaves_nothing_and_prints_nothing(
    tmp_path: Path,
) -> None:
    # The cluster workpool starts for a call takes a second: a Ctrl+C then is common.
    # Its workers are held up in their start (``slow_start``) until the signal is sent.
    program = textwrap.dedent(
        f"""
        import signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import workpool
        from helpers import square

        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
        workpool.map(square, range(10), backend="dask", workers=2)
        print("not interrupted", flush=True)
        """
    )
    env = {
        **os.environ,
        "DASK_DISTRIBUTED__WORKER__PRELOAD": '["slow_start"]',
        "WORKPOOL_TEST_STARTING": str(tmp_path),
    }
    caller = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("starting-*"))) == 2, timeout=60)
        os.killpg(caller.pid, signal.SIGINT)
        out, err = caller.communicate(timeout=60)
        assert wait_for(lambda: not group_members(caller.pid), timeout=15), group_members(
            caller.pid
        )
    finally:
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
    assert caller.returncode == -signal.SIGINT, err
    assert out == ""
    noise = [line for line in err.splitlines() if not line.startswith(("Traceback", "  "))]
    assert noise == ["KeyboardInterrupt"], err


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_caps_the_chunks_in_flight_on_a_given_cluster(client: Any) -> None:
    spans = workpool.map(
        interval, [0.05] * 12, backend="dask", address=client, workers=1, chunksize=1
    )
    spans.sort()
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


def test_no_input_starts_no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on one machine, no input is no results; here without a second's cluster start.
    from workpool.backends.dask import engine

    def refuse(*args: Any) -> None:
        raise AssertionError("a cluster was looked for, for no input at all")

    monkeypatch.setattr(engine, "connect", refuse)
    assert workpool.map(square, [], backend="dask") == []
    assert workpool.map(square, iter([]), backend="dask") == []
    assert workpool.starmap(pow, [], backend="dask") == []
    results = workpool.imap(square, (x for x in []), backend="dask")
    assert iter(results) is results
    assert list(results) == []


def test_an_adaptive_cluster_that_starts_empty_gets_the_work_done() -> None:
    before = {p.pid for p in live_worker_processes()}
    cluster, client = start_cluster(workers=0)
    try:
        cluster.adapt(minimum=0, maximum=2, interval="200ms", wait_count=1)
        # Waiting for workers to join is right here, and silent would look like a hang
        # where none will ever join (a scheduler whose workers were never started).
        with pytest.warns(RuntimeWarning, match="has no workers: .* wait until one joins"):
            results = workpool.map(square, range(100), backend="dask", address=client)
        assert results == [x * x for x in range(100)]
    finally:
        stop_cluster(cluster, client, before)


def test_a_cluster_without_workers_fails_a_call_only_as_dask_is_told_to() -> None:
    # Dask waits for workers to join (an adaptive cluster starts with none), unless
    # its scheduler's no-workers-timeout says otherwise: then the tasks fail, and the
    # error says why, not that workpool may be missing on the workers.
    import dask

    before = {p.pid for p in live_worker_processes()}
    with dask.config.set({"distributed.scheduler.no-workers-timeout": "200ms"}):
        cluster, client = start_cluster(workers=0)
    try:
        with (
            pytest.raises(distributed.scheduler.NoWorkerError) as caught,
            pytest.warns(RuntimeWarning, match="has no workers"),
        ):
            workpool.map(square, range(3), backend="dask", address=client)
        notes = "\n".join(getattr(caught.value, "__notes__", []))
        assert "installed" not in notes
        assert "no worker" in notes and "no-workers-timeout" in notes
    finally:
        stop_cluster(cluster, client, before)


# --- the pool ------------------------------------------------------------------------


def test_pool_is_an_executor_on_the_cluster(client: Any) -> None:
    with workpool.Pool(backend="dask", address=client, initializer=remember, initargs=(5,)) as pool:
        assert pool.backend == "dask"
        assert pool.submit(square, 12).result(timeout=60) == 144
        futures = [pool.submit(pow, 2, k) for k in range(10)]
        done = [f.result(timeout=60) for f in concurrent.futures.as_completed(futures)]
        assert sorted(done) == [2**k for k in range(10)]
        assert list(pool.map(square, range(50))) == [x * x for x in range(50)]
        assert set(pool.imap(recall, range(10))) == {5}  # the initializer ran where tasks run
        failed = pool.submit(fail_on(3), 3)
        assert isinstance(failed.exception(timeout=60), ValueError)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(square, 1)


def test_pool_futures_not_yet_sent_to_the_cluster_can_be_cancelled(client: Any) -> None:
    # Two Dask threads: sixteen tasks go to the cluster; the other futures wait here.
    pool = workpool.Pool(backend="dask", address=client)
    futures = [pool.submit(slow_square, i, 0.1) for i in range(50)]
    assert futures[-1].cancel()
    pool.shutdown(wait=True, cancel_futures=True)
    assert sum(f.cancelled() for f in futures) >= 30
    assert all(f.result() == i * i for i, f in enumerate(futures) if not f.cancelled())
    assert not concurrent.futures.wait(futures, timeout=10).not_done  # told, not just marked
    with workpool.Pool(backend="dask", address=client) as pool:  # without cancel_futures
        futures = [pool.submit(slow_square, i, 0.01) for i in range(20)]
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(20)]


def test_a_done_callback_that_shuts_the_pool_down_does_not_wait_for_itself(
    client: Any,
) -> None:
    # As on the local backends: the callback runs in the thread that delivers results,
    # which shutdown(wait=True) would otherwise wait for (for ever).
    pool = workpool.Pool(backend="dask", address=client)
    returned = threading.Event()

    def shut_down(_: concurrent.futures.Future[int]) -> None:
        pool.shutdown(wait=True)
        returned.set()

    future = pool.submit(slow_square, 3, 0.2)
    later = pool.submit(square, 4)
    future.add_done_callback(shut_down)
    try:
        assert returned.wait(timeout=30)
        assert future.result(timeout=0) == 9
        assert later.result(timeout=30) == 16
    finally:
        pool.terminate()


def test_calls_cancelled_by_one_shutdown_each_get_an_exception_of_their_own(
    client: Any,
) -> None:
    # As on the local backends (test_pool): one object raised in two callers' threads
    # would carry both tracebacks. The slow futures fill the window; the maps wait here.
    pool = workpool.Pool(backend="dask", address=client)
    slow = [pool.submit(slow_square, i, 0.1) for i in range(20)]
    calls = [pool.map(square, range(3)), pool.map(square, range(3))]
    pool.shutdown(wait=True, cancel_futures=True)
    errors = []
    for results in calls:
        with pytest.raises(concurrent.futures.CancelledError) as caught:
            list(results)
        errors.append(caught.value)
    assert errors[0] is not errors[1]
    assert all(f.result() == i * i for i, f in enumerate(slow) if not f.cancelled())


def test_a_failing_initializer_breaks_the_pool_quickly(client: Any) -> None:
    with pytest.raises(workpool.BrokenPool, match="initializer says no") as info:
        workpool.map(
            square, range(10), backend="dask", address=client, initializer=broken_initializer
        )
    # As on a local pool: the initializer's own error is the cause, with its traceback.
    cause = info.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "initializer says no"
    assert "broken_initializer" in str(cause.__cause__)
    with workpool.Pool(backend="dask", address=client, max_tasks_per_worker=3) as pool:
        processes = {pid for pid, _ in pool.map(where, range(30), chunksize=1)}
    assert len(processes) >= 10  # each local process retired after three tasks


def test_a_task_raising_broken_pool_fails_alone(client: Any) -> None:
    # A task's own BrokenPool (from a workpool pool it uses) is its failure: the pool
    # that ran it goes on, on the node and here.
    task = functools.partial(raise_pool_error, "broken")
    with workpool.Pool(backend="dask", address=client) as pool:
        results = list(pool.map(task, range(6), chunksize=1, return_exceptions=True))
        assert results[:3] + results[4:] == [0, 1, 2, 4, 5]
        assert type(results[3]) is workpool.BrokenPool
        assert list(pool.map(square, range(3))) == [0, 1, 4]
        assert "input position 3" in results[3].__notes__[-1]


def test_large_arrays_reach_each_node_once_and_are_released(client: Any) -> None:
    numpy = pytest.importorskip("numpy")
    big = numpy.ones(1_000_000)  # 8 MB
    with workpool.Pool(backend="dask", address=client) as pool:
        results = pool.imap(array_sum_plus, [big] * 40, range(40), chunksize=1)
        assert next(results) == 1_000_000.0

        def big_keys(dask_scheduler: Any) -> list[int]:
            """How many workers hold each key of 4 MB or more."""
            return [
                len(ts.who_has) for ts in dask_scheduler.tasks.values() if ts.nbytes > 4_000_000
            ]

        # One copy of the array for the call's 40 tasks, held by the workers (Dask may
        # keep it on one of them only, and let the other fetch it from there).
        holders = client.run_on_scheduler(big_keys)
        assert len(holders) == 1 and holders[0] >= 1
        assert list(results) == [1_000_000.0 + k for k in range(1, 40)]
        assert wait_for(lambda: client.run_on_scheduler(big_keys) == [], timeout=5)


def test_large_arrays_of_an_endless_input_are_let_go_once_their_tasks_are_done(
    client: Any,
) -> None:
    pytest.importorskip("numpy")
    arrays = ArrayStream(1000)  # 8 KB each: over the threshold below

    def scattered(dask_scheduler: Any) -> int:
        return sum(1 for ts in dask_scheduler.tasks.values() if ts.nbytes >= 8000)

    results = workpool.imap(
        first_value,
        arrays,
        backend="dask",
        address=client,
        share_threshold=4096,
        chunksize=1,
    )
    try:
        for i, result in zip(range(150), results):
            assert result == i
        # Neither this process nor the cluster holds them all until the call ends.
        assert wait_for(lambda: arrays.alive(among_first=100) == 0, timeout=10)
        assert wait_for(lambda: client.run_on_scheduler(scattered) <= 50, timeout=10)
    finally:
        results.close()


def test_cheap_tasks_over_an_endless_input_of_arrays_do_not_read_far_ahead(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("numpy")
    # Chunks sized by time alone grow to thousands of such items (Dask's chunks take a
    # tenth of a second), all held here and, scattered, on the cluster.
    monkeypatch.setattr("workpool.chunking.MAX_CHUNK_BYTES", 128 * 1024)
    arrays = ArrayStream(1000)  # 8 KB each: 16 of them to a chunk
    most_held = 0
    results = workpool.imap(
        first_value, arrays, backend="dask", address=client, share_threshold=4096
    )
    try:
        for i, result in zip(range(1500), results):
            assert result == i
            if i % 100 == 0:
                most_held = max(most_held, arrays.alive())
    finally:
        results.close()
    assert most_held < 500


def test_a_function_holding_a_large_object_reaches_the_cluster_once(client: Any) -> None:
    blob = b"x" * 12_000_000  # over Dask's 10 MB "large graph" warning

    def big_keys(dask_scheduler: Any) -> list[int]:
        return [ts.nbytes for ts in dask_scheduler.tasks.values() if ts.nbytes > 10_000_000]

    with workpool.Pool(backend="dask", address=client) as pool, warnings.catch_warnings():
        warnings.simplefilter("error")  # sent with each of 12 tasks, it warned 12 times
        results = pool.imap(lambda i: len(blob) + i, range(12), chunksize=1)
        assert next(results) == 12_000_000
        assert len(client.run_on_scheduler(big_keys)) == 1  # one scattered copy
        assert list(results) == [12_000_000 + i for i in range(1, 12)]
    assert wait_for(lambda: client.run_on_scheduler(big_keys) == [], timeout=5)


def test_arrays_shared_writable_are_refused(client: Any) -> None:
    numpy = pytest.importorskip("numpy")
    shared = workpool.share(numpy.zeros(10), writable=True)
    with pytest.raises(ValueError, match=r"share\(writable=True\)") as refused:
        workpool.map(scribble, [shared], backend="dask", address=client)
    assert isinstance(refused.value, workpool.WorkpoolError)
    # A process worker's big result comes back in shared memory too, but it is the
    # caller's own array now: it goes to the cluster like any other.
    [made] = workpool.map(ones, [500_000], backend="process", workers=1)
    assert workpool.map(array_sum_plus, [made], [1], backend="dask", address=client) == [500_001.0]


def test_arrays_shared_read_only_stay_read_only_on_the_cluster(client: Any) -> None:
    # As on processes: an array from share() is read-only in the workers, whatever its
    # size or share_threshold; a task that writes into it fails there as here, rather
    # than writing into a copy whose change is lost.
    numpy = pytest.importorskip("numpy")
    shared = workpool.share(numpy.zeros(10))
    for options in ({}, {"share_threshold": None}):
        with pytest.raises(ValueError, match="read-only"):
            workpool.map(scribble, [shared], backend="dask", address=client, **options)
    assert workpool.map(scribble, [numpy.zeros(10)], backend="dask", address=client) == [None]
    assert not shared.any()


# --- the local pools on the nodes ---------------------------------------------------


def test_local_pools_are_kept_for_the_next_call_with_the_same_settings(client: Any) -> None:
    def ran_in(**options: Any) -> set[tuple[int, int]]:
        return set(
            workpool.map(
                process_and_parent,
                range(20),
                backend="dask",
                address=client,
                chunksize=1,
                **options,
            )
        )

    plain = set().union(*(ran_in() for _ in range(4)))
    # One thread per Dask worker: one local process each, the same from call to call.
    parents = [parent for _, parent in plain]
    assert len(parents) == len(set(parents)) and set(parents) <= set(worker_pids(client).values())
    # Other settings, other processes: an initializer never runs in a pool without one.
    initialized = ran_in(initializer=remember, initargs=(1,))
    assert not initialized & plain


def test_an_idle_local_pool_is_stopped_after_a_while(client: Any) -> None:
    kept = client.run(keep_idle_pools_for, 0.2)
    try:
        assert workpool.map(square, range(10), backend="dask", address=client) == [
            x * x for x in range(10)
        ]
        assert wait_for(lambda: not any(client.run(local_processes).values()), timeout=10)
    finally:
        client.run(keep_idle_pools_for, next(iter(kept.values())))


def test_dask_workers_in_one_process_each_run_their_own_chunks(tmp_path: Path) -> None:
    # LocalCluster(processes=False), as notebooks use: both Dask workers (one thread
    # each) live in this process. Each runs its chunk in a local process of its own,
    # at the same time as the other's.
    before = {p.pid for p in live_worker_processes()}
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        # Every HTTP server (health, metrics) on loopback: by default the scheduler's
        # takes *:8787 and each worker's a free port on every interface.
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        worker_dashboard_address="127.0.0.1:0",
    )
    client = distributed.Client(cluster, set_as_default=False)
    assert_listening_on_loopback_only([psutil.Process()])
    try:
        met = workpool.map(
            Rendezvous(tmp_path, 2), range(2), backend="dask", address=client, chunksize=1
        )
    finally:
        stop_cluster(cluster, client, before)
    assert met == [2, 2]


# --- timelines ------------------------------------------------------------------------


def chunk_tracks(data: dict[str, Any]) -> set[tuple[str, str]]:
    """(group, track) names of the tracks that hold chunk spans."""
    groups = {
        e["pid"]: e["args"]["name"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    }
    names = track_names(data)
    return {(groups[s["pid"]], names[(s["pid"], s["tid"])]) for s in spans(data, "chunk")}


@pytest.mark.parametrize("how", ["map", "Pool.imap"])
def test_a_trace_has_a_track_per_local_process_grouped_by_dask_worker(
    client: Any, how: str, tmp_path: Path
) -> None:
    path = tmp_path / "run.json"
    if how == "map":
        results = workpool.map(square, range(3000), backend="dask", address=client, trace=path)
    else:
        with workpool.Pool(backend="dask", address=client) as pool:
            results = list(pool.imap(square, range(3000), trace=path))
    assert results == [x * x for x in range(3000)]
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, 3000)
    addresses = set(worker_pids(client))
    for group, track in chunk_tracks(data):
        address = group.removeprefix("Dask worker ")
        assert address in addresses, group
        assert re.fullmatch(rf"worker process \d+ on Dask worker {re.escape(address)}", track)
    # Each chunk ran while the call did: the nodes' times are on the caller's clock.
    (call,) = spans(data, "call")
    for chunk in spans(data, "chunk"):
        assert call["ts"] <= chunk["ts"] and chunk["ts"] + chunk["dur"] <= call["ts"] + call["dur"]
    assert {"run", "pickle", "unpickle", "task"} <= {s["name"] for s in spans(data)}


def test_a_node_with_another_clock_is_put_on_the_callers_clock(tmp_path: Path) -> None:
    from workpool.backends.dask import tracing
    from workpool.clock import now_ns
    from workpool.timeline import Recorder

    ahead = 3_600 * 10**9  # a machine whose clock reads an hour ahead of ours

    class OtherMachine:
        def run(self, fn: Any, *, workers: list[str], on_error: str) -> dict[str, int]:
            return {address: fn() + ahead for address in workers}

    offset = tracing.NodeClocks(OtherMachine()).offset("tcp://10.0.0.5:40001")
    assert abs(offset + ahead) < 10**9  # within the round trip, here far below a second
    # What the node recorded, read on its clock, lands on ours.
    recorder = Recorder(tmp_path / "run.json")
    began = now_ns() + ahead
    node = tracing.NodeRecorder()
    track = node.worker_track("worker process 7", "worker processes")
    node.fault(track, "crashed", (0, 4, 0), began, began + 10**6, 2, "exited with code 7")
    tracing.put_on(recorder, node.records(), "tcp://10.0.0.5:40001", offset)
    ((track_number, *_, received, _, _, returned, _),) = recorder.chunks
    assert abs(received - (began - ahead)) < 10**9 and returned - received == 10**6
    info = recorder.tracks[track_number]
    assert info.name == "worker process 7 on Dask worker tcp://10.0.0.5:40001"
    assert info.group == "Dask worker tcp://10.0.0.5:40001"


def test_a_trace_marks_a_crash_a_retry_and_a_timeout_on_the_cluster(
    client: Any, tmp_path: Path
) -> None:
    crashed = tmp_path / "crashed.json"
    results = workpool.map(
        crash_on(13),
        range(40),
        backend="dask",
        address=client,
        chunksize=4,
        trace=crashed,
        return_exceptions=True,
    )
    assert isinstance(results[13], workpool.WorkerCrashed)
    data = read_trace(crashed)
    assert_well_formed(data)
    assert_each_position_once(data, 40, except_=frozenset({13}))
    crashes = instants(data, "crash")
    assert {c["args"]["position"] for c in crashes} <= {None, 13}
    assert any(c["args"]["position"] == 13 for c in crashes)
    assert any(s["args"]["outcome"] == "crashed" for s in spans(data, "chunk"))

    retried = tmp_path / "retried.json"
    marks = tmp_path / "marks"
    marks.mkdir()
    results = workpool.map(
        fail_first_try(marks),
        range(20),
        backend="dask",
        address=client,
        retries=1,
        chunksize=5,
        trace=retried,
    )
    assert results == [x * x for x in range(20)]
    data = read_trace(retried)
    assert_well_formed(data)
    assert_each_position_once(data, 20)
    assert sorted(r["args"]["position"] for r in instants(data, "retry")) == list(range(20))
    assert {s["args"]["attempt"] for s in spans(data, "chunk")} == {0, 1}

    timed_out = tmp_path / "timed_out.json"
    results = workpool.map(
        hang_on(2, 60),
        range(6),
        backend="dask",
        address=client,
        task_timeout=0.5,
        chunksize=1,
        trace=timed_out,
        return_exceptions=True,
    )
    assert isinstance(results[2], workpool.TaskTimeout)
    data = read_trace(timed_out)
    assert_well_formed(data)
    assert_each_position_once(data, 6, except_=frozenset({2}))
    (timeout,) = instants(data, "timeout")
    assert timeout["args"]["position"] == 2 and "task_timeout=0.5" in timeout["args"]["reason"]
    assert any(s["args"]["outcome"] == "timeout" for s in spans(data, "chunk"))


# --- where the cluster is ------------------------------------------------------------


def test_the_current_client_is_used_when_no_address_is_given(client: Any) -> None:
    with client.as_current():
        parents = set(workpool.map(dask_worker_pid, range(40), backend="dask", chunksize=1))
    assert parents <= set(worker_pids(client).values())


def test_no_address_starts_a_local_cluster_and_stops_it() -> None:
    with pytest.raises(ValueError):
        distributed.Client.current()  # no client of ours is current: workpool starts one
    pids = workpool.map(dask_worker_pid, range(40), backend="dask", workers=2, chunksize=1)
    assert len(set(pids)) >= 1
    assert all(pid != os.getpid() for pid in pids)
    # The guard checks that the cluster's processes are gone with the call.


def test_a_failure_ends_the_call_while_a_result_is_being_fetched() -> None:
    # The first failure ends a one-shot call and kills its local cluster's workers
    # while the courier is about to fetch a finished task's result from one of them:
    # that fetch waited for Dask to compute the task again, on workers that never came
    # back. The program below holds each side at that moment.
    done = run_program(
        """
        import asyncio, faulthandler, threading, time
        import workpool
        from workpool.backends.dask.cluster import ClusterLink
        from workpool.backends.dask.engine import DaskBackend
        from workpool.backends.dask.fetcher import ResultFetcher

        faulthandler.dump_traceback_later(30, exit=True)
        fetching, workers_stopped = threading.Event(), threading.Event()
        stop_workers, gather, forget = (
            ClusterLink.stop_workers, ResultFetcher._gather, DaskBackend.forget
        )

        def stop_and_say(self):
            try:
                return stop_workers(self)
            finally:
                workers_stopped.set()

        async def gather_late(self, futures):
            # Keys end in the chunk's number: chunk 0 holds item 0, the one that fails.
            if futures and not any(future.key.endswith("-0") for future in futures):
                fetching.set()
                waiting = asyncio.get_running_loop().run_in_executor(
                    None, workers_stopped.wait, 10
                )
                await waiting
            return await gather(self, futures)

        def forget_while_fetching(self, sink):
            fetching.wait(10)
            forget(self, sink)

        ClusterLink.stop_workers = stop_and_say
        ResultFetcher._gather = gather_late
        DaskBackend.forget = forget_while_fetching

        def first_fails(x):
            if x == 0:
                raise ValueError("the first")
            time.sleep(0.3)
            return x

        try:
            workpool.map(first_fails, range(4), backend="dask", workers=2, chunksize=1)
        except ValueError as exc:
            print("raised", exc, fetching.is_set())
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "raised the first True\n"


def test_local_clusters_that_overlap_stay_quiet() -> None:
    # Dask restores its log handlers' level when the cluster that lowered it closes,
    # even while another cluster, which it left alone, still runs.
    done = run_program(
        """
        import workpool
        from helpers import square

        first = workpool.Pool(backend="dask", workers=1)
        second = workpool.Pool(backend="dask", workers=1)
        first.shutdown()
        print(list(second.map(square, range(3))), flush=True)
        second.shutdown()
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[0, 1, 4]"
    assert done.stderr == ""


@pytest.mark.parametrize("where", ["address", "local cluster"])
def test_a_timeout_dask_leaves_on_a_closing_client_is_not_printed(
    client: Any, where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Closing a client can leave its batched sender's deadline (a tornado timeout) unread
    # when the client's loop stops; asyncio then prints "Future exception was never
    # retrieved" at exit (seen on Python 3.10, rarely). Made certain here: the close
    # leaves such a timeout on the client's loop, as Dask does when it loses that race.
    close = distributed.Client.close
    left_behind: list[str] = []
    # Its own words: other clients of this process (the tests' own) may leave theirs.
    left_by_close = f"left by the close of a pool's client {uuid.uuid4().hex}"

    def close_leaving_a_timeout(dask_client: Any, *args: Any, **kwargs: Any) -> Any:
        timeout = dask_client.loop.asyncio_loop.create_future()
        timeout.set_exception(asyncio.TimeoutError(left_by_close))
        try:
            return close(dask_client, *args, **kwargs)
        finally:
            left_behind.append(repr(timeout))
            del timeout  # unread: asyncio reports it to the loop as it is freed, now

    cluster: dict[str, Any] = (
        {"address": client.scheduler.address} if where == "address" else {"workers": 1}
    )
    with workpool.Pool(backend="dask", **cluster) as pool:
        assert pool.submit(square, 7).result(timeout=60) == 49
        if where == "local cluster":  # the one workpool made: on loopback, every server
            assert_listening_on_loopback_only([psutil.Process()])
        monkeypatch.setattr(distributed.Client, "close", close_leaving_a_timeout)
    assert left_behind, "the pool did not close its client"
    assert [r for r in caplog.records if left_by_close in r.getMessage()] == []


def test_a_closing_worker_does_not_print_its_interrupted_heartbeat() -> None:
    # Closing a worker closes its connections under a heartbeat still on its way, which
    # Dask then logs with a traceback; the same failure from a running worker is real.
    done = run_program(
        """
        import logging, types
        from distributed.core import Status
        from workpool.backends.dask.worker_setup import dask_setup

        worker = types.SimpleNamespace(status=Status.running)
        dask_setup(worker)
        log = logging.getLogger("distributed.worker")
        for status in (Status.closing, Status.closed, Status.running):
            worker.status = status
            try:
                raise OSError("ConnectionPool closing.")
            except OSError:
                log.exception("Failed to communicate with scheduler during heartbeat.")
            log.error("something else while %s", status.name)
        """
    )
    assert done.returncode == 0, done.stderr
    # Dask's own handler prints each message after its time, logger and level.
    lines = [
        line.rpartition(" - ")[2]
        for line in done.stderr.splitlines()
        if not line.startswith((" ", "Trace"))
    ]
    assert lines == [
        "something else while closing",
        "something else while closed",
        "Failed to communicate with scheduler during heartbeat.",
        "OSError: ConnectionPool closing.",
        "something else while running",
    ]


def test_a_worker_killed_by_a_fatal_signal_prints_where_first() -> None:
    # A segfault in an extension module (or the interpreter) left only the nanny's
    # "killed by signal 11". Now the worker prints its threads' stacks, then dies of it.
    done = run_program(
        """
        import os, signal, types
        from workpool.backends.dask.worker_setup import dask_setup

        def crash_in_the_task():
            os.kill(os.getpid(), signal.SIGSEGV)

        dask_setup(types.SimpleNamespace(status=None))
        crash_in_the_task()
        """
    )
    assert done.returncode == -signal.SIGSEGV, done.stderr
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert "in crash_in_the_task" in done.stderr


@contextlib.contextmanager
def command_line_cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``dask scheduler`` and one ``dask worker`` on loopback: its address and scheduler."""
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0"]
    worker_cli = [sys.executable, "-m", "distributed.cli.dask_worker", "--nthreads", "1"]
    # --no-dashboard leaves each process's small HTTP server (health, metrics) on every
    # interface (8787 for the scheduler): it is put on loopback too.
    loopback = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    logs = (tmp_path / "scheduler.log").open("w"), (tmp_path / "worker.log").open("w")
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [*scheduler_cli, *loopback, "--scheduler-file", str(scheduler_file)],
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        assert wait_for(scheduler_file.exists, timeout=60), scheduler_file
        assert wait_for(lambda: bool(scheduler_file.read_text().strip()), timeout=10)
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(
            subprocess.Popen(
                [*worker_cli, *loopback, address],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        with distributed.Client(address, timeout=30, set_as_default=False) as ready:
            ready.wait_for_workers(1, timeout=60)  # a pool made sooner warns of no workers
        assert_listening_on_loopback_only(started)
        yield address, started[0]
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def test_command_line_cluster_through_dask_scheduler_address(tmp_path: Path) -> None:
    with command_line_cluster(tmp_path) as (address, _):
        # The program's own function travels by value: the workers cannot import it.
        program = textwrap.dedent(
            """
            import os
            import workpool

            def square_but_crash_on_3(x):
                if x == 3:
                    os._exit(7)
                return x * x

            if __name__ == "__main__":
                results = workpool.map(square_but_crash_on_3, range(20), backend="dask",
                                       return_exceptions=True)
                print(results[:3], type(results[3]).__name__, results[4:])
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, "DASK_SCHEDULER_ADDRESS": address},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 4] WorkerCrashed " + str([x * x for x in range(4, 20)])


def test_a_scheduler_lost_mid_run_breaks_the_pool_and_says_why(tmp_path: Path) -> None:
    # The workers of this cluster cannot import the tests' modules: lambdas travel by value.
    def slowly(x: int) -> int:
        return (time.sleep(0.2), x)[1]

    with command_line_cluster(tmp_path) as (address, scheduler):
        with workpool.Pool(backend="dask", address=address) as pool:
            assert list(pool.map(lambda x: x * x, range(4))) == [0, 1, 4, 9]
            results = pool.imap(slowly, range(1000), chunksize=1)
            assert next(results) == 0
            scheduler.kill()
            lost_words = "lost the connection to the scheduler"
            with pytest.raises(workpool.BrokenPool, match=lost_words) as failed:
                list(results)
            with pytest.raises(workpool.BrokenPool) as refused:
                pool.submit(abs, 2)
            assert str(refused.value) == str(failed.value)  # in the same words
            lost = time.monotonic()
        # Nothing is left to close on a cluster that is gone: no wait for it to answer.
        # (Timed here: the cluster's own end, its worker told to stop, is not the pool's.)
        assert time.monotonic() - lost < 2


def test_a_scheduler_lost_while_the_window_is_counted_ends_the_call_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller asks the cluster for its thread count, now and then, as it feeds chunks.
    # Asked of a client that lost its scheduler, Dask waits out that client's connection
    # timeout (a user's Client: 30 s by default). Made certain here: it asks every time.
    from workpool.backends.dask import engine

    monkeypatch.setattr(engine, "THREADS_REFRESH_SECONDS", 0.0)

    def slowly(x: int) -> int:
        return (time.sleep(0.2), x)[1]

    with command_line_cluster(tmp_path) as (address, scheduler):
        own = distributed.Client(address, set_as_default=False)  # Dask's default timeouts
        try:
            results = workpool.imap(
                slowly,
                range(1000),
                backend="dask",
                address=own,
                chunksize=1,
                return_exceptions=True,
            )
            assert next(results) == 0
            scheduler.kill()
            lost = time.monotonic()
            with pytest.raises(workpool.BrokenPool, match="lost the connection"):
                list(results)
            # Well short of the 30 s the old code waited, with room for a loaded machine.
            assert time.monotonic() - lost < 20
        finally:
            own.close(timeout=1)


def assert_each_ended_or_broke(futures: list[concurrent.futures.Future[Any]]) -> None:
    """Every Future ends soon after its pool's scheduler was lost: done, or BrokenPool."""
    _, waiting = concurrent.futures.wait(futures, timeout=60)
    assert not waiting, f"{len(waiting)} of {len(futures)} Futures never ended"
    for future in futures:
        failure = future.exception()
        assert failure is None or isinstance(failure, workpool.BrokenPool), failure
    assert isinstance(futures[-1].exception(), workpool.BrokenPool)


def test_a_scheduler_lost_fails_every_submitted_future_of_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More Futures than the cluster is given at once: most wait in the caller's process.
    def slowly(x: int) -> int:
        return (time.sleep(0.3), x)[1]

    # A client closed while it tries to reconnect may wait for that attempt to give up
    # (Dask's reconnect, seconds; seen on Python 3.10): shutdown must not wait for it.
    reconnect_given_up = threading.Event()
    pool_client_closed = threading.Event()
    close = distributed.Client.close

    def close_after_reconnecting(client: Any, *args: Any, **kwargs: Any) -> Any:
        # The pool's client only. Another client left to the garbage collector (the
        # cluster's readiness check, say) closes from __del__, on whichever thread the
        # collection runs: once the courier's, inside set_exception, holding the lock of
        # a Future this test waited for.
        if client is pool_client:
            pool_client_closed.set()
            reconnect_given_up.wait(60)
        return close(client, *args, **kwargs)

    with command_line_cluster(tmp_path) as (address, scheduler):
        pool = workpool.Pool(backend="dask", address=address)
        pool_client = pool._backend._client  # type: ignore[attr-defined]
        futures = [pool.submit(slowly, x) for x in range(40)]
        assert futures[0].result(timeout=60) == 0
        monkeypatch.setattr(distributed.Client, "close", close_after_reconnecting)
        scheduler.kill()
        assert_each_ended_or_broke(futures)
        lost = time.monotonic()
        pool.shutdown()
        took = time.monotonic() - lost
        reconnect_given_up.set()
        assert took < 2
        assert pool_client_closed.wait(30), "the pool never closed its client"


def never_ending(entered: threading.Event) -> Callable[..., Any]:
    """A stand-in for a coroutine method of Dask's client: sets ``entered``, never returns."""

    async def forever(client: Any, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        await asyncio.sleep(3600)

    return forever


def test_a_scheduler_lost_while_results_are_fetched_fails_every_future(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fetch of results under way when the scheduler dies can wait out Dask's
    # connection timeout and try again (over a minute; seen on Python 3.10), while the
    # client has cancelled every task. Made certain here: the fetch never ends.
    def slowly(x: int) -> int:
        return (time.sleep(0.3), x)[1]

    fetching = threading.Event()
    with command_line_cluster(tmp_path) as (address, scheduler):
        pool = workpool.Pool(backend="dask", address=address)
        try:
            futures = [pool.submit(slowly, x) for x in range(40)]
            assert futures[0].result(timeout=60) == 0
            monkeypatch.setattr(distributed.Client, "_gather", never_ending(fetching))
            assert fetching.wait(60), "no result was fetched after the first"
            scheduler.kill()
            assert_each_ended_or_broke(futures)
        finally:
            pool.shutdown()


def test_a_scheduler_lost_while_an_array_is_sent_fails_its_task_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large array goes to the cluster by a scatter, in the submitting thread. Were the
    # scheduler lost meanwhile, Dask's scatter would wait out its connection timeout
    # and try again. Made certain here: the scatter never ends.
    numpy = pytest.importorskip("numpy")
    scattering = threading.Event()

    def total(array: Any) -> float:  # by value: the workers cannot import the tests
        return float(array.sum())

    with command_line_cluster(tmp_path) as (address, scheduler):
        pool = workpool.Pool(backend="dask", address=address)
        try:
            assert pool.submit(total, numpy.ones(3)).result(timeout=60) == 3.0
            monkeypatch.setattr(distributed.Client, "_scatter", never_ending(scattering))

            def kill_once_scattering() -> None:
                if scattering.wait(60):
                    scheduler.kill()

            killer = threading.Thread(target=kill_once_scattering)
            killer.start()
            try:
                future = pool.submit(total, numpy.ones(1 << 18))  # 2 MiB
            finally:
                killer.join()
            assert scattering.is_set(), "the array was not scattered"
            error = future.exception(timeout=60)
            assert isinstance(error, ConnectionError), repr(error)
            assert "stopped running" in str(error)
        finally:
            pool.shutdown()


def test_a_one_shot_call_whose_scheduler_is_lost_ends_at_once(tmp_path: Path) -> None:
    def slowly(x: int) -> int:
        return (time.sleep(0.2), x)[1]

    with command_line_cluster(tmp_path) as (address, scheduler):
        results = workpool.imap(slowly, range(1000), backend="dask", address=address, chunksize=1)
        assert next(results) == 0
        scheduler.kill()
        lost = time.monotonic()
        with pytest.raises(workpool.BrokenPool, match="lost the connection to the scheduler"):
            list(results)
        assert time.monotonic() - lost < 2


def test_a_pool_whose_scheduler_was_lost_while_idle_says_so(tmp_path: Path) -> None:
    # Nothing was in flight: the client workpool made tries to reconnect, gives up and
    # closes itself, and the next task is the first to find out. Nobody closed it.
    with (
        command_line_cluster(tmp_path) as (address, scheduler),
        workpool.Pool(backend="dask", address=address) as pool,
    ):
        assert pool.submit(abs, -3).result(timeout=60) == 3
        pool_client = pool._backend._client  # type: ignore[attr-defined]
        scheduler.kill()
        assert wait_for(lambda: pool_client.status == "closed", timeout=60)
        first = pool.submit(abs, -2).exception(timeout=30)
        assert isinstance(first, workpool.BrokenPool), repr(first)
        assert "lost its scheduler" in str(first)
        assert "close the pool before its client" not in str(first)
        with pytest.raises(workpool.BrokenPool, match="lost its scheduler"):
            list(pool.map(abs, range(3)))


# --- refusals ------------------------------------------------------------------------


def test_a_client_closed_under_a_pool_breaks_it_and_says_so(client: Any) -> None:
    own = distributed.Client(client.cluster, set_as_default=False)
    with workpool.Pool(backend="dask", address=own) as pool:
        assert pool.submit(square, 3).result(timeout=30) == 9
        futures = [pool.submit(slow_square, x, 0.2) for x in range(4)]
        own.close()
        errors = [future.exception(timeout=30) for future in futures]
        assert all(isinstance(error, workpool.BrokenPool) for error in errors), errors
        assert "the Dask client was closed" in str(errors[0])
        with pytest.raises(workpool.BrokenPool, match="the Dask client was closed"):
            pool.submit(square, 2)


def test_a_pool_whose_client_was_closed_while_idle_says_so(client: Any) -> None:
    # Nothing was in flight to be cancelled: the next task is the first to find out.
    own = distributed.Client(client.cluster, set_as_default=False)
    with workpool.Pool(backend="dask", address=own) as pool:
        assert pool.submit(square, 3).result(timeout=30) == 9
        own.close()
        first = pool.submit(square, 2).exception(timeout=30)
        assert isinstance(first, workpool.BrokenPool), repr(first)
        assert "the Dask client was closed" in str(first)
        with pytest.raises(workpool.BrokenPool, match="the Dask client was closed"):
            list(pool.map(square, range(3)))


def test_an_asynchronous_client_is_refused_on_its_own_loop(client: Any) -> None:
    # Waiting there for the cluster would block the loop the client needs: a hang.
    refusals: list[str] = []

    async def from_async_code() -> None:
        address = client.scheduler.address
        async with distributed.Client(address, asynchronous=True) as own:
            with pytest.raises(ValueError, match="asynchronous") as given:
                workpool.Pool(backend="dask", address=own)
            with pytest.raises(ValueError, match="asynchronous") as current:
                workpool.map(square, range(3), backend="dask")  # the current client
            refusals.extend([str(given.value), str(current.value)])

    caller = threading.Thread(target=asyncio.run, args=(from_async_code(),), daemon=True)
    caller.start()
    caller.join(60)
    assert len(refusals) == 2, "a pool on an asynchronous client's own loop hung"
    assert "the current Dask client is asynchronous" in refusals[1]


def test_a_pool_on_an_asynchronous_client_takes_tasks_from_its_loop(client: Any) -> None:
    # Made in another thread, as the refusal above says; then submitted to from the
    # loop's own thread, which must not wait there for the cluster's size.
    results: list[int] = []

    async def from_async_code() -> None:
        loop = asyncio.get_running_loop()
        async with distributed.Client(client.scheduler.address, asynchronous=True) as own:
            pool = await loop.run_in_executor(
                None, functools.partial(workpool.Pool, backend="dask", address=own)
            )
            try:
                for x in range(3):
                    results.append(await asyncio.wrap_future(pool.submit(square, x)))
                    await asyncio.sleep(1)  # past the pool's trust in the threads it counted
            finally:
                await loop.run_in_executor(None, pool.shutdown)

    caller = threading.Thread(target=asyncio.run, args=(from_async_code(),), daemon=True)
    caller.start()
    caller.join(60)
    assert results == [0, 1, 4], "a pool's submit on its asynchronous client's loop hung"


def test_without_the_extra_backend_dask_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    with pytest.raises(ImportError, match=r"pip install 'workpool\[dask\]'"):
        workpool.map(square, [1], backend="dask")
    with pytest.raises(ImportError, match=r"pip install 'workpool\[dask\]'"):
        workpool.Pool(backend="dask")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bad_addresses_fail_at_once_or_name_the_address() -> None:
    with pytest.raises(TypeError, match="address must be"):
        workpool.map(square, [1], backend="dask", address=42)
    with pytest.raises(ValueError, match="address applies to backend='dask' only"):
        workpool.map(square, [1], backend="process", address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="start_method applies to backend='process' only"):
        workpool.map(square, [1], backend="dask", start_method="spawn")
    nobody = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ConnectionError, match=nobody) as refused:
        workpool.map(square, [1], backend="dask", address=nobody)
    assert "refused" in str(refused.value).lower()  # why, not only that it took too long


def test_a_scheduler_file_given_as_the_address_is_named_as_one(tmp_path: Path) -> None:
    # `dask scheduler --scheduler-file f` writes the address into f; passing f itself
    # said only "missing port number".
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": f"tcp://127.0.0.1:{_free_port()}"}))
    with pytest.raises(ValueError, match=r"names a file.*\['address'\]"):
        workpool.map(square, [1], backend="dask", address=str(scheduler_file))


def failure_of_a_map_in_a_thread(address: str) -> BaseException | None:
    """What ``workpool.map`` on ``address`` raised; None if it hung for a minute."""
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            workpool.map(square, [1], backend="dask", address=address)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(60)  # the contract says a few seconds; a hang fails the test
    return outcome[0] if outcome else None


def test_an_address_where_no_scheduler_speaks_fails_quickly_and_leaves_nothing() -> None:
    # Something listens there, but not a Dask scheduler: a server that never says a
    # word (a port held by a stuck program), and one that speaks another protocol.
    silent, talker = socket.socket(), socket.socket()
    for server in (silent, talker):
        server.bind(("127.0.0.1", 0))
        server.listen()

    def answer_in_http() -> None:
        with contextlib.suppress(OSError):
            while True:
                peer, _ = talker.accept()
                with peer:
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)

    threading.Thread(target=answer_in_http, daemon=True).start()
    threads = set(threading.enumerate())
    try:
        for server in (silent, talker):
            address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
            outcome = failure_of_a_map_in_a_thread(address)
            assert isinstance(outcome, ConnectionError), repr(outcome)
            assert address in str(outcome)
    finally:
        silent.close()
        talker.close()
    # No client was left half-made, with its event-loop thread (Dask's "IO loop").
    assert wait_for(lambda: set(threading.enumerate()) <= threads), threading.enumerate()


def test_importing_workpool_does_not_import_dask() -> None:
    check = "import workpool, sys; assert not {'dask', 'distributed'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", check], check=True)
    auto = (
        "import workpool, sys; workpool.map(abs, range(3)); assert 'distributed' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", auto], check=True)


def test_a_done_callback_that_calls_sys_exit_does_not_break_the_pool(
    client: Any, tmp_path: Path
) -> None:
    # concurrent.futures passes a callback's SystemExit on, into the thread that settled
    # the Future: the courier, which must neither die of it nor break the pool.
    task = functools.partial(hold, directory=str(tmp_path), held=(0,))
    with workpool.Pool(backend="dask", address=client) as pool:
        first = pool.submit(task, 0)
        # Held until released: the callback is added before it can be done (else it
        # would run here, at once, in this thread).
        first.add_done_callback(lambda _: sys.exit(3))
        (tmp_path / "release").touch()
        assert first.result(timeout=60) == 0
        assert pool.submit(square, 5).result(timeout=60) == 25


def test_a_result_that_arrives_after_the_pool_ended_is_not_kept(client: Any) -> None:
    # A fetch can end after the pool stopped its courier (a task it cancelled settles,
    # a late gather returns). What it hands over then was kept in a queue nobody read,
    # and its futures kept their tasks' results on the cluster until the garbage
    # collector freed the pool. Made certain here: a hand-over after the end.
    pool = workpool.Pool(backend="dask", address=client)
    assert pool.submit(square, 3).result(timeout=60) == 9
    backend = pool._backend
    pool.shutdown()
    late = client.submit(square, 4, key=f"workpool-late-{uuid.uuid4().hex}", pure=False)
    assert late.result(timeout=60) == 16
    backend._fetcher._arrived([late], {late.key: b"unread"})
    key, late = late.key, None
    assert wait_for(lambda: key not in workpool_tasks(client), timeout=30), "its result is held"


def test_a_checkpointed_map_stopped_half_way_completes_on_the_cluster(
    client: Any, tmp_path: Path
) -> None:
    # Stopped half-way (an imap closed early), then called again with the same journal:
    # the results are those of an uninterrupted run, and no task is left behind.
    journal = tmp_path / "run.ckpt"
    first = workpool.imap(square, range(2000), backend="dask", address=client, checkpoint=journal)
    assert [next(first) for _ in range(500)] == [x * x for x in range(500)]
    first.close()
    again = workpool.map(square, range(2000), backend="dask", address=client, checkpoint=journal)
    assert again == [x * x for x in range(2000)]
    # A finished task's key is released just after its result was delivered.
    assert wait_for(lambda: not workpool_tasks(client), timeout=5), workpool_tasks(client)


def test_sys_exit_in_a_callback_of_a_future_cancelled_by_shutdown_costs_no_other_future(
    client: Any, tmp_path: Path
) -> None:
    # shutdown(cancel_futures=True) cancels the queued Futures one after another, in the
    # caller's thread; a callback's SystemExit on one must not leave those after it
    # pending for ever. It may reach the caller of shutdown(), as the standard pools let it.
    task = functools.partial(hold, directory=str(tmp_path), held=tuple(range(24)))
    pool = workpool.Pool(backend="dask", address=client)
    try:
        futures = [pool.submit(task, i) for i in range(24)]
        # Until a first chunk is back, at most one per thread of the cluster is in
        # flight: those from the 16th on are still queued here.
        futures[16].add_done_callback(lambda _: sys.exit(3))
        with pytest.raises(SystemExit):
            pool.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in futures[16:])
    finally:
        (tmp_path / "release").touch()
        pool.shutdown()
    _, pending = concurrent.futures.wait(futures, timeout=60)
    assert not pending


_dask_guard = threading.Lock()


def test_a_function_that_cannot_be_sent_to_dask_names_what_it_carries(client: Any) -> None:
    # Pickle names only the type ("cannot pickle '_thread.lock' object").
    def locked(x: int) -> int:
        with _dask_guard:
            return x

    with pytest.raises(TypeError, match=r"Dask workers: .*the global '_dask_guard' of .*locked"):
        workpool.map(locked, [1], backend="dask", address=client)
