"""The fault suite: a fault costs the task that caused it, never the pool or other results.

Each test asserts: no hang (pytest-timeout and explicit deadlines), every unaffected
result delivered exactly once, the faulted task reported with the right error and a
useful message, and (through the autouse fixture) no process left behind.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import workpool
from conftest import (
    FORK_WARNING,
    HAS_INTERPRETERS,
    START_METHODS,
    left_to_the_cycle_collector,
    wait_for,
)
from faults import (
    CrashWhenFunctionUnpickled,
    CrashWhenUnpickled,
    RaiseWhenFunctionUnpickled,
    RaiseWhenUnpickled,
    announce_then_sleep,
    count_runs_then_fail,
    crash_first_try,
    crash_on,
    crash_on_any,
    exit_in_initializer,
    fail_first_try,
    fork_and_forget_to_exit,
    hang_on,
    hold_descriptors_and_linger,
    hold_descriptors_then_hang,
    kill_holder,
    pid_of,
    raise_unpicklable_then_crash,
    return_crash_when_pickled,
    return_hang_when_pickled,
    runs_of,
    sleep_then_pid,
    unrebuildable_result_at_1,
)
from helpers import (
    SlowToPickleError,
    broken_initializer,
    fail_on,
    raise_slow_to_pickle,
    slow_square,
    square,
)

METHODS = [None, *START_METHODS]


@pytest.mark.parametrize(
    ("how", "described"),
    [
        ("exit", "exited with code 7"),
        ("sigkill", "killed by SIGKILL"),
        ("segfault", "killed by SIGSEGV"),
        ("abort", "killed by SIGABRT"),
    ],
)
def test_crash_costs_only_that_task(how: str, described: str) -> None:
    results = workpool.map(
        crash_on(13, how), range(40), backend="process", workers=2, return_exceptions=True
    )
    crashed = results[13]
    assert isinstance(crashed, workpool.WorkerCrashed)
    message = str(crashed)
    assert "input position 13" in message
    assert described in message
    assert f"worker process {crashed.pid}" in message
    assert [r for i, r in enumerate(results) if i != 13] == [x * x for x in range(40) if x != 13]


def test_crash_is_raised_by_default_and_names_the_task() -> None:
    with pytest.raises(workpool.WorkerCrashed, match="input position 5"):
        workpool.map(crash_on(5), range(10), backend="process", workers=2)


def test_crash_inside_a_big_chunk_blames_only_the_culprit() -> None:
    bad = {17, 18, 230}
    results = workpool.map(
        crash_on_any(bad),
        range(300),
        backend="process",
        workers=2,
        chunksize=50,
        return_exceptions=True,
    )
    for position, result in enumerate(results):
        if position in bad:
            assert isinstance(result, workpool.WorkerCrashed), position
            assert f"input position {position}" in str(result)
        else:
            assert result == position * position


def test_pool_survives_a_crash_and_replaces_the_worker() -> None:
    with workpool.Pool(2, backend="process") as pool:
        before = set(pool.map(pid_of, range(20)))
        future = pool.submit(crash_on(0), 0)
        error = future.exception(timeout=30)
        assert isinstance(error, workpool.WorkerCrashed)
        # A submitted task has no input position: the message names its function.
        assert "while running the task crash_on.<locals>.task(...)" in str(error)
        # Still two workers, one of them new; every later task still runs.
        after = {pool.submit(sleep_then_pid, 0.05).result(timeout=30) for _ in range(20)}
        assert len(after) <= 2
        assert after != before or len(before) == 1
        assert list(pool.imap(square, range(100))) == [x * x for x in range(100)]


def test_worker_killed_from_outside_while_busy(tmp_path: Path) -> None:
    """What the OOM killer does: SIGKILL from another process, mid-task."""
    marker = tmp_path / "started"
    with workpool.Pool(2, backend="process") as pool:
        victim_future = pool.submit(announce_then_sleep, str(marker), 30)
        others = [pool.submit(sleep_then_pid, 0.01) for _ in range(10)]
        assert wait_for(lambda: marker.exists() and marker.read_text() != "", timeout=10)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        error = victim_future.exception(timeout=30)
        assert isinstance(error, workpool.WorkerCrashed)
        assert "killed by SIGKILL" in str(error)
        assert all(isinstance(f.result(timeout=30), int) for f in others)


def test_retries_recover_one_crash_in_fifty(tmp_path: Path) -> None:
    results = workpool.map(
        crash_first_try(tmp_path, every=50), range(2000), backend="process", workers=2, retries=2
    )
    assert results == [x * x for x in range(2000)]
    assert len(list(tmp_path.iterdir())) == 40  # each culprit crashed exactly once


@pytest.mark.parametrize("chunksize", [None, 5])
def test_retries_apply_to_exceptions(backend: str, tmp_path: Path, chunksize: int | None) -> None:
    # With several items per chunk, a retried item's new result may arrive before the
    # rest of its first chunk's: it must not be overwritten by the failed attempt's.
    results = workpool.map(
        fail_first_try(tmp_path), range(20), backend=backend, retries=1, chunksize=chunksize
    )
    assert results == [x * x for x in range(20)]


@pytest.mark.parametrize("chunksize", [1, 5])
def test_retries_lose_no_result_as_they_finish(
    backend: str, tmp_path: Path, chunksize: int
) -> None:
    # A retry may come back before the batch of its first attempt is seen (on serial it
    # always does: it runs while that batch is delivered). Its chunk is finished once.
    results = workpool.imap(
        fail_first_try(tmp_path),
        range(20),
        backend=backend,
        retries=1,
        chunksize=chunksize,
        ordered=False,
    )
    assert sorted(results) == [x * x for x in range(20)]


def test_retries_exhausted_report_the_last_attempt(backend: str, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="flaky 3") as info:
        workpool.map(fail_first_try(tmp_path), [3], backend=backend, retries=0)
    assert "input position 0" in "\n".join(info.value.__notes__)
    always = workpool.map(
        crash_on(1), [0, 1, 2], backend="process", retries=2, return_exceptions=True
    )
    assert isinstance(always[1], workpool.WorkerCrashed)
    assert "attempt 3 of 3" in "\n".join(always[1].__notes__)
    assert always[0] == 0
    assert always[2] == 4


def test_retries_apply_to_the_items_auto_measures(tmp_path: Path) -> None:
    # backend="auto" runs the first items in the calling thread to time them: a failure
    # there is retried by the same rule as anywhere else.
    assert workpool.map(fail_first_try(tmp_path), range(5), retries=1) == [0, 1, 4, 9, 16]
    results = workpool.map(fail_on(3), range(5), retries=2, return_exceptions=True)
    assert isinstance(results[3], ValueError)
    notes = "\n".join(results[3].__notes__)
    assert "input position 3" in notes
    assert "while backend='auto' measured it (attempt 3 of 3)" in notes


class FailsUntil:
    """Raises ``ConnectionError`` on its first ``failures`` calls, in this process."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"flaky {self.calls}")
        return x * x


