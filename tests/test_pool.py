"""workpool.Pool as a concurrent.futures.Executor, on every backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import itertools
import math
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import FORK_WARNING, live_worker_processes, wait_for
from helpers import (
    Scaler,
    Tracked,
    add,
    fail_on,
    fails_when_released,
    hold,
    make_tracked,
    pid_and,
    recall,
    remember,
    slow_square,
    square,
    wait_at_zero,
    where,
)


def test_pool_is_an_executor() -> None:
    assert issubclass(workpool.Pool, concurrent.futures.Executor)


def test_submit_returns_a_future_with_the_result(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        future = pool.submit(add, 1, y=2)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=30) == 3


def test_submit_many_and_wait(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        futures = [pool.submit(square, i) for i in range(200)]
        _, not_done = concurrent.futures.wait(futures, timeout=30)
        assert not not_done
        assert [f.result() for f in futures] == [i * i for i in range(200)]


def test_submitted_failure_is_the_original_exception(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        future = pool.submit(fail_on(5), 5)
        error = future.exception(timeout=30)
        assert isinstance(error, ValueError)
        assert "bad input 5" in str(error)
        # The pool goes on after a task's failure.
        assert pool.submit(square, 3).result(timeout=30) == 9


def test_executor_map_is_an_iterator_of_ordered_results(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(add, range(10), range(10))
        assert not isinstance(results, list)
        assert list(results) == [2 * i for i in range(10)]


@pytest.mark.parametrize("given", ["list", "generator"])
def test_executor_map_yields_its_first_result_at_once_and_uses_every_worker(given: str) -> None:
    # Executor.map submits everything before anything is measured. Its first result
    # must not wait for a whole share of the input (the items after it here wait until
    # it arrives), and an input without a length must not go to one worker as one chunk.
    release, gave_up = threading.Event(), threading.Event()
    busy: set[str] = set()
    both_busy = threading.Event()

    def held(x: int) -> None:
        busy.add(threading.current_thread().name)
        if len(busy) == 2:
            both_busy.set()
        if x > 0 and not gave_up.is_set() and not release.wait(timeout=10):
            gave_up.set()  # item 0 was not delivered on its own: waiting longer is no use

    items = range(40) if given == "list" else (x for x in range(40))
    with workpool.Pool(2, backend="thread") as pool:
        results = pool.map(held, items)
        next(results)
        delivered_alone = not gave_up.is_set()
        # The next items wait, each on a worker: both workers must hold one.
        used_both = both_busy.wait(timeout=10)
        release.set()
        assert list(results) == [None] * 39
    assert delivered_alone
    assert used_both


def test_executor_map_works_after_the_with_block_like_the_stdlib(backend: str) -> None:
    # concurrent.futures submits everything at map() time, so results survive shutdown.
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(square, range(50))
    assert list(results) == [i * i for i in range(50)]


def test_executor_map_timeout_is_an_overall_deadline() -> None:
    with workpool.Pool(2, backend="thread") as pool:
        results = pool.map(slow_square, range(4), [1.0] * 4, timeout=0.2)
        with pytest.raises(concurrent.futures.TimeoutError):
            list(results)


@pytest.mark.parametrize("timeout", [math.inf, 1e12], ids=["inf", "1e12"])
def test_executor_map_timeout_longer_than_any_wait_is_no_deadline(
    backend: str, timeout: float
) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(slow_square, range(4), [0.05] * 4, timeout=timeout)
        assert list(results) == [0, 1, 4, 9]


@pytest.mark.parametrize("timeout", [0, -2.5])
def test_executor_map_deadline_already_past_yields_what_is_done(
    backend: str, timeout: float, tmp_path: Path
) -> None:
    # As in concurrent.futures, a timeout of 0 or less (a budget `end - now` that has
    # run out) is a deadline already past, not a bad argument: what is done is
    # yielded, and the first result that is not raises TimeoutError.
    with workpool.Pool(1, backend=backend) as pool:
        done = pool.map(square, [3, 4], timeout=timeout)
        assert pool.submit(square, 0).result(timeout=30) == 0  # one worker: after the map's
        assert list(done) == [9, 16]
        if backend == "serial":
            return  # its tasks run inside map(): every result is done
        waiting = pool.map(wait_at_zero, [0], [str(tmp_path)], timeout=timeout)
        try:
            with pytest.raises(concurrent.futures.TimeoutError):
                next(waiting)
        finally:
            (tmp_path / "release").touch()


def test_executor_map_raises_at_the_failing_position(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(fail_on(3), range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError, match="bad input 3"):
            next(results)


def test_pool_imap_and_starmap(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        assert list(pool.imap(square, range(100))) == [i * i for i in range(100)]
        assert sorted(pool.imap(square, range(100), ordered=False)) == [i * i for i in range(100)]
        assert pool.starmap(pow, [(2, 5), (3, 3)]) == [32, 27]
        results = pool.starmap(fail_on(4), [(i,) for i in range(6)], return_exceptions=True)
        assert isinstance(results[4], ValueError)


# The standard pools' words: code written for them looks for these in the message (to
# stop submitting quietly while a service shuts down).
AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"


def test_submit_after_shutdown_raises_as_the_standard_pools_do(backend: str) -> None:
    pool = workpool.Pool(1, backend=backend)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=AFTER_SHUTDOWN) as refused:
        pool.submit(square, 2)
    # The library's own error, like every other it raises (README, "When things go wrong").
    assert isinstance(refused.value, workpool.WorkpoolError)
    with pytest.raises(RuntimeError, match=AFTER_SHUTDOWN):
        pool.imap(square, [1])
    with pytest.raises(RuntimeError, match=AFTER_SHUTDOWN):
        pool.map(square, [1])


def test_shutdown_stops_an_imap_that_reads_on_from_another_thread(backend: str) -> None:
    # A service's consumer thread reads an endless imap; its main thread shuts the pool
    # down. The imap may not go on submitting (shutdown would wait for ever): like
    # Executor.map with buffersize, its next submission raises, but only once the
    # results of what the pool had taken are yielded (it runs them all the same).
    pool = workpool.Pool(2, backend=backend)
    read = 0

    def endless() -> Iterator[int]:
        nonlocal read
        for x in itertools.count():
            read += 1
            yield x

    # Tasks that keep the workers busy, so that the pool is never idle between them.
    results = pool.imap(slow_square, endless(), itertools.repeat(0.01), chunksize=1)
    outcome: list[BaseException] = []
    got: list[int] = []

    def consume() -> None:
        try:
            for value, _ in zip(results, range(400)):  # a bound, should the pool never refuse
                got.append(value)
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert wait_for(lambda: len(got) >= 10 or bool(outcome))
    pool.shutdown(wait=True)
    consumer.join(60)
    assert not consumer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert AFTER_SHUTDOWN in str(outcome[0])
    assert got == [x * x for x in range(len(got))]
    assert read - len(got) <= 1  # only the item the pool refused never ran


@pytest.mark.parametrize("stop", ["terminate", "cancel_futures"])
def test_a_half_read_imap_ends_promptly_once_the_pool_is_stopped(backend: str, stop: str) -> None:
    # Read a few results, then stop the pool from under the iterator. Reading on yields
    # only right answers, then ends with one of the two documented errors: the work the
    # pool dropped is cancelled (CancelledError), or the pool refuses the next chunk
    # (RuntimeError, always so on serial, where no chunk waits in the pool).
    pool = workpool.Pool(2, backend=backend)
    results = pool.imap(slow_square, range(10_000), itertools.repeat(0.002), chunksize=4)
    got = [next(results) for _ in range(6)]
    if stop == "terminate":
        pool.terminate()
    else:
        pool.shutdown(cancel_futures=True)
    with pytest.raises((concurrent.futures.CancelledError, RuntimeError)) as raised:
        got.extend(results)
    if isinstance(raised.value, RuntimeError):
        assert AFTER_SHUTDOWN in str(raised.value)
    assert got == [x * x for x in range(len(got))]
    assert len(got) < 10_000
    with pytest.raises(StopIteration):
        next(results)
    pool.shutdown()


def test_shutdown_waits_for_submitted_work(backend: str) -> None:
    pool = workpool.Pool(2, backend=backend)
    futures = [pool.submit(slow_square, i, 0.02) for i in range(10)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [i * i for i in range(10)]


def test_shutdown_without_wait_still_finishes_work(backend: str) -> None:
    pool = workpool.Pool(2, backend=backend)
    futures = [pool.submit(slow_square, i, 0.02) for i in range(6)]
    pool.shutdown(wait=False)
    concurrent.futures.wait(futures, timeout=30)
    assert [f.result() for f in futures] == [i * i for i in range(6)]


@pytest.mark.parametrize("backend_name", ["thread", "process"])
def test_shutdown_cancel_futures_cancels_what_has_not_started(backend_name: str) -> None:
    pool = workpool.Pool(1, backend=backend_name)
    futures = [pool.submit(slow_square, i, 0.2) for i in range(20)]
    begin = time.monotonic()
    pool.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - begin < 5
    cancelled = [f for f in futures if f.cancelled()]
    finished = [f for f in futures if not f.cancelled()]
    assert len(cancelled) >= 15
    assert all(f.result() == futures.index(f) ** 2 for f in finished)


def test_futures_cancelled_by_shutdown_count_as_done_for_wait_and_as_completed(
    backend: str,
) -> None:
    # concurrent.futures.wait() and as_completed() see a cancelled Future only once it
    # has been told (CPython gh-87893: the standard pools leave them waiting for ever).
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    pool = workpool.Pool(1, backend=backend)
    blocker = pool.submit(slow_square, 1, 0.5)
    assert wait_for(blocker.running, timeout=30)
    queued = [pool.submit(square, i) for i in range(5)]
    assert queued[-1].cancel()  # cancelled by the user first: the pool drops it all the same
    pool.shutdown(wait=True, cancel_futures=True)
    assert sum(future.cancelled() for future in queued) >= 3  # processes run what they hold
    assert not concurrent.futures.wait([blocker, *queued], timeout=10).not_done
    assert set(concurrent.futures.as_completed(queued, timeout=10)) == set(queued)


def test_calls_cancelled_by_one_shutdown_each_get_an_exception_of_their_own(
    backend: str,
) -> None:
    # Their callers may be different threads: one exception object raised in both would
    # carry both tracebacks, and a note one of them adds would show in the other.
    if backend == "serial":
        pytest.skip("serial runs each call inside map(): nothing is ever pending")
    pool = workpool.Pool(1, backend=backend)
    blocker = pool.submit(slow_square, 1, 0.5)
    assert wait_for(blocker.running, timeout=30)
    calls = [pool.map(square, range(3)), pool.map(square, range(3))]
    pool.shutdown(wait=True, cancel_futures=True)
    assert blocker.result(timeout=30) == 1
    errors = []
    for results in calls:
        with pytest.raises(concurrent.futures.CancelledError) as caught:
            list(results)
        errors.append(caught.value)
    assert errors[0] is not errors[1]


def test_cancel_a_pending_future(backend: str) -> None:
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    with workpool.Pool(1, backend=backend) as pool:
        blocker = pool.submit(slow_square, 1, 0.3)
        queued = [pool.submit(square, i) for i in range(10)]
        assert queued[-1].cancel()
        assert blocker.result(timeout=30) == 1
        assert [f.result(timeout=30) for f in queued[:-1]] == [i * i for i in range(9)]
        assert queued[-1].cancelled()


def test_a_process_worker_holds_at_most_one_future_ahead_of_the_one_it_runs(
    tmp_path: Path,
) -> None:
    # Once tasks are seen to be short, a process worker is sent its next task while it
    # runs one: that Future is running() and cannot be cancelled, as README says. Only
    # one per worker: the others behind a long task stay pending and cancel.
    with workpool.Pool(1, backend="process") as pool:
        assert [pool.submit(square, i).result(timeout=30) for i in range(16)] == [
            i * i for i in range(16)
        ]
        blocker = pool.submit(hold, 0, str(tmp_path), (0,))
        assert wait_for(lambda: (tmp_path / "started-0").exists())
        behind = [pool.submit(square, i) for i in range(1, 6)]
        ahead = [f for f in behind if f.running()]
        assert len(ahead) <= 1
        assert all(f.cancel() for f in behind if f not in ahead)
        assert not any(f.cancel() for f in ahead)
        (tmp_path / "release").touch()
        assert blocker.result(timeout=30) == 0
        assert [f.result(timeout=30) for f in ahead] == [1] * len(ahead)
        assert sum(f.cancelled() for f in behind) == len(behind) - len(ahead)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("how", ["set_result", "set_running_or_notify_cancel"])
def test_a_pending_future_the_caller_settles_itself_costs_no_other_result(
    backend: str, how: str, tmp_path: Path
) -> None:
    # Only an executor should call these on its Futures; one caller that does anyway
    # (to give a result early, say) must not cost the pool, or the other tasks.
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    with workpool.Pool(1, backend=backend) as pool:
        blocker = pool.submit(hold, 0, str(tmp_path), (0,))
        assert wait_for(lambda: (tmp_path / "started-0").exists())
        settled = pool.submit(square, 3)
        if how == "set_result":
            settled.set_result("given early")
        else:
            assert settled.set_running_or_notify_cancel()
        after = pool.submit(square, 4)
        (tmp_path / "release").touch()
        assert blocker.result(timeout=30) == 0
        assert after.result(timeout=30) == 16
        assert pool.submit(square, 5).result(timeout=30) == 25
        if how == "set_result":
            assert settled.result(timeout=0) == "given early"


@pytest.mark.parametrize("backend_name", ["thread", "process"])  # serial: done in submit()
def test_a_done_callback_that_calls_sys_exit_costs_no_other_result(
    backend_name: str, tmp_path: Path
) -> None:
    # concurrent.futures logs what a callback raises, but passes SystemExit on, into the
    # thread that settled the Future: a pool's own thread must not die or break of it.
    def leave(_: concurrent.futures.Future[int]) -> None:
        raise SystemExit(3)

    task = functools.partial(hold, directory=str(tmp_path), held=(0,))
    with workpool.Pool(2, backend=backend_name) as pool:
        futures = [pool.submit(task, i) for i in range(6)]
        # Item 0 waits for its release: the callback is added before it can be done
        # (else it would run here, at once, in this thread).
        futures[0].add_done_callback(leave)
        (tmp_path / "release").touch()
        assert [f.result(timeout=30) for f in futures] == list(range(6))
        assert pool.submit(square, 3).result(timeout=30) == 9


def _exit_from_a_pool_thread(caller: threading.Thread) -> Callable[[Any], None]:
    """A done-callback that calls ``sys.exit`` when a pool's thread settles its Future."""

    def leave(_: Any) -> None:
        if threading.current_thread() is not caller:
            raise SystemExit(3)

    return leave


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_sys_exit_in_the_callback_of_a_timed_out_task_costs_no_later_timeout(
    backend: str, tmp_path: Path
) -> None:
    # The thread that reports a timeout hands the Future its TaskTimeout; a callback's
    # SystemExit must not end it, or no later task would ever time out.
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): no thread of its own settles it")
    task = functools.partial(hold, directory=str(tmp_path), held=(0, 1))
    with workpool.Pool(2, backend=backend, task_timeout=1.0) as pool:
        first = pool.submit(task, 0)
        first.add_done_callback(_exit_from_a_pool_thread(threading.current_thread()))
        with pytest.raises(workpool.TaskTimeout):
            first.result(timeout=30)
        later = pool.submit(task, 1)  # held for 30 s: only its timeout ends it sooner
        try:
            with pytest.raises(workpool.TaskTimeout):
                later.result(timeout=15)
        finally:
            (tmp_path / "release").touch()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_sys_exit_in_the_callback_of_a_task_failed_by_a_broken_pool_costs_no_other_future(
    backend: str, tmp_path: Path
) -> None:
    # A failing initializer fails every queued task with BrokenPool, one after another:
    # a callback's SystemExit on the first must not leave the others pending for ever.
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever queued")
    pool = workpool.Pool(
        1, backend=backend, initializer=fails_when_released, initargs=(str(tmp_path),)
    )
    try:
        futures = [pool.submit(square, i) for i in range(4)]
        # The initializer waits for its release: no Future is done before this.
        futures[0].add_done_callback(_exit_from_a_pool_thread(threading.current_thread()))
        (tmp_path / "release").touch()
        for future in futures:
            assert isinstance(future.exception(timeout=15), workpool.BrokenPool)
    finally:
        pool.shutdown()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_sys_exit_in_a_callback_of_a_future_cancelled_by_shutdown_costs_no_other_future(
    backend: str, tmp_path: Path
) -> None:
    # shutdown(cancel_futures=True) cancels the pending Futures one after another; a
    # callback's SystemExit on one must not leave those after it pending for ever. It
    # may reach the caller of shutdown(), as the standard pools let it, but only then.
    if backend == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    with workpool.Pool(1, backend=backend) as pool:
        blocker = pool.submit(hold, 0, str(tmp_path), (0,))
        assert wait_for(lambda: (tmp_path / "started-0").exists(), timeout=30)
        queued = [pool.submit(square, i) for i in range(1, 6)]
        # Queued behind the blocker, or held by its worker ahead of it (processes):
        # the first that can still be cancelled calls sys.exit when it is.
        cancellable = [f for f in queued if not f.running()]
        assert cancellable
        cancellable[0].add_done_callback(lambda _: sys.exit(3))
        try:
            with contextlib.suppress(SystemExit):
                pool.shutdown(wait=False, cancel_futures=True)
        finally:
            (tmp_path / "release").touch()
        assert blocker.result(timeout=30) == 0
        # Each was cancelled, or had started meanwhile (processes) and finished.
        _, pending = concurrent.futures.wait(queued, timeout=30)
        assert not pending
        assert [f.result() for f in queued if not f.cancelled()] == [
            i * i for i, f in enumerate(queued, 1) if not f.cancelled()
        ]


