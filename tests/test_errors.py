"""A task's failure reaches the caller as itself, with where it happened; nothing else is lost."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import operator
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import BACKENDS, live_worker_processes
from helpers import (
    CountingInput,
    FrozenError,
    GaveUp,
    KeywordOnlyError,
    NeedsTwoArguments,
    NotesInATuple,
    Unpicklable,
    fail_on,
    give_up,
    interrupt_on_one,
    raise_group_of_odd_exceptions,
    raise_odd_exception,
    raise_pool_error,
    raise_refusing_notes,
    raise_worker_only_error,
    result_exiting_when_pickled,
    result_refused_by,
    run_while_imported,
    slow_square,
    square,
    stop_on_two,
)
from workpool.errors import add_note
from workpool.run import HELD_WINDOWS


def test_error_hierarchy_matches_the_contract() -> None:
    assert issubclass(workpool.TaskTimeout, workpool.WorkpoolError)
    assert issubclass(workpool.TaskTimeout, TimeoutError)
    assert issubclass(workpool.WorkerCrashed, workpool.WorkpoolError)
    assert issubclass(workpool.BrokenPool, workpool.WorkpoolError)
    assert issubclass(workpool.BrokenPool, concurrent.futures.BrokenExecutor)
    assert issubclass(workpool.WorkpoolError, Exception)
    for cls in (workpool.WorkpoolError, workpool.TaskTimeout, workpool.BrokenPool):
        assert cls.__module__ == "workpool"


def test_task_exception_keeps_its_type_and_names_the_task(backend: str) -> None:
    with pytest.raises(ValueError, match="bad input 13") as info:
        workpool.map(fail_on(13), range(40), backend=backend, workers=2)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "input position 13" in notes


_KEPT = LookupError("not found")


def _raise_kept(_: object) -> None:
    raise _KEPT


@pytest.mark.parametrize("backend", ["serial", "thread"])
def test_one_exception_raised_again_and_again_keeps_one_note_of_where(backend: str) -> None:
    # A service that keeps one exception and raises it from every failing task: a
    # note per failure would grow it, and its traceback, without end.
    with workpool.Pool(2, backend=backend) as pool:
        for _ in range(5):
            with pytest.raises(LookupError):
                pool.submit(_raise_kept, 0).result()
        for _ in range(3):
            with pytest.raises(LookupError):
                list(pool.map(_raise_kept, range(4)))
    add_note(_KEPT, "the program's own note")
    with pytest.raises(LookupError):
        workpool.map(_raise_kept, range(3), backend=backend)
    notes = [n for n in _KEPT.__notes__ if n.startswith("workpool: raised by")]
    assert len(notes) == 1, _KEPT.__notes__
    # One of the tasks that raised it: on threads they run at once, and the object is
    # theirs to share, so the last to note it wins.
    assert re.search(r"input position [012] ", notes[0]), notes[0]
    assert "the program's own note" in _KEPT.__notes__


def test_process_failure_carries_the_worker_traceback() -> None:
    with pytest.raises(ValueError) as info:
        workpool.map(fail_on(3), range(10), backend="process", workers=2)
    cause = info.value.__cause__
    assert isinstance(cause, workpool.RemoteTraceback)
    assert "Traceback" in str(cause)
    assert "bad input 3" in str(cause)
    assert "in check" in str(cause)  # the failing function's frame
    notes = "\n".join(info.value.__notes__)
    assert "worker process" in notes


def test_return_exceptions_puts_errors_in_place(backend: str) -> None:
    result = workpool.map(fail_on(2), range(5), backend=backend, return_exceptions=True)
    assert result[:2] == [0, 1]
    assert isinstance(result[2], ValueError)
    assert result[3:] == [9, 16]


def test_a_task_s_error_stays_itself_while_another_thread_imports_concurrent_futures(
    tmp_path: Path,
) -> None:
    # Whether a failure (here one retried) was a cancellation was asked of
    # concurrent.futures as found in sys.modules: half-imported by another thread, an
    # AttributeError took the task's own error's place.
    done = run_while_imported(
        "concurrent.futures",
        'print(workpool.map(abs, [1, "x"], backend="serial", return_exceptions=True, retries=1))',
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == """[1, TypeError("bad operand type for abs(): 'str'")]"""


def test_return_exceptions_unordered_keeps_every_outcome(backend: str) -> None:
    result = list(
        workpool.imap(fail_on(5), range(50), backend=backend, ordered=False, return_exceptions=True)
    )
    errors = [r for r in result if isinstance(r, ValueError)]
    assert len(errors) == 1
    assert sorted(r for r in result if not isinstance(r, Exception)) == [
        x * x for x in range(50) if x != 5
    ]


def test_a_failure_stops_reading_the_input(backend: str) -> None:
    # The input is read in the caller, so it counts the tasks handed to any backend.
    source = CountingInput()
    with pytest.raises(ValueError, match="bad input 0"):
        workpool.map(fail_on(0), source, backend=backend, workers=2, chunksize=1)
    # The first chunk failed, so reading stopped within what an ordered run reads ahead
    # (the window of chunks running, and finished ones held behind the first).
    assert source.taken <= HELD_WINDOWS * (2 * 2 + 2) * 1


def test_process_failure_stops_the_map_early() -> None:
    begin = time.monotonic()
    with pytest.raises(ValueError):
        workpool.map(slow_fail_first, range(400), backend="process", workers=2, chunksize=1)
    assert time.monotonic() - begin < 5  # not 400 x 50 ms / 2
    assert live_worker_processes() == []


def slow_fail_first(x: int) -> int:
    if x == 0:
        raise ValueError("first")
    return slow_square(x, 0.05)


def test_imap_ordered_yields_results_before_the_failure(backend: str) -> None:
    seen = []
    with pytest.raises(ValueError, match="bad input 30"):
        for value in workpool.imap(fail_on(30), range(100), backend=backend, workers=2):
            seen.append(value)
    assert seen == [x * x for x in range(30)]


def test_input_iterable_that_raises_midway(backend: str) -> None:
    def items():  # type: ignore[no-untyped-def]
        yield from range(50)
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away") as info:
        workpool.map(square, items(), backend=backend, workers=2)
    # Said on every backend, the serial one's plain loop included: it is the input that
    # failed, not a task.
    assert "raised by the input, after its first 50 items" in "\n".join(info.value.__notes__)
    assert live_worker_processes() == []


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("how", ["imap", "Pool.imap"])
def test_imap_yields_every_result_the_input_gave_before_it_raised(
    backend: str, how: str, ordered: bool
) -> None:
    # As multiprocessing.Pool.imap does: the items read before the input failed ran,
    # and their results come first; the input's exception is raised where it failed.
    def items():  # type: ignore[no-untyped-def]
        yield from range(50)
        raise OSError("disk went away")

    seen = []
    with pytest.raises(OSError, match="disk went away") as info:
        if how == "imap":
            for value in workpool.imap(
                square, items(), backend=backend, workers=2, ordered=ordered
            ):
                seen.append(value)
        else:
            with workpool.Pool(2, backend=backend) as pool:
                for value in pool.imap(square, items(), ordered=ordered):
                    seen.append(value)
    if ordered:
        assert seen == [x * x for x in range(50)]
    else:
        assert sorted(seen) == [x * x for x in range(50)]
    assert "raised by the input, after its first 50 items" in "\n".join(info.value.__notes__)


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("count", [0, 3, 50])
def test_auto_imap_yields_every_result_the_input_gave_before_it_raised_while_measuring(
    count: int, ordered: bool
) -> None:
    # backend="auto" times the first items of the real input: when the input fails
    # among them, their results still come first, as on a named backend.
    def fresh(x: int) -> int:  # measured afresh: not remembered from another test
        return x + 1

    def items():  # type: ignore[no-untyped-def]
        yield from range(count)
        raise OSError("disk went away")

    seen = []
    with pytest.raises(OSError, match="disk went away") as info:
        for value in workpool.imap(fresh, items(), ordered=ordered):
            seen.append(value)
    assert sorted(seen) == list(range(1, count + 1))
    note = f"raised by the input, after its first {count} items"
    assert note in "\n".join(info.value.__notes__)
    with pytest.raises(OSError, match="disk went away") as info:
        workpool.map(fresh, items())
    assert note in "\n".join(info.value.__notes__)


# Run apart, under a memory limit and a deadline: a loop that took the input's own
# failure for a task's would never end, and would fill the memory as it went.
INPUT_FAILS_PROGRAM = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import workpool

def items():
    yield from range(50)
    raise OSError("disk went away")

outcomes = {}
for backend in sys.argv[1:]:
    try:
        results = workpool.map(abs, items(), backend=backend, workers=2, return_exceptions=True)
        outcomes[backend] = f"returned {len(results)} results"
    except OSError as exc:
        outcomes[backend] = f"raised {exc}"
print(json.dumps(outcomes))
"""