@pytest.mark.parametrize("how", ["serial map", "serial submit", "auto measuring"])
def test_many_retries_in_the_calling_thread_need_no_deeper_stack(how: str) -> None:
    # Where attempts run in the calling thread, each retry ran inside the delivery of
    # the attempt before it: retries=2000 hit the recursion limit after about 330.
    tries = sys.getrecursionlimit() + 500
    task = FailsUntil(tries - 1)
    if how == "serial map":
        assert workpool.map(task, [3], backend="serial", retries=tries) == [9]
    elif how == "serial submit":
        with workpool.Pool(backend="serial", retries=tries) as pool:
            assert pool.submit(task, 3).result(timeout=0) == 9
    else:  # auto runs the first item here, to time it
        assert workpool.map(task, [3, 4], retries=tries)[0] == 9
    assert task.calls >= tries
    always = FailsUntil(tries + 1)
    with pytest.raises(ConnectionError) as info:
        workpool.map(always, [3], backend="serial", retries=tries)
    assert f"attempt {tries + 1} of {tries + 1}" in "\n".join(info.value.__notes__)


def test_submitted_task_retries(tmp_path: Path) -> None:
    with workpool.Pool(1, backend="process", retries=1) as pool:
        assert pool.submit(fail_first_try(tmp_path), 6).result(timeout=30) == 36