def test_run_in_executor(backend: str) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with workpool.Pool(2, backend=backend) as pool:
            return list(
                await asyncio.gather(*(loop.run_in_executor(pool, square, i) for i in range(5)))
            )

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_dask_local_schedulers_run_on_a_pool(backend: str, scheduler: str) -> None:
    # Dask documents `dask.config.set(pool=executor)` for its local schedulers, which
    # read the executor's size where the standard executors keep it.
    dask = pytest.importorskip("dask")
    total = dask.delayed(sum)([dask.delayed(square)(i) for i in range(6)])
    with workpool.Pool(2, backend=backend) as pool:
        assert dask.compute(total, scheduler=pool) == (55,)
        with dask.config.set(pool=pool, scheduler=scheduler):
            assert total.compute() == 55


def test_pool_initializer(backend: str) -> None:
    with workpool.Pool(2, backend=backend, initializer=remember, initargs=(42,)) as pool:
        assert pool.submit(recall, None).result(timeout=30) == 42
        assert set(pool.imap(recall, range(20))) == {42}


def test_the_serial_initializer_runs_once_when_threads_submit_at_once() -> None:
    # The serial pool's one worker is whichever thread calls submit(); the initializer
    # is still the pool's, run once before the first task, not once per thread that
    # came while it ran (a second run would, say, open a second connection).
    entered: list[str] = []
    first_inside = threading.Event()

    def initializer() -> None:
        entered.append(threading.current_thread().name)
        first_inside.set()
        # The first stays in until another thread has come in too (or a second passed).
        wait_for(lambda: len(entered) > 1, timeout=1.0)

    with workpool.Pool(backend="serial", initializer=initializer) as pool:
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(pool.submit(square, 2).result()))
        first.start()
        assert first_inside.wait(timeout=30)
        assert pool.submit(square, 3).result(timeout=30) == 9
        first.join(timeout=30)
        assert results == [4]
    assert len(entered) == 1