def test_input_that_raises_is_raised_even_with_return_exceptions() -> None:
    # return_exceptions puts a failed *task*'s exception among the results; the input's
    # own failure ends the call on every backend, auto included (its serial choice
    # runs the rest in one plain loop).
    backends = [*BACKENDS, "auto"]
    done = subprocess.run(
        [sys.executable, "-c", INPUT_FAILS_PROGRAM, *backends],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.splitlines()[-1])
    assert outcomes == dict.fromkeys(backends, "raised disk went away")


def test_exception_that_cannot_be_unpickled_still_reports(backend: str) -> None:
    with pytest.raises(Exception, match="1-1") as info:
        workpool.map(raise_worker_only_error, [1], backend=backend)
    if backend in ("process", "interpreter"):  # it crossed to the caller as a pickle
        error = info.value
        assert isinstance(error, workpool.TaskError)
        assert "WorkerOnlyError" in str(error)
        assert "raise_worker_only_error" in error.traceback_text
    else:
        assert type(info.value).__name__ == "WorkerOnlyError"


def assert_odd_exceptions_rebuilt(two: Any, keyword: Any, backend: str) -> None:
    """``raise_odd_exception``'s two kinds came back as themselves, attributes and all."""
    assert type(two) is NeedsTwoArguments
    assert (str(two), two.path, two.code) == ("/data/x failed with 3", "/data/x", 3)
    assert type(keyword) is KeywordOnlyError
    assert (str(keyword), keyword.code) == ("code 4", 4)
    if backend in ("process", "interpreter"):
        assert "could not send: lock" in "\n".join(keyword.__notes__)