@pytest.mark.parametrize("fault", ["exception", "crash"])
@pytest.mark.parametrize("how", ["submit", "map"])
def test_a_retry_due_while_the_pool_shuts_down_still_runs(
    tmp_path: Path, fault: str, how: str
) -> None:
    # shutdown() finishes the work submitted before it, and a failed task with
    # retries left is not finished: its next attempt runs before the workers stop.
    task = fail_first_try(tmp_path) if fault == "exception" else crash_first_try(tmp_path, 1)
    pool = workpool.Pool(1, backend="process", retries=1)
    if how == "submit":
        future = pool.submit(task, 6)
        pool.shutdown(wait=True)
        assert future.result(timeout=30) == 36
    else:
        results = pool.map(task, [6])
        pool.shutdown(wait=True)
        assert list(results) == [36]


def test_timeout_kills_and_replaces_a_hung_worker() -> None:
    begin = time.monotonic()
    results = workpool.map(
        hang_on(3),
        range(20),
        backend="process",
        workers=2,
        task_timeout=0.5,
        return_exceptions=True,
    )
    assert time.monotonic() - begin < 10
    assert isinstance(results[3], workpool.TaskTimeout)
    assert isinstance(results[3], TimeoutError)
    assert "input position 3" in str(results[3])
    assert "task_timeout=0.5s" in str(results[3])
    assert [r for i, r in enumerate(results) if i != 3] == [x * x for x in range(20) if x != 3]


def test_timeout_on_a_pool_keeps_it_usable() -> None:
    with workpool.Pool(1, backend="process", task_timeout=0.3) as pool:
        hung = pool.submit(hang_on(0), 0)
        with pytest.raises(workpool.TaskTimeout):
            hung.result(timeout=30)
        assert pool.submit(square, 5).result(timeout=30) == 25


def test_timeout_on_threads_does_not_wait_for_the_abandoned_thread() -> None:
    release = threading.Event()

    def hang_on_two(x: int) -> int:
        if x == 2:
            release.wait(60)  # hangs until the test lets it go
        return x * x

    try:
        results = workpool.map(
            hang_on_two,
            range(8),
            backend="thread",
            workers=2,
            task_timeout=0.3,
            return_exceptions=True,
        )
        # The call returned while the hung task still runs in its abandoned thread.
        assert not release.is_set()
    finally:
        release.set()
    assert isinstance(results[2], workpool.TaskTimeout)
    assert "runs" in str(results[2]) or "background" in str(results[2])
    assert [r for i, r in enumerate(results) if i != 2] == [x * x for x in range(8) if x != 2]


def test_timeout_on_serial_is_reported_when_the_task_returns() -> None:
    results = workpool.map(
        hang_on(1, seconds=0.3),
        range(3),
        backend="serial",
        task_timeout=0.1,
        return_exceptions=True,
    )
    assert isinstance(results[1], workpool.TaskTimeout)
    assert results[0] == 0
    assert results[2] == 4


def test_timeout_does_not_touch_tasks_that_finish_in_time(backend: str) -> None:
    results = workpool.map(square, range(500), backend=backend, task_timeout=5)
    assert results == [x * x for x in range(500)]