def test_max_tasks_per_worker_on_a_pool() -> None:
    with workpool.Pool(1, backend="process", max_tasks_per_worker=2) as pool:
        pids = [pool.submit(where, i).result(timeout=30)[0] for i in range(6)]
    assert len(set(pids)) == 3


def test_max_tasks_per_worker_holds_over_many_calls_of_large_chunks() -> None:
    # A chunk larger than the tasks a worker has left is cut to fit, however it is
    # handed out (the caller's thread sends to an idle worker itself): a worker sent
    # more than its share was never retired nor given work again, and the pool, its
    # workers lost one by one, hung.
    with workpool.Pool(2, backend="process", max_tasks_per_worker=3) as pool:
        for _ in range(12):
            got = list(pool.map(pid_and, range(40), chunksize=8, timeout=60))
            assert [x for _, x in got] == list(range(40))
            runs: dict[int, int] = {}
            for pid, _ in got:
                runs[pid] = runs.get(pid, 0) + 1
            assert max(runs.values()) <= 3, runs


def _in_a_forked_child(pool: workpool.Pool) -> str:
    """Fork; in the child, use the parent's pool, then leave it as a ``with`` block does.

    Returns what the child reported, or "hung" if it did not end within the deadline.
    """

    def use_it() -> str:
        outcome = "accepted"
        try:
            pool.submit(square, 2)
        except RuntimeError as exc:
            outcome = f"refused: {exc}"
        pool.shutdown()
        return outcome

    return _forked(use_it)