def test_exception_whose_init_takes_other_arguments_keeps_its_type(backend: str) -> None:
    # Pickle rebuilds an exception as cls(*args): here that call fails, yet the caller
    # still gets its own type, message and attributes (an attribute that cannot be
    # pickled, the lock, stays behind, as a note says).
    two, keyword = workpool.map(
        raise_odd_exception, ["two", "keyword"], backend=backend, return_exceptions=True
    )
    assert_odd_exceptions_rebuilt(two, keyword, backend)
    if backend in ("process", "interpreter"):
        assert "raise_odd_exception" in str(keyword.__cause__)


def test_unpicklable_argument_fails_only_its_task() -> None:
    items = [1, Unpicklable(), 3]
    result = workpool.map(
        lambda x: x if isinstance(x, int) else "?", items, backend="process", return_exceptions=True
    )
    assert result[0] == 1
    assert result[2] == 3
    assert isinstance(result[1], TypeError)
    assert "pickle" in str(result[1])
    assert "arguments could not be pickled" in "\n".join(result[1].__notes__)


def test_unpicklable_result_fails_only_its_task() -> None:
    def make(x: int) -> object:
        return Unpicklable() if x == 1 else x

    result = workpool.map(make, range(3), backend="process", return_exceptions=True)
    assert result[0] == 0
    assert result[2] == 2
    assert isinstance(result[1], TypeError)
    notes = "\n".join(result[1].__notes__)
    assert "result" in notes
    assert "input position 1" in notes


@pytest.mark.parametrize(
    "backend", ["process", "auto", *(b for b in BACKENDS if b == "interpreter")]
)
def test_a_result_whose_pickling_raises_system_exit_fails_only_its_task(backend: str) -> None:
    # Its __reduce__ is the task's code: its SystemExit is that task's failure, as a
    # task's own is (and as ProcessPoolExecutor has it), not a worker that died.
    results = workpool.map(
        result_exiting_when_pickled, range(3), backend=backend, return_exceptions=True
    )
    assert results[0] == 0
    assert results[2] == 2
    if backend == "auto":  # measured inline: the result needs no pickling there
        assert type(results[1]).__name__ == "ExitsWhenPickled"
        return
    assert type(results[1]) is SystemExit
    assert "could not be pickled" in "\n".join(results[1].__notes__)