def test_sending_a_tasks_outcome_back_does_not_count_against_its_timeout(backend: str) -> None:
    # task_timeout bounds the call, and on processes pickling its outcome on a clock of
    # its own. The call takes a quarter of a second, and so does pickling what it
    # raised: together past the limit, each within it, the task fails with its own error.
    with workpool.Pool(1, backend=backend, task_timeout=0.4) as pool:
        error = pool.submit(raise_slow_to_pickle, 0.25).exception(timeout=30)
    assert type(error) is SlowToPickleError


@pytest.mark.parametrize("limit", [math.inf, 1e12], ids=["inf", "1e12"])
def test_a_task_timeout_longer_than_any_wait_never_fires(backend: str, limit: float) -> None:
    # "Never" or "a month" is a fair limit, though epoll counts at most some 24 days in
    # one wait and no wait takes infinity: the tasks still run, and the pool with them.
    results = workpool.map(
        slow_square, range(4), [0.05] * 4, backend=backend, task_timeout=limit, chunksize=1
    )
    assert results == [0, 1, 4, 9]


def test_crash_while_unpickling_an_argument_costs_that_task() -> None:
    items: list[object] = [1, CrashWhenUnpickled(), 3]
    results = workpool.map(
        lambda x: x, items, backend="process", workers=1, chunksize=3, return_exceptions=True
    )
    assert results[0] == 1
    assert results[2] == 3
    assert isinstance(results[1], workpool.WorkerCrashed)
    assert "input position 1" in str(results[1])


def test_error_while_unpickling_an_argument_costs_that_task() -> None:
    items: list[object] = [1, RaiseWhenUnpickled(), 3]
    results = workpool.map(
        lambda x: x, items, backend="process", workers=1, chunksize=3, return_exceptions=True
    )
    assert results[0] == 1
    assert results[2] == 3
    assert isinstance(results[1], RuntimeError)
    assert "cannot be rebuilt in a worker" in str(results[1])


@pytest.mark.parametrize("backend", ["process"] + (["interpreter"] if HAS_INTERPRETERS else []))
def test_a_result_that_cannot_be_unpickled_here_costs_only_its_task(backend: str) -> None:
    # It spoils the pickle of its whole chunk's results: the chunk's other items run
    # again one at a time, and only its own task fails.
    results = workpool.map(
        unrebuildable_result_at_1,
        range(4),
        backend=backend,
        workers=1,
        chunksize=4,
        return_exceptions=True,
    )
    assert results[0] == 0
    assert results[2:] == [2, 3]
    assert isinstance(results[1], RuntimeError)
    assert "cannot be rebuilt" in str(results[1])
    assert "could not be unpickled" in "\n".join(getattr(results[1], "__notes__", []))


def test_a_worker_at_its_task_limit_is_replaced_when_its_chunk_runs_again() -> None:
    # The chunk's arguments cannot all be rebuilt in the worker: its items run again one
    # at a time. The worker, at its max_tasks_per_worker, must retire for another.
    items: list[object] = [1, RaiseWhenUnpickled(), 3]
    pool = workpool.Pool(1, backend="process", max_tasks_per_worker=3)
    try:
        results = list(
            pool.map(lambda x: x, items, chunksize=3, return_exceptions=True, timeout=30)
        )
    finally:
        pool.terminate()
    assert results[0] == 1
    assert results[2] == 3
    assert isinstance(results[1], RuntimeError)


def test_crash_while_pickling_a_result_costs_that_task() -> None:
    results = workpool.map(
        return_crash_when_pickled,
        range(4),
        backend="process",
        workers=1,
        chunksize=4,
        return_exceptions=True,
    )
    assert results[0] == 0
    assert results[2:] == [2, 3]
    assert isinstance(results[1], workpool.WorkerCrashed)


def _raise_on_1_crash_on_2(tmp_path: Path, **options: Any) -> list[Any]:
    task = count_runs_then_fail(tmp_path, raise_on=1, crash_on=2)
    return workpool.map(task, range(6), backend="process", workers=1, chunksize=4, **options)