def _forked(action: Callable[[], str]) -> str:
    """Fork; in the child, run ``action`` and report what it returns (or raised).

    Returns the report, or "hung" if the child did not end within the deadline.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            try:
                outcome = action()
            except BaseException as exc:
                outcome = f"raised {exc!r}"
            os.write(write, outcome.encode())
        finally:
            os._exit(0)
    os.close(write)
    status = 0

    def ended() -> bool:
        nonlocal status
        done, status = os.waitpid(pid, os.WNOHANG)
        return done == pid

    with os.fdopen(read) as report:
        if not wait_for(ended, timeout=10):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hung"
        return report.read() or f"ended with status {status} and said nothing"


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_cannot_use_its_parents_pool_and_leaves_it_alone(backend: str) -> None:
    # A script that forks inside a `with Pool()` block leaves that block in the child
    # too: the child must neither hang there nor touch the parent's workers.
    if backend == "interpreter":
        # CPython 3.14t's child of a fork made while subinterpreters run dies of SIGSEGV
        # more often than not, even one that only calls os._exit(0).
        pytest.skip("a fork beside running subinterpreters crashes in CPython itself")
    with workpool.Pool(2, backend=backend) as pool:
        running = pool.submit(slow_square, 3, 0.3)
        outcome = _in_a_forked_child(pool)
        assert outcome.startswith("refused: "), outcome
        assert f"made in process {os.getpid()}" in outcome
        assert running.result(timeout=30) == 9
        assert pool.submit(square, 4).result(timeout=30) == 16


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_makes_pools_of_its_own(start_method: str) -> None:
    # A server that made a Pool and then forked its workers (gunicorn's preload): each
    # worker makes a pool of its own, whatever start method the parent's used.
    with workpool.Pool(1, backend="process", start_method=start_method) as pool:
        assert pool.submit(square, 2).result(timeout=60) == 4

        def own_pool() -> str:
            with workpool.Pool(1, backend="process", start_method=start_method) as mine:
                return str(mine.submit(square, 3).result(timeout=60))

        assert _forked(own_pool) == "9"
        assert pool.submit(square, 4).result(timeout=60) == 16


def test_pool_start_methods(start_method: str) -> None:
    with workpool.Pool(2, backend="process", start_method=start_method) as pool:
        assert pool.submit(lambda: "from a lambda").result(timeout=60) == "from a lambda"
        assert list(pool.map(square, range(20))) == [i * i for i in range(20)]


def test_pool_reports_what_it_is() -> None:
    with workpool.Pool(3, backend="thread") as pool:
        assert pool.workers == 3
        assert pool.backend == "thread"
        assert "thread" in repr(pool)


def test_pool_takes_max_workers_as_concurrent_futures_spells_it(backend: str) -> None:
    with workpool.Pool(max_workers=3, backend=backend) as pool:
        assert pool.workers == (1 if backend == "serial" else 3)
        assert pool.submit(square, 3).result(timeout=30) == 9


def test_dropped_pool_lets_its_workers_go() -> None:
    pool = workpool.Pool(2, backend="process")
    assert pool.submit(square, 2).result(timeout=30) == 4
    del pool
    gc.collect()
    assert wait_for(lambda: not live_worker_processes(), timeout=10)


@pytest.mark.parametrize("method", ["imap", "map-buffersize"])
def test_a_pool_dropped_while_its_results_are_read_delivers_them_all(
    backend: str, method: str
) -> None:
    # `for r in Pool().imap(...)`: nothing but the iterator refers to the pool. It must
    # not shut down under the results (multiprocessing.Pool's imap keeps its pool too).
    pool = workpool.Pool(2, backend=backend)
    if method == "imap":
        results = pool.imap(square, range(300), chunksize=1)
    else:
        results = pool.map(square, range(300), buffersize=2)
    dropped = weakref.ref(pool)
    del pool
    gc.collect()
    assert dropped() is not None, "the pool was let go while its results were pending"
    assert list(results) == [i * i for i in range(300)]
    del results
    gc.collect()
    assert dropped() is None  # once they are read, the pool goes (and its workers)


def test_submit_from_many_threads(backend: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        results: list[int] = []
        lock = threading.Lock()

        def client(base: int) -> None:
            for i in range(50):
                value = pool.submit(square, base + i).result(timeout=30)
                with lock:
                    results.append(value)

        threads = [threading.Thread(target=client, args=(k * 100,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == sorted((k * 100 + i) ** 2 for k in range(4) for i in range(50))


def test_a_finished_pool_never_touches_descriptors_it_gave_back() -> None:
    import os

    pool = workpool.Pool(2, backend="process")
    assert pool.submit(square, 2).result(timeout=30) == 4
    pool.shutdown()
    pipes = [os.pipe() for _ in range(8)]  # likely to reuse what the pool closed
    try:
        pool.shutdown()  # again, and then the garbage collector: neither may write
        del pool
        gc.collect()
        for read_end, _ in pipes:
            os.set_blocking(read_end, False)
            with pytest.raises(BlockingIOError):
                os.read(read_end, 1)
    finally:
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)


def _collected(ref: weakref.ref[Any]) -> bool:
    gc.collect()
    return ref() is None


def test_a_pool_keeps_no_callable_once_its_future_is_done(backend: str) -> None:
    # A long-lived pool must not keep alive what it was given: here a bound method,
    # which holds its whole object.
    with workpool.Pool(2, backend=backend) as pool:
        tracked = Tracked()
        watch = weakref.ref(tracked)
        assert pool.submit(tracked.method).result(timeout=30) == "called"
        del tracked
        assert wait_for(lambda: _collected(watch), timeout=10)
        assert pool.submit(square, 3).result(timeout=30) == 9  # the pool is still open


def test_a_callable_changed_between_two_calls_runs_as_it_is_now(backend: str) -> None:
    # The process pool pickled a callable object (a bound method, a partial) once and
    # its workers kept it: after scaler.factor = 3, submit and map still multiplied
    # by 2, where the standard executors and the other backends multiply by 3.
    with workpool.Pool(2, backend=backend) as pool:
        scaler = Scaler(2)
        half = functools.partial(Scaler.scale, Scaler(2))
        assert pool.submit(scaler, 1).result(timeout=30) == 2
        assert pool.submit(scaler.scale, 1).result(timeout=30) == 2
        assert pool.submit(half, 1).result(timeout=30) == 2
        assert list(pool.map(scaler, [1, 2])) == [2, 4]
        scaler.factor = 3
        half.args[0].factor = 3
        assert pool.submit(scaler, 1).result(timeout=30) == 3
        assert pool.submit(scaler.scale, 1).result(timeout=30) == 3
        assert pool.submit(half, 1).result(timeout=30) == 3
        assert list(pool.map(scaler, [1, 2])) == [3, 6]
        assert list(pool.imap(scaler.scale, [1, 2])) == [3, 6]


@pytest.mark.parametrize("how", ["Pool.map", "Pool.imap", "imap"])
def test_a_result_the_consumer_drops_is_freed(backend: str, how: str) -> None:
    with workpool.Pool(2, backend=backend) as pool:
        if how == "Pool.map":
            results = pool.map(make_tracked, range(10))
        elif how == "Pool.imap":
            results = pool.imap(make_tracked, range(10))
        else:
            results = workpool.imap(make_tracked, range(10), backend=backend, chunksize=5)
        count = 0
        for result in results:
            watch = weakref.ref(result)
            del result
            assert wait_for(functools.partial(_collected, watch), timeout=10)
            count += 1
        assert count == 10


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_process_forked_beside_a_starting_worker_does_not_hide_its_exit() -> None:
    # Another thread may fork (another pool starting its workers, a multiprocessing
    # Manager) just as a worker is forked, and the copy then holds the worker's end of
    # multiprocessing's sentinel pipe. The pool must still see its worker end, and
    # shut down, while that copy lives: here a bystander forked at exactly that moment.
    release_r, release_w = os.pipe()
    armed = [True]
    bystanders: list[int] = []

    def fork_a_bystander() -> None:
        if not armed[0] or threading.current_thread().name != "workpool-supervisor":
            return
        armed[0] = False
        pid = os.fork()
        if pid == 0:  # the bystander: wait to be released, touch nothing else
            os.read(release_r, 1)
            os._exit(0)
        bystanders.append(pid)

    os.register_at_fork(after_in_parent=fork_a_bystander)
    try:
        pool = workpool.Pool(1, backend="process", start_method="fork")
        assert pool.submit(square, 3).result(timeout=30) == 9
        assert bystanders, "the bystander was not forked"
        pool.submit(int).cancel()
        stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
        stopper.start()
        stopper.join(timeout=30)
        assert not stopper.is_alive(), "shutdown waited for the bystander, not the worker"
    finally:
        armed[0] = False
        os.write(release_w, b"x")
        for pid in bystanders:
            os.waitpid(pid, 0)
        os.close(release_r)
        os.close(release_w)


@pytest.mark.parametrize(
    ("buffersize", "error", "message"),
    [
        ("foo", TypeError, "buffersize must be an integer or None; got 'foo'"),
        (2.0, TypeError, "buffersize must be an integer or None; got 2.0"),
        (0, ValueError, "buffersize must be None or > 0; got 0"),
        (-1, ValueError, "buffersize must be None or > 0; got -1"),
    ],
)
def test_map_buffersize_is_checked_at_once(buffersize: Any, error: type, message: str) -> None:
    with workpool.Pool(1, backend="thread") as pool, pytest.raises(error, match=message):
        pool.map(square, range(4), buffersize=buffersize)


def counting_into(read: list[int]) -> Iterator[int]:
    """0, 1, 2... for ever, each noted in ``read`` as it is taken."""
    for x in itertools.count():
        read.append(x)
        yield x


def test_map_with_buffersize_reads_at_most_that_far_ahead(backend: str) -> None:
    # Python 3.14's Executor.map(buffersize=): the work starts at once, but only that
    # many inputs are taken ahead of the results the caller has taken; so an endless
    # input works, in bounded memory.
    read: list[int] = []
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(square, counting_into(read), buffersize=3)
        assert wait_for(lambda: len(read) == 3)  # submitted before anyone iterates
        taken = [next(results) for _ in range(10)]
        assert taken == [x * x for x in range(10)]
        assert len(read) <= 10 + 3
        results.close()  # type: ignore[attr-defined]
        assert list(pool.map(square, [], buffersize=2)) == []


@pytest.mark.parametrize("buffersize", [1, 2])
def test_map_with_buffersize_keeps_that_many_running_while_the_caller_holds_a_result(
    backend: str, buffersize: int
) -> None:
    # As Executor.map(buffersize=) does: once a result is handed over, the next input
    # is already submitted, so the pool works while the caller works on that result.
    # (Read only at the caller's next call, buffersize=1 left the pool idle meanwhile.)
    read: list[int] = []
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.map(square, counting_into(read), buffersize=buffersize)
        for taken in range(1, 6):
            assert next(results) == (taken - 1) ** 2
            assert len(read) == taken + buffersize
        results.close()  # type: ignore[attr-defined]


def test_executor_map_of_no_iterables_is_empty(backend: str) -> None:
    with workpool.Pool(1, backend=backend) as pool:
        assert list(pool.map(square)) == []  # as Executor.map: zip() of nothing