@pytest.mark.parametrize("ordered", [True, False])
def test_result_that_cannot_be_unpickled_here_fails_only_its_task(ordered: bool) -> None:
    # It pickled in the worker, with the chunk's other results: those are not lost.
    task = functools.partial(result_refused_by, os.getpid(), 3)
    results = workpool.map(
        task, range(8), backend="process", chunksize=8, ordered=ordered, return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert sorted(r for r in results if not isinstance(r, BaseException)) == [
        i * i for i in range(8) if i != 3
    ]
    if ordered:
        assert isinstance(results[3], ValueError)
    notes = "\n".join(errors[0].__notes__)
    assert "could not be unpickled" in notes
    assert "input position 3" in notes


def test_unpicklable_function_is_refused_at_once() -> None:
    lock = Unpicklable().lock

    def uses_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(TypeError, match="cannot be sent to a worker process"):
        workpool.map(uses_lock, range(3), backend="process")
    # Threads need no pickling: the same function works there.
    assert workpool.map(uses_lock, range(3), backend="thread") == [0, 1, 2]


def test_system_exit_in_a_task_is_that_tasks_failure(backend: str) -> None:
    def leave(x: int) -> int:
        if x == 1:
            raise SystemExit(4)
        return x

    result = workpool.map(leave, range(3), backend=backend, return_exceptions=True)
    assert result[0] == 0
    assert result[2] == 2
    assert isinstance(result[1], SystemExit)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "serial"])
def test_keyboard_interrupt_raised_by_a_task_on_a_worker_is_that_tasks_failure(
    backend: str,
) -> None:
    # Only the main thread receives a real Ctrl+C; in a worker it is the task's own doing.
    result = workpool.map(interrupt_on_one, range(4), backend=backend, return_exceptions=True)
    assert result[0] == 0
    assert result[2:] == [2, 3]
    assert isinstance(result[1], KeyboardInterrupt)


def test_keyboard_interrupt_raised_by_a_task_on_serial_reaches_the_caller() -> None:
    # Inline, it cannot be told from the user's Ctrl+C, so it stops the call.
    with pytest.raises(KeyboardInterrupt):
        workpool.map(interrupt_on_one, range(4), backend="serial", return_exceptions=True)


def test_endless_input_with_failure_stops(backend: str) -> None:
    with pytest.raises(ValueError, match="bad input 100"):
        workpool.map(fail_on(100), itertools.count(), backend=backend, workers=2)


@pytest.mark.parametrize("task_timeout", [None, 30.0], ids=["plain", "with-task-timeout"])
def test_a_task_raising_stop_iteration_fails_alone(
    backend: str, task_timeout: float | None
) -> None:
    results = workpool.map(
        stop_on_two, range(6), backend=backend, return_exceptions=True, task_timeout=task_timeout
    )
    assert results[:2] == [0, 1]
    assert results[3:] == [3, 4, 5]
    assert isinstance(results[2], RuntimeError)
    assert "StopIteration" in str(results[2])


# Functions written in C are called through map, those written in Python from a loop
# of the interpreter's own (tasks.extend_calls): each way, a failing call is its own.
@pytest.mark.parametrize("lazy", [False, True], ids=["list", "iterator"])
def test_a_builtin_that_fails_midway_fails_alone(backend: str, lazy: bool) -> None:
    pairs = [(1, 1), (1, 0), (4, 2), (3, 0), (9, 3)]
    results = workpool.starmap(
        operator.truediv, iter(pairs) if lazy else pairs, backend=backend, return_exceptions=True
    )
    assert [results[0], results[2], results[4]] == [1.0, 2.0, 3.0]
    assert isinstance(results[1], ZeroDivisionError)
    assert isinstance(results[3], ZeroDivisionError)


@pytest.mark.parametrize("lazy", [False, True], ids=["list", "iterator"])
def test_a_builtin_raising_stop_iteration_fails_alone(backend: str, lazy: bool) -> None:
    # next() of an exhausted iterator: map takes that StopIteration for its own end.
    iterators = [iter([1]), iter([]), iter([3]), iter([])]
    results = workpool.map(
        next, iter(iterators) if lazy else iterators, backend=backend, return_exceptions=True
    )
    assert [results[0], results[2]] == [1, 3]
    for failed in (results[1], results[3]):
        assert isinstance(failed, RuntimeError)
        assert "StopIteration" in str(failed)