@pytest.mark.parametrize("task_timeout", [None, 30.0], ids=["untimed", "timed"])
def test_a_crash_keeps_what_the_chunk_raised_before_it(
    tmp_path: Path, task_timeout: float | None
) -> None:
    # Item 1 raises the first time it runs only: run again after the crash, it would
    # return a value, and the failure that happened would be lost without a word.
    results = _raise_on_1_crash_on_2(tmp_path, return_exceptions=True, task_timeout=task_timeout)
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "first run of 1"
    assert isinstance(results[2], workpool.WorkerCrashed)
    assert "input position 2" in str(results[2])
    assert [results[0], *results[3:]] == [0, 9, 16, 25]
    assert runs_of(tmp_path, 1) == 1


def test_a_crash_after_a_failure_in_its_chunk_raises_that_failure(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="first run of 1"):
        _raise_on_1_crash_on_2(tmp_path)


def test_a_crash_after_a_failure_in_its_chunk_with_retries(tmp_path: Path) -> None:
    # The item that raised is tried again as retries allow, as it would be without the
    # crash: its second run succeeds. The crash takes its own attempts.
    results = _raise_on_1_crash_on_2(tmp_path, return_exceptions=True, retries=1)
    assert results[1] == 1
    assert isinstance(results[2], workpool.WorkerCrashed)
    assert runs_of(tmp_path, 1) == 2


@pytest.mark.parametrize("ordered", [True, False])
def test_a_crash_keeps_what_the_chunk_raised_before_it_in_imap(
    tmp_path: Path, ordered: bool
) -> None:
    task = count_runs_then_fail(tmp_path, raise_on=1, crash_on=2)
    with workpool.Pool(1, backend="process") as pool:
        results = list(
            pool.imap(task, range(6), chunksize=4, ordered=ordered, return_exceptions=True)
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert sorted(type(r).__name__ for r in failures) == ["ValueError", "WorkerCrashed"]
    assert sorted(r for r in results if not isinstance(r, BaseException)) == [0, 9, 16, 25]
    assert runs_of(tmp_path, 1) == 1


def test_a_crash_keeps_an_exception_pickle_refused_before_it() -> None:
    results = workpool.map(
        raise_unpicklable_then_crash,
        range(5),
        backend="process",
        workers=1,
        chunksize=5,
        return_exceptions=True,
    )
    assert type(results[1]).__name__ == "UnpicklableError"
    assert "holds a lock" in str(results[1])
    assert isinstance(results[2], workpool.WorkerCrashed)
    assert [results[0], *results[3:]] == [0, 9, 16]


def test_a_timeout_in_a_chunk_keeps_what_the_chunk_raised_before_it(tmp_path: Path) -> None:
    results = workpool.map(
        count_runs_then_fail(tmp_path, raise_on=1, hang_on=2),
        range(5),
        backend="process",
        workers=1,
        chunksize=5,
        task_timeout=0.5,
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], workpool.TaskTimeout)
    assert [results[0], *results[3:]] == [0, 9, 16]
    assert runs_of(tmp_path, 1) == 1


def test_a_result_whose_pickling_hangs_times_out() -> None:
    started = time.monotonic()
    with workpool.Pool(1, backend="process", task_timeout=0.5) as pool:
        error = pool.submit(return_hang_when_pickled, 1).exception(timeout=30)
        assert pool.submit(square, 3).result(timeout=30) == 9  # a new worker took over
    assert isinstance(error, workpool.TaskTimeout)
    assert "pickling what it returned or raised took longer" in str(error)
    assert time.monotonic() - started < 10


def test_a_result_whose_pickling_hangs_in_a_chunk_costs_that_task() -> None:
    results = workpool.map(
        return_hang_when_pickled,
        range(4),
        backend="process",
        workers=1,
        chunksize=4,
        task_timeout=0.5,
        retries=1,
        return_exceptions=True,
    )
    assert results[0] == 0
    assert results[2:] == [2, 3]
    assert isinstance(results[1], workpool.TaskTimeout)
    assert "input position 1" in str(results[1])


@pytest.mark.parametrize("initializer", [broken_initializer, exit_in_initializer])
def test_failing_initializer_breaks_the_pool_quickly(initializer: object) -> None:
    begin = time.monotonic()
    with pytest.raises(workpool.BrokenPool) as info:
        workpool.map(square, range(10), backend="process", workers=2, initializer=initializer)
    assert time.monotonic() - begin < 10
    if initializer is broken_initializer:
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "initializer says no" in str(info.value)


def test_an_initializer_that_ends_its_process_is_named_as_the_cause(start_method: str) -> None:
    # Under spawn and the fork server a worker that dies before it is ready may have
    # failed to run the main module again; one that died in the initializer did not,
    # and the error must point at the initializer rather than at a missing guard.
    with pytest.raises(workpool.BrokenPool) as info:
        workpool.map(
            square,
            range(10),
            backend="process",
            workers=2,
            initializer=exit_in_initializer,
            start_method=start_method,
        )
    message = str(info.value)
    assert message.startswith("the initializer ended 2 worker processes in a row"), message
    assert "while running the initializer" in message
    assert "__main__" not in message


def test_calls_that_fail_leave_no_descriptor_open() -> None:
    # A failed call stops its pool at once (its workers killed, not retired): each
    # worker's descriptors (its pidfd, its exit pipe) must be closed all the same.
    with pytest.raises(ValueError):
        workpool.map(int, ["x"], backend="process", workers=2)  # the zygote's stay open
    gc.collect()
    before = psutil.Process().num_fds()
    for _ in range(5):
        with pytest.raises(ValueError):
            workpool.map(int, ["x"], backend="process", workers=2)
        with pytest.raises(workpool.WorkerCrashed):
            workpool.map(os._exit, [3], backend="process", workers=2)
    # Fewer is no leak: an earlier test's pool may close its own meanwhile.
    assert wait_for(lambda: gc.collect() >= 0 and psutil.Process().num_fds() <= before)


def test_an_initializer_that_cannot_be_pickled_is_refused_at_once() -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"the initializer .* cannot be sent to a worker process"):
        workpool.Pool(1, backend="process", initializer=lock.acquire)


def test_failing_initializer_on_threads_and_serial() -> None:
    for backend in ("thread", "serial"):
        with pytest.raises(workpool.BrokenPool, match="initializer"):
            workpool.map(square, range(10), backend=backend, initializer=broken_initializer)


def test_broken_pool_refuses_new_work_in_the_words_its_calls_failed_with() -> None:
    # A map racing the break may meet it in a submit rather than in a result: it must
    # fail the same way either way, not with the cause wrapped in a second message.
    pool = workpool.Pool(2, backend="process", initializer=broken_initializer)
    try:
        with pytest.raises(workpool.BrokenPool) as failed:
            pool.submit(square, 1).result(timeout=30)
        assert wait_for(lambda: _refusal(pool) is not None, timeout=10)
        refusal = _refusal(pool)
        assert refusal is not None
        assert str(refusal) == str(failed.value)
        assert refusal.__cause__ is failed.value.__cause__
    finally:
        pool.shutdown()


def test_the_first_break_of_a_pool_stands() -> None:
    # A worker that the first start failure started in its place may fail to start
    # after the pool broke: counted, it broke the pool again, in other words ("failed in
    # 3 worker processes" where the calls had "2"). Which comes first is a race that a
    # test of the whole pool loses only now and then, so the second break is made here.
    pool = workpool.Pool(2, backend="process", initializer=broken_initializer)
    try:
        with pytest.raises(workpool.BrokenPool) as failed:
            pool.submit(square, 1).result(timeout=30)
        supervisor = pool._backend._supervisor  # type: ignore[attr-defined]
        with supervisor._lock:
            supervisor._break(workpool.BrokenPool("the initializer failed in 3 worker processes"))
        refusal = _refusal(pool)
        assert str(refusal) == str(failed.value)
    finally:
        pool.shutdown()