def test_a_submitted_task_raising_stop_iteration_fails_as_runtime_error(backend: str) -> None:
    with workpool.Pool(1, backend=backend) as pool:
        future = pool.submit(stop_on_two, 2, offset=1)
        with pytest.raises(RuntimeError, match="StopIteration"):
            future.result(timeout=60)
        assert pool.submit(stop_on_two, 3, offset=1).result(timeout=60) == 4


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
def test_an_exception_group_keeps_its_type_and_every_exception_in_it(backend: str) -> None:
    # asyncio.TaskGroup, trio and anyio raise groups; pickle rebuilds one with its
    # members, and a member whose __init__ wants other arguments cannot be rebuilt so.
    with workpool.Pool(1, backend=backend) as pool:
        error = pool.submit(raise_group_of_odd_exceptions, 0).exception(timeout=60)
    assert type(error).__name__ == "ExceptionGroup"
    assert str(error) == "several tasks inside failed (3 sub-exceptions)"
    plain, two, keyword = error.exceptions  # type: ignore[union-attr]
    assert type(plain) is ValueError
    assert str(plain) == "plain"
    assert_odd_exceptions_rebuilt(two, keyword, backend)
    if backend in ("process", "interpreter"):
        assert "raise_odd_exception" in str(error.__cause__)


def test_an_exception_kept_by_another_keeps_its_type_too(backend: str) -> None:
    # A retrying wrapper's error keeps the last attempt's: neither one can be rebuilt by
    # pickle, and neither is lost for it.
    with workpool.Pool(1, backend=backend) as pool:
        kept = pool.submit(give_up, "attribute").exception(timeout=60)
        passed_on = pool.submit(give_up, "argument").exception(timeout=60)
    assert type(kept) is GaveUp
    assert (str(kept), kept.attempts) == ("gave up after 3 attempts", 3)
    assert type(passed_on) is RuntimeError
    assert passed_on.args[0] == "gave up"
    for last in (kept.last, passed_on.args[1]):
        assert type(last) is NeedsTwoArguments
        assert (str(last), last.path, last.code) == ("/data/x failed with 3", "/data/x", 3)


@pytest.mark.parametrize("kind", ["frozen", "tuple"])
def test_an_exception_that_refuses_notes_still_arrives_as_itself(backend: str, kind: str) -> None:
    # A frozen dataclass refuses every assignment, so BaseException.add_note cannot set
    # __notes__ on it, and add_note refuses notes kept in a tuple. The task's exception
    # still arrives, with its note; no worker, thread or pool is lost over it.
    expected = FrozenError if kind == "frozen" else NotesInATuple
    with pytest.raises(expected) as info:
        workpool.map(raise_refusing_notes, [kind], backend=backend)
    assert "input position 0" in info.value.__notes__[-1]
    if kind == "tuple":
        assert info.value.__notes__[0] == "the program's own note"
    if backend in ("process", "interpreter"):
        assert "raise_refusing_notes" in str(info.value.__cause__)
    returned = workpool.map(raise_refusing_notes, [kind], backend=backend, return_exceptions=True)
    assert type(returned[0]) is expected
    with workpool.Pool(2, backend=backend) as pool:
        assert type(pool.submit(raise_refusing_notes, kind).exception(timeout=60)) is expected
        with pytest.raises(expected):
            list(pool.map(raise_refusing_notes, [kind]))
        assert pool.submit(square, 3).result(timeout=60) == 9


@pytest.mark.parametrize("kind", ["broken", "cancelled"])
def test_a_task_raising_what_pools_raise_fails_alone_and_is_named(backend: str, kind: str) -> None:
    # A task that uses a pool of its own may raise BrokenPool or CancelledError: those
    # are its failure (noted with its position, as any other), not the pool's.
    expected = workpool.BrokenPool if kind == "broken" else concurrent.futures.CancelledError
    task = functools.partial(raise_pool_error, kind)
    with pytest.raises(expected) as info:
        workpool.map(task, range(6), backend=backend, workers=2)
    assert "input position 3" in info.value.__notes__[-1]
    with workpool.Pool(2, backend=backend) as pool:
        results = list(pool.map(task, range(6), return_exceptions=True))
        assert results[:3] + results[4:] == [0, 1, 2, 4, 5]
        assert type(results[3]) is expected
        assert "input position 3" in results[3].__notes__[-1]
        assert list(pool.map(square, range(3))) == [0, 1, 4]