def _refusal(pool: workpool.Pool) -> BaseException | None:
    try:
        pool.submit(square, 1)
    except workpool.BrokenPool as refusal:
        return refusal
    return None


def test_crash_during_shutdown_still_shuts_down() -> None:
    pool = workpool.Pool(2, backend="process")
    task = crash_on_any({2, 5, 8, 11})
    futures = [pool.submit(task, i) for i in range(12)]
    pool.shutdown(wait=True)
    outcomes = [f.exception(timeout=0) for f in futures]
    crashed = [i for i, e in enumerate(outcomes) if isinstance(e, workpool.WorkerCrashed)]
    assert crashed == [2, 5, 8, 11]
    assert [f.result() for f, e in zip(futures, outcomes) if e is None] == [
        i * i for i in range(12) if i % 3 != 2
    ]


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize(
    ("backend", "child_ends", "status"),
    [
        ("process", "return", 0),
        ("process", "raise", 1),
        ("process", "exit", 3),
        ("thread", "return", 0),
    ],
)
def test_a_process_a_task_forks_that_returns_from_the_task_ends_there(
    backend: str, child_ends: str, status: int
) -> None:
    # The child forgot os._exit: back in the worker's loop, it must neither answer on
    # the worker's socket (stealing its chunks and results) nor wait for work forever.
    with workpool.Pool(1, backend=backend) as pool:
        outcome = pool.submit(fork_and_forget_to_exit, child_ends).result(timeout=30)
        assert outcome == ("parent", status)
        assert list(pool.map(square, range(50))) == [x * x for x in range(50)]
        assert pool.submit(square, 7).result(timeout=10) == 49


def test_attribution_never_lies_across_start_methods(start_method: str) -> None:
    bad = {4, 31, 32, 77}
    results = workpool.map(
        crash_on_any(bad, "sigkill"),
        range(100),
        backend="process",
        workers=2,
        chunksize=8,
        start_method=start_method,
        return_exceptions=True,
    )
    blamed = {i for i, r in enumerate(results) if isinstance(r, workpool.WorkerCrashed)}
    assert blamed == bad
    for position in bad:
        assert f"input position {position}" in str(results[position])


def test_function_that_kills_the_worker_when_unpickled_does_not_loop_forever() -> None:
    begin = time.monotonic()
    results = workpool.map(
        CrashWhenFunctionUnpickled(),
        range(4),
        backend="process",
        workers=2,
        return_exceptions=True,
    )
    assert all(isinstance(r, workpool.WorkerCrashed) for r in results)
    assert time.monotonic() - begin < 20


def test_function_that_cannot_be_rebuilt_fails_each_task_with_the_reason() -> None:
    results = workpool.map(
        RaiseWhenFunctionUnpickled(), range(3), backend="process", return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "cannot be rebuilt in a worker" in str(results[0])


def test_idle_worker_killed_from_outside_is_replaced_without_blame() -> None:
    with workpool.Pool(2, backend="process") as pool:
        pids = {pool.submit(sleep_then_pid, 0.05).result(timeout=30) for _ in range(6)}
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Nothing was running, so nothing fails; new workers serve new work.
        assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
        assert not pids & {pool.submit(pid_of, i).result(timeout=30) for i in range(10)}


def test_thread_watchdog_does_not_swallow_the_wake_up_of_a_worker() -> None:
    # The watchdog and the workers wait for different things: a submit must wake a
    # worker, not the watchdog.
    with workpool.Pool(1, backend="thread", task_timeout=5) as pool:
        assert pool.submit(time.sleep, 0.05).result(timeout=30) is None
        for value in range(20):
            assert pool.submit(abs, -value).result(timeout=10) == value


# --- deaths that the worker's own descriptors do not announce -----------------------------


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("method", METHODS, ids=[m or "default" for m in METHODS])
def test_a_worker_killed_while_another_process_holds_its_descriptors_is_noticed(
    tmp_path: Path, method: str | None
) -> None:
    pid_file = tmp_path / "pids"
    with workpool.Pool(1, backend="process", start_method=method) as pool:
        future = pool.submit(hold_descriptors_then_hang, str(pid_file))
        try:
            assert wait_for(pid_file.exists, timeout=30)
            os.kill(int(pid_file.read_text().split()[1]), signal.SIGKILL)
            assert isinstance(future.exception(timeout=20), workpool.WorkerCrashed)
            assert pool.submit(square, 3).result(timeout=30) == 9
        finally:
            kill_holder(pid_file)


@pytest.fixture(params=[True, False], ids=["pidfd", "waitpid"])
def with_pidfd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each way the engine confirms a death: a pidfd, or (where there is none) waitpid."""
    if not request.param:
        from workpool.backends.process import lifeline

        monkeypatch.setattr(lifeline, "open_pidfd", lambda pid: None)
    return bool(request.param)


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.usefixtures("with_pidfd")
def test_a_timed_out_worker_is_replaced_while_another_process_holds_its_descriptors(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pids"
    with workpool.Pool(1, backend="process", start_method="fork", task_timeout=0.5) as pool:
        future = pool.submit(hold_descriptors_then_hang, str(pid_file))
        try:
            assert isinstance(future.exception(timeout=20), workpool.TaskTimeout)
            assert pool.submit(square, 3).result(timeout=30) == 9
        finally:
            kill_holder(pid_file)


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.usefixtures("with_pidfd")
def test_shutdown_kills_a_worker_that_will_not_stop_and_waits_without_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workpool.backends.process import supervisor

    monkeypatch.setattr(supervisor, "STOP_GRACE", 0.5)
    pool = workpool.Pool(1, backend="process", start_method="fork")
    # Count the supervisor's rounds: each one must wait for something to happen.
    poller = pool._backend._supervisor._poller  # type: ignore[attr-defined]
    wait = poller.wait
    rounds = 0

    def counted(timeout: float | None = None) -> Any:
        nonlocal rounds
        rounds += 1
        return wait(timeout)

    poller.wait = counted
    holder = pool.submit(hold_descriptors_and_linger, 60).result(timeout=30)
    stopper = threading.Thread(target=pool.shutdown)
    try:
        stopper.start()
        stopper.join(timeout=20)
        assert not stopper.is_alive(), "shutdown never saw the killed worker end"
        assert rounds < 100, f"the supervisor went round {rounds} times"
    finally:
        os.kill(holder, signal.SIGKILL)
        stopper.join(timeout=30)


@pytest.mark.parametrize("how", ["map", "unordered", "imap", "pool-map", "initializer"])
def test_a_failed_call_is_freed_without_a_collection_of_cycles(how: str) -> None:
    """A service whose calls fail now and then gets their memory back at once.

    The exception a call raises passes through workpool's frames, and its traceback
    keeps them: if one of them holds the exception, or the call (whose batches and
    chunks hold the exception), they make a cycle, and the call's results so far, the
    shared memory of its arrays and (one-shot) its whole pool and buffers wait for the
    next collection of cycles, which in a program with a large heap may be hours away.
    """

    def failing_call() -> None:
        with pytest.raises((ValueError, workpool.BrokenPool)):
            if how == "map":
                workpool.map(fail_on(5), range(40), backend="process", workers=2, chunksize=1)
            elif how == "unordered":
                workpool.map(fail_on(5), range(40), backend="process", workers=2, ordered=False)
            elif how == "imap":
                list(workpool.imap(fail_on(5), range(40), backend="process", workers=2))
            elif how == "pool-map":
                with workpool.Pool(2, backend="process") as pool:
                    list(pool.map(fail_on(5), range(40)))
            else:
                workpool.map(
                    square,
                    range(8),
                    backend="process",
                    workers=2,
                    initializer=broken_initializer,
                )

    failing_call()  # imports done, the zygote started
    assert left_to_the_cycle_collector(failing_call) == []
