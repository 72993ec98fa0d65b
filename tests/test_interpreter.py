"""backend="interpreter": what is particular to subinterpreters (the shared suite covers the rest).

Every backend-parametrized test elsewhere also runs on subinterpreters where they exist;
these tests check what only they do: the refusal before Python 3.14, isolation from
the main interpreter, what cannot cross between interpreters, and the life of each
worker's interpreter (initializer, replacement, timeouts, nothing left behind).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import FORK_WARNING, HAS_INTERPRETERS, live_workpool_threads, wait_for
from faults import RaiseWhenFunctionUnpickled, RaiseWhenUnpickled
from helpers import Unpicklable, broken_initializer, fail_on, recall, remember, slow_square, square
from interp_tasks import (
    cut_the_loop_off,
    depth,
    import_numpy,
    interpreter_id,
    pid,
    return_a_lock,
    squares_on_interpreters,
    squares_on_threads,
    squares_traced_and_checkpointed,
    touch,
    touched,
    wait_for_file,
    write_byte,
)
from workpool._options import BACKENDS

needs_interpreters = pytest.mark.skipif(
    not HAS_INTERPRETERS, reason="subinterpreters (concurrent.interpreters) need Python 3.14+"
)


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """The file a held task (``wait_for_file``) waits for, made when the test ends too.

    A test that fails before it lets its task go would otherwise leave the task's
    interpreter running for a minute, failing the tests after it as leftovers.
    """
    path = tmp_path / "release"
    yield path
    path.touch()


def live_subinterpreters() -> list[Any]:
    from concurrent import interpreters

    main = interpreters.get_main()
    return [i for i in interpreters.list_all() if i.id != main.id]


# --- before Python 3.14 -------------------------------------------------------------


@pytest.mark.skipif(HAS_INTERPRETERS, reason="this Python has subinterpreters")
def test_before_python_314_the_backend_is_refused_at_once_naming_the_version() -> None:
    version = sys.version.split()[0]
    message = (
        r"backend='interpreter' needs Python 3\.14 or newer \(concurrent\.interpreters\); "
        rf"this is Python {version.replace('.', '[.]')}"
    )
    with pytest.raises(ValueError, match=message):
        workpool.map(square, range(3), backend="interpreter")
    with pytest.raises(ValueError, match=message):
        workpool.imap(square, range(3), backend="interpreter")
    with pytest.raises(ValueError, match=message):
        workpool.Pool(2, backend="interpreter")
    assert "interpreter" not in BACKENDS


@needs_interpreters
def test_the_backend_is_offered_where_subinterpreters_exist() -> None:
    assert "interpreter" in BACKENDS
    with workpool.Pool(1, backend="interpreter") as pool:
        assert pool.backend == "interpreter"


def test_the_loop_in_the_interpreter_numbers_call_modes_as_the_library_does() -> None:
    # interpreter/worker.py cannot import workpool.tasks, so it repeats these numbers.
    from workpool.backends.interpreter import worker as wire
    from workpool.tasks import CallMode

    assert (wire.ONE, wire.STAR, wire.CALL) == (CallMode.ONE, CallMode.STAR, CallMode.CALL)


def test_the_loop_writes_a_timed_task_s_start_once_before_the_task_runs() -> None:
    # The pool reads the start as soon as STARTED arrives, which may be while the loop
    # records the task's end. Were the start written again then, the pool could read
    # 0.0 and time out a task of a millisecond for having run since the machine booted.
    # Here the task itself overwrites the start: it must still be there afterwards.
    from workpool.backends.interpreter import worker as wire

    times = bytearray(wire.TIMES.size)
    marker = 12345.5

    def task(item: int) -> int:
        struct.pack_into("<d", times, 0, marker)
        return item * 2

    head = wire.CHUNK_HEAD.pack(wire.CHUNK, 1, -1, wire.ONE, True, 0)
    body = bytearray(head + pickle.dumps([21]))
    read_fd, write_fd = os.pipe()
    try:
        before = time.monotonic()
        wire._run_chunk(body, {1: task}, write_fd, memoryview(times))
        after = time.monotonic()
        frames = [wire.read_frame(read_fd) for _ in range(3)]
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert [frame[0] for frame in frames if frame] == [wire.STARTED, wire.FINISHED, wire.BATCH]
    started, ended = wire.TIMES.unpack_from(times)
    assert started == marker
    assert before <= ended <= after


# --- isolation ----------------------------------------------------------------------


@needs_interpreters
def test_tasks_run_in_other_interpreters_of_this_process() -> None:
    from concurrent import interpreters

    ids = workpool.map(touch, ["set in a subinterpreter"] * 8, backend="interpreter", workers=2)
    assert interpreters.get_main().id not in ids
    assert "value" not in touched  # the task changed its interpreter's copy of this module
    assert workpool.map(pid, range(4), backend="interpreter", workers=2) == [pid(0)] * 4


@needs_interpreters
def test_initializer_state_stays_in_the_workers_interpreters() -> None:
    value = "remembered only in subinterpreters"
    results = workpool.map(
        recall, range(10), backend="interpreter", workers=2, initializer=remember, initargs=(value,)
    )
    assert results == [value] * 10
    assert recall(None) != value  # the main interpreter never ran this initializer


@needs_interpreters
def test_nothing_is_left_after_a_one_shot_map() -> None:
    assert live_subinterpreters() == []
    workpool.map(square, range(5000), backend="interpreter", workers=2)
    assert live_subinterpreters() == []
    assert live_workpool_threads() == []


@needs_interpreters
def test_workers_are_threads_named_after_the_backend_and_start_on_demand() -> None:
    with workpool.Pool(2, backend="interpreter") as pool:
        assert live_workpool_threads() == []  # nothing runs until there is work
        assert pool.submit(square, 3).result(timeout=30) == 9
        names = {t.name for t in live_workpool_threads()}
        assert "workpool-interp-0" in names
        assert all(name.startswith("workpool-interp-") for name in names)
    assert live_subinterpreters() == []


# --- what crosses, and what cannot ---------------------------------------------------


@needs_interpreters
def test_lambdas_and_closures_cross_by_value() -> None:
    offset = 10

    def outer(k: int) -> Callable[[int], int]:
        return lambda x: x * k + offset

    assert workpool.map(lambda x: x + offset, range(4), backend="interpreter") == [10, 11, 12, 13]
    assert workpool.map(outer(3), range(3), backend="interpreter") == [10, 13, 16]
    with workpool.Pool(2, backend="interpreter") as pool:
        assert pool.submit(lambda a, b=1: a - b, 5, b=2).result(timeout=30) == 3


@needs_interpreters
def test_a_function_defined_in_main_works(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import workpool

            SCALE = 3

            def scaled(x):
                return x * SCALE

            if __name__ == "__main__":
                print(workpool.map(scaled, range(5), backend="interpreter", workers=2))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 3, 6, 9, 12]"
    assert "Warning" not in done.stderr


@needs_interpreters
def test_an_argument_that_cannot_be_pickled_fails_only_its_task() -> None:
    items: list[object] = [1, Unpicklable(), 3, 4]
    results = workpool.map(
        lambda x: x, items, backend="interpreter", workers=1, chunksize=4, return_exceptions=True
    )
    assert results[0] == 1
    assert results[2:] == [3, 4]
    assert isinstance(results[1], Exception)
    notes = "\n".join(getattr(results[1], "__notes__", []))
    assert "could not be pickled to send them to a subinterpreter" in notes
    assert "input position 1" in notes


@needs_interpreters
def test_an_argument_that_cannot_be_rebuilt_in_the_interpreter_fails_only_its_task() -> None:
    items: list[object] = [1, RaiseWhenUnpickled(), 3]
    results = workpool.map(
        lambda x: x, items, backend="interpreter", workers=1, chunksize=3, return_exceptions=True
    )
    assert results[0] == 1
    assert results[2] == 3
    assert isinstance(results[1], RuntimeError)
    assert "cannot be rebuilt in a worker" in str(results[1])


@needs_interpreters
def test_a_function_that_cannot_be_pickled_fails_each_task_saying_why() -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    results = workpool.map(holds_a_lock, range(3), backend="interpreter", return_exceptions=True)
    assert all(isinstance(r, TypeError) for r in results)
    assert "cannot be sent to a subinterpreter" in str(results[0])
    with pytest.raises(TypeError, match="cannot be sent to a subinterpreter"):
        workpool.map(holds_a_lock, range(3), backend="interpreter")


@needs_interpreters
def test_a_function_that_cannot_be_rebuilt_fails_each_task_with_the_reason() -> None:
    results = workpool.map(
        RaiseWhenFunctionUnpickled(), range(3), backend="interpreter", return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "cannot be rebuilt in a worker" in str(results[0])


@needs_interpreters
def test_each_task_of_a_function_that_cannot_be_rebuilt_gets_one_traceback_of_its_own() -> None:
    # The interpreter raises one exception object for every task of the chunk: its
    # traceback grew by a raise per task, all of it on the first task's, none on the rest.
    with workpool.Pool(1, backend="interpreter") as pool:
        results = list(
            pool.map(RaiseWhenFunctionUnpickled(), range(50), chunksize=50, return_exceptions=True)
        )
    assert all(isinstance(r, RuntimeError) for r in results)
    for result in results:
        text = str(result.__cause__)
        assert text.count("in _refuse") == 1, text[:2000]  # where unpickling it failed
        assert text.count("in unloadable") == 1, text[:2000]


@needs_interpreters
def test_a_function_whose_module_the_interpreter_cannot_import_is_named_as_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module loaded from a file off sys.path (a plugin): its functions travel by name,
    # and the interpreter, which imports by sys.path, cannot find it.
    name = f"plugin_{os.getpid()}_{time.monotonic_ns()}"
    source = tmp_path / "elsewhere" / f"{name}.py"
    source.parent.mkdir()
    source.write_text("def work(x):\n    return 2 * x\n")
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    results = workpool.map(module.work, range(3), backend="interpreter", return_exceptions=True)
    assert all(isinstance(r, ModuleNotFoundError) for r in results)
    assert all(any("must be importable there" in note for note in r.__notes__) for r in results)


@needs_interpreters
def test_a_result_that_cannot_be_pickled_fails_only_its_task() -> None:
    results = workpool.map(
        return_a_lock,
        range(4),
        backend="interpreter",
        workers=1,
        chunksize=4,
        return_exceptions=True,
    )
    assert results[0] == 0
    assert results[2:] == [2, 3]
    assert isinstance(results[1], TypeError)
    assert "could not be pickled" in "\n".join(results[1].__notes__)


@needs_interpreters
def test_a_task_error_keeps_its_type_the_remote_traceback_and_names_the_interpreter() -> None:
    with pytest.raises(ValueError, match="bad input 3") as info:
        workpool.map(fail_on(3), range(10), backend="interpreter", workers=2)
    cause = info.value.__cause__
    assert isinstance(cause, workpool.RemoteTraceback)
    assert "in check" in str(cause)  # the failing function's frame, from the subinterpreter
    notes = "\n".join(info.value.__notes__)
    assert "input position 3" in notes
    assert "in interpreter " in notes


@needs_interpreters
def test_functions_beyond_what_an_interpreter_keeps_still_run() -> None:
    with workpool.Pool(1, backend="interpreter") as pool:
        futures = [pool.submit(lambda x, k=k: x + k, 1) for k in range(300)]
        assert [f.result(timeout=60) for f in futures] == [k + 1 for k in range(300)]


# --- the life of a worker -------------------------------------------------------------


@needs_interpreters
def test_a_loop_that_dies_costs_its_task_and_the_interpreter_is_replaced() -> None:
    with workpool.Pool(1, backend="interpreter") as pool:
        first = pool.submit(interpreter_id, 0).result(timeout=30)
        crashed = pool.submit(cut_the_loop_off, 1).exception(timeout=30)
        assert isinstance(crashed, workpool.WorkerCrashed)
        assert f"the loop in interpreter {first} stopped" in str(crashed)
        assert pool.submit(interpreter_id, 2).result(timeout=30) != first
    assert live_subinterpreters() == []


@needs_interpreters
def test_a_failing_initializer_breaks_the_pool_with_the_original_error() -> None:
    with pytest.raises(workpool.BrokenPool, match="initializer says no") as info:
        workpool.map(square, range(10), backend="interpreter", initializer=broken_initializer)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value.__cause__.__cause__, workpool.RemoteTraceback)

    pool = workpool.Pool(2, backend="interpreter", initializer=broken_initializer)
    try:
        first = pool.submit(square, 1)
        assert isinstance(first.exception(timeout=30), workpool.BrokenPool)
        with pytest.raises(workpool.BrokenPool):
            pool.submit(square, 2)
    finally:
        pool.shutdown()
    assert live_subinterpreters() == []


@needs_interpreters
def test_an_initializer_that_cannot_be_pickled_is_refused_at_once() -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot be sent to a subinterpreter"):
        workpool.Pool(1, backend="interpreter", initializer=lock.acquire)


@needs_interpreters
def test_max_tasks_per_worker_replaces_the_interpreter() -> None:
    ids = workpool.map(
        interpreter_id,
        range(12),
        backend="interpreter",
        workers=2,
        chunksize=1,
        max_tasks_per_worker=3,
    )
    assert len(set(ids)) >= 4
    assert all(ids.count(i) <= 3 for i in set(ids))
    assert live_subinterpreters() == []


@needs_interpreters
def test_timeout_is_reported_while_the_abandoned_task_still_runs(release: Path) -> None:
    results = workpool.map(
        wait_for_file(str(release), bad=2),
        range(8),
        backend="interpreter",
        workers=2,
        # The quick items are timed too, until their worker's thread sees them end: on
        # 3.14t at a load of 10 that thread was once held up past 0.5 s. The task
        # this is for waits a minute.
        task_timeout=2,
        return_exceptions=True,
    )
    # The map returned although task 2 is still waiting for the file: it was abandoned.
    assert isinstance(results[2], workpool.TaskTimeout)
    assert "background" in str(results[2])
    assert "input position 2" in "\n".join(results[2].__notes__)
    assert [r for i, r in enumerate(results) if i != 2] == [x * x for x in range(8) if x != 2]
    release.touch()
    # Once its task ends, the abandoned worker closes its interpreter and its threads exit.
    assert wait_for(lambda: not live_workpool_threads() and not live_subinterpreters(), 30)


@needs_interpreters
def test_timeout_on_a_pool_keeps_it_usable(release: Path) -> None:
    with workpool.Pool(1, backend="interpreter", task_timeout=0.5) as pool:
        hung = pool.submit(wait_for_file(str(release), bad=0), 0)
        with pytest.raises(workpool.TaskTimeout):
            hung.result(timeout=30)
        assert pool.submit(square, 5).result(timeout=30) == 25
        release.touch()
    assert wait_for(lambda: not live_workpool_threads() and not live_subinterpreters(), 30)


@needs_interpreters
def test_timeout_with_retries_tries_again_in_a_fresh_interpreter(release: Path) -> None:
    results = workpool.map(
        wait_for_file(str(release), bad=1),
        range(3),
        backend="interpreter",
        workers=2,
        task_timeout=0.3,
        retries=1,
        return_exceptions=True,
    )
    assert isinstance(results[1], workpool.TaskTimeout)
    assert "attempt 2 of 2" in "\n".join(results[1].__notes__)
    assert results[0] == 0
    assert results[2] == 4
    release.touch()
    assert wait_for(lambda: not live_workpool_threads() and not live_subinterpreters(), 30)


@pytest.fixture
def late_to_hear_the_end(monkeypatch: pytest.MonkeyPatch) -> float:
    """Each worker thread reads that its timed task ended 1.5 s after it did.

    What a loaded machine may do to a thread that waits for the GIL: here it is made
    certain by holding the frame back, after the interpreter has sent it.
    """
    from workpool.backends.interpreter import handle
    from workpool.backends.interpreter import worker as wire

    delay = 1.5
    receive = handle.InterpreterHandle._receive

    def receive_late(self: handle.InterpreterHandle) -> bytearray:
        body = receive(self)
        if body[0] == wire.FINISHED:
            time.sleep(delay)
        return body

    monkeypatch.setattr(handle.InterpreterHandle, "_receive", receive_late)
    return delay


@needs_interpreters
def test_a_quick_task_is_not_timed_out_for_the_time_its_end_takes_to_be_read(
    late_to_hear_the_end: float,
) -> None:
    # The task takes a few milliseconds; its worker thread hears of its end only after
    # the deadline. The deadline counts the task's own time, measured where it ran.
    results = workpool.map(
        square,
        range(3),
        backend="interpreter",
        workers=2,
        task_timeout=0.5,
        return_exceptions=True,
    )
    assert results == [0, 1, 4]
    with workpool.Pool(1, backend="interpreter", task_timeout=0.5) as pool:
        assert pool.submit(square, 7).result(timeout=30) == 49
        assert pool.submit(square, 8).result(timeout=30) == 64


@needs_interpreters
def test_a_task_that_runs_past_its_deadline_times_out_however_late_its_end_is_read(
    late_to_hear_the_end: float,
) -> None:
    with workpool.Pool(1, backend="interpreter", task_timeout=0.3) as pool:
        slow = pool.submit(slow_square, 3, delay=0.8)
        with pytest.raises(workpool.TaskTimeout, match=r"task_timeout=0\.3s"):
            slow.result(timeout=30)
        assert pool.submit(square, 5).result(timeout=30) == 25
    assert wait_for(lambda: not live_workpool_threads() and not live_subinterpreters(), 30)


@needs_interpreters
def test_a_task_that_ended_past_its_deadline_times_out_before_the_watchdog_wakes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workpool.backends.deadlines import DeadlineWatch

    held = threading.Event()  # the watchdog, as a loaded machine may leave it, sleeps on
    watch = DeadlineWatch._run

    def late_watch(self: DeadlineWatch) -> None:
        held.wait(60)
        watch(self)

    monkeypatch.setattr(DeadlineWatch, "_run", late_watch)
    with workpool.Pool(1, backend="interpreter", task_timeout=0.3) as pool:
        try:
            first = pool.submit(interpreter_id, 0).result(timeout=30)
            slow = pool.submit(slow_square, 3, delay=0.8)
            with pytest.raises(workpool.TaskTimeout, match=r"ran 0\.\d+s .* task_timeout=0\.3s"):
                slow.result(timeout=30)
            # The task had ended: its worker, not stuck in it, serves the next one.
            assert pool.submit(interpreter_id, 1).result(timeout=30) == first
        finally:
            held.set()


@needs_interpreters
def test_shutdown_cancel_futures_cancels_what_has_not_started(release: Path) -> None:
    pool = workpool.Pool(1, backend="interpreter")
    first = pool.submit(wait_for_file(str(release), bad=0), 0)
    queued = [pool.submit(square, i) for i in range(20)]
    assert wait_for(first.running, 30)
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    release.touch()
    pool.shutdown(wait=True)
    assert first.result() == 0


@needs_interpreters
def test_the_pool_is_an_executor_for_asyncio() -> None:
    import asyncio

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with workpool.Pool(2, backend="interpreter") as pool:
            return list(
                await asyncio.gather(*(loop.run_in_executor(pool, square, i) for i in range(5)))
            )

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


@needs_interpreters
def test_executor_map_timeout_is_an_overall_deadline(release: Path) -> None:
    with workpool.Pool(1, backend="interpreter") as pool:
        results = pool.map(wait_for_file(str(release), bad=1), range(3), timeout=0.5)
        with pytest.raises(concurrent.futures.TimeoutError):
            list(results)
        release.touch()


@needs_interpreters
def test_breaking_out_of_imap_leaves_no_subinterpreter() -> None:
    results = workpool.imap(slow_square, range(10_000), backend="interpreter", workers=2)
    for value in results:
        if value >= 25:
            break
    results.close()
    assert live_workpool_threads() == []
    assert live_subinterpreters() == []


EXIT_SCRIPT = """
import time, workpool

def sleepy(x):
    time.sleep(x)
    return x

pool = workpool.Pool(2, backend="interpreter", task_timeout={timeout})
print(pool.submit(abs, -3).result())
if {running}:
    future = pool.submit(sleepy, 1.5 if {timeout} else 0.5)
    if {timeout}:
        print(type(future.exception()).__name__)
    else:
        time.sleep(0.1)
"""


@needs_interpreters
@pytest.mark.parametrize(
    ("running", "timeout"),
    # The timeout leaves the first task (abs) room on a loaded machine: it is timed too.
    [(False, None), (True, None), (True, 0.5)],
    ids=["idle", "busy", "timed"],
)
def test_a_program_that_ends_with_a_pool_open_exits_cleanly(
    tmp_path: Path, running: bool, timeout: float | None
) -> None:
    # At exit the pool waits for running and abandoned tasks: Python cannot finalize a
    # subinterpreter that a thread is still running in.
    script = tmp_path / "script.py"
    script.write_text(EXIT_SCRIPT.format(running=running, timeout=timeout))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == (["3", "TaskTimeout"] if timeout else ["3"])
    assert done.stderr == ""


QUEUED_AT_EXIT = """
import sys, time, workpool

def record(x):
    time.sleep(0.1)
    return x

def written(future):
    with open(sys.argv[1], "a") as out:
        out.write(f"{future.result()}\\n")

pool = workpool.Pool(2, backend="interpreter")
for x in range(6):  # two run at once: four wait in the queue when the program ends
    pool.submit(record, x).add_done_callback(written)
"""


def _script_env() -> dict[str, str]:
    """The environment for a script that imports this folder's task modules."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}


def _run_script(
    tmp_path: Path, source: str, *args: Path, release: Path | None = None, timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script with ``args``; ``release`` is made after, however it ended."""
    script = tmp_path / "script.py"
    script.write_text(source)
    try:
        return subprocess.run(
            [sys.executable, str(script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_script_env(),
        )
    finally:
        if release is not None:
            release.touch()


CTRL_C_SCRIPT = """
import sys, time
from pathlib import Path
import workpool
from interp_tasks import interrupt_then_wait_for_file

release = Path(sys.argv[1])
try:
    workpool.map(interrupt_then_wait_for_file(str(release)), range(4), backend="interpreter",
                 workers=2, chunksize=1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    time.sleep(0.5)
    release.touch()
    raise
"""


@needs_interpreters
def test_ctrl_c_returns_at_once_and_the_exit_waits_for_the_running_tasks(tmp_path: Path) -> None:
    # The tasks run until the file exists, which the script makes only once it has the
    # KeyboardInterrupt: the caller must not wait for them to get it.
    release = tmp_path / "release"
    done = _run_script(tmp_path, CTRL_C_SCRIPT, release, release=release)
    assert done.stdout.split() == ["interrupted"]
    assert done.returncode == -signal.SIGINT, done.stderr
    assert "KeyboardInterrupt" in done.stderr
    assert "remaining subinterpreters" not in done.stderr


CTRL_C_IN_SHUTDOWN_SCRIPT = """
import sys, time
from pathlib import Path
import workpool
from interp_tasks import mark_then_wait_for_file

marks, release = sys.argv[1], Path(sys.argv[2])
pool = workpool.Pool(2, backend="interpreter")
task = mark_then_wait_for_file(marks, str(release), interrupt=True)
futures = [pool.submit(task, x) for x in range(4)]  # two run, two wait in the queue
try:
    pool.shutdown(wait=True)  # task 0 presses Ctrl+C once two run
except KeyboardInterrupt:
    print("interrupted", flush=True)
    time.sleep(0.5)
    release.touch()
    raise
"""


@needs_interpreters
def test_ctrl_c_while_shutdown_waits_leaves_the_queued_work_unrun(tmp_path: Path) -> None:
    # The program ends on Ctrl+C: its exit waits for the two tasks running (a
    # subinterpreter cannot be stopped), but must not start the two still queued.
    marks = tmp_path / "marks"
    marks.mkdir()
    release = tmp_path / "release"
    done = _run_script(tmp_path, CTRL_C_IN_SHUTDOWN_SCRIPT, marks, release, release=release)
    assert done.stdout.split() == ["interrupted"], done.stderr
    assert done.returncode == -signal.SIGINT, done.stderr
    assert sorted(p.name for p in marks.iterdir()) == ["0", "1"]


CTRL_C_AFTER_SHUTDOWN_SCRIPT = """
import os, sys, time
from pathlib import Path
import workpool
from interp_tasks import mark_then_wait_for_file

marks, release = sys.argv[1], Path(sys.argv[2])
pool = workpool.Pool(2, backend="interpreter")
# The two running tasks end once a queued one is settled (cancelled), or after 10 s.
task = mark_then_wait_for_file(marks, str(release), patience=10)
futures = [pool.submit(task, x) for x in range(4)]
for future in futures[2:]:
    future.add_done_callback(lambda future: release.touch())
while len(os.listdir(marks)) < 2:
    time.sleep(0.01)
pool.shutdown(wait=False)
raise KeyboardInterrupt  # the program ends on Ctrl+C while its pool works on
"""


@needs_interpreters
def test_ctrl_c_at_the_end_leaves_the_queued_work_unrun(tmp_path: Path) -> None:
    # Ended on Ctrl+C, the program abandons its pools, shut down or not: its exit
    # waits for the tasks running in subinterpreters, but starts none of those queued.
    marks = tmp_path / "marks"
    marks.mkdir()
    done = _run_script(
        tmp_path, CTRL_C_AFTER_SHUTDOWN_SCRIPT, marks, tmp_path / "release", timeout=60
    )
    assert done.returncode == -signal.SIGINT, done.stderr
    assert sorted(p.name for p in marks.iterdir()) == ["0", "1"]


@needs_interpreters
def test_a_second_ctrl_c_while_the_exit_waits_ends_the_program_at_once(tmp_path: Path) -> None:
    # The first Ctrl+C ends the call; the exit then waits for the tasks still running.
    # A second one there used to let Python finalize their interpreters with the tasks
    # inside: a SIGSEGV most times, else a warning about interpreters left behind.
    script = tmp_path / "script.py"
    script.write_text(CTRL_C_SCRIPT.replace("release.touch()", "pass"))
    release = tmp_path / "release"
    child = subprocess.Popen(
        [sys.executable, str(script), str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_script_env(),
    )
    try:
        assert child.stderr is not None
        seen = []
        for line in child.stderr:  # the notice comes once the exit has waited a moment
            seen.append(line)
            if "waiting for the tasks still running" in line:
                break
        else:
            pytest.fail("the exit never said it waits:\n" + "".join(seen))
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=20)
    finally:
        release.touch()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGINT, "".join(seen) + stderr
    assert stdout.split() == ["interrupted"]
    assert "exiting without them" in stderr
    assert "remaining subinterpreters" not in stderr
    assert "Exception ignored" not in stderr


LATE_POOL_SCRIPT = """
import atexit, threading, time, workpool

def late():
    # A daemon thread of the program starts a pool while the program exits, after
    # workpool's exit hook has waited for the pools it knew.
    started = threading.Event()
    def run():
        try:
            pool = workpool.Pool(1, backend="interpreter")
            pool.submit(abs, 1).result()
            pool.submit(time.sleep, 5)
        except Exception as exc:
            print("refused:", type(exc).__name__, exc, flush=True)
        started.set()
    threading.Thread(target=run, daemon=True).start()
    started.wait(30)
    time.sleep(0.2)

atexit.register(late)  # before workpool's own hook: it runs after it
print(workpool.map(abs, [-3], backend="interpreter"), flush=True)
"""


@needs_interpreters
def test_a_pool_started_after_the_exit_wait_began_is_refused(tmp_path: Path) -> None:
    # Its interpreters would still run its tasks when Python finalizes them: a warning
    # about interpreters left behind at best, a SIGSEGV at worst.
    script = tmp_path / "script.py"
    script.write_text(LATE_POOL_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[3]"
    assert "refused: RuntimeError cannot start a subinterpreter pool" in done.stdout
    assert "remaining subinterpreters" not in done.stderr


@needs_interpreters
def test_a_pool_open_at_exit_runs_its_queued_work_too(tmp_path: Path) -> None:
    # As concurrent.futures' executors do at exit: the queue is run, not cancelled.
    script = tmp_path / "script.py"
    script.write_text(QUEUED_AT_EXIT)
    results = tmp_path / "results.txt"
    done = subprocess.run(
        [sys.executable, str(script), str(results)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sorted(results.read_text().split()) == [str(x) for x in range(6)]


@needs_interpreters
def test_a_module_that_cannot_load_in_a_subinterpreter_is_named_as_the_cause() -> None:
    # NumPy's own ImportError blames "a bad install or environment"; the note says what
    # happened and what to do, whether the task imports it or its argument needs it.
    numpy = pytest.importorskip("numpy")
    results = workpool.map(
        import_numpy, [1], backend="interpreter", return_exceptions=True
    ) + workpool.map(len, [numpy.ones(3)], backend="interpreter", return_exceptions=True)
    for error in results:
        if not isinstance(error, ImportError):
            pytest.skip("this NumPy loads in subinterpreters")
        notes = "\n".join(error.__notes__)
        assert "cannot be loaded in a subinterpreter" in notes
        assert "backend='process'" in notes


@needs_interpreters
def test_an_initializer_needing_a_module_that_cannot_load_there_is_named_as_the_cause() -> None:
    pytest.importorskip("numpy")
    with pytest.raises(workpool.BrokenPool) as caught:
        workpool.map(abs, [1], backend="interpreter", initializer=import_numpy, initargs=(0,))
    error = caught.value.__cause__
    if not isinstance(error, ImportError):
        pytest.skip("this NumPy loads in subinterpreters")
    notes = "\n".join(getattr(error, "__notes__", []))
    assert "a module the initializer needs cannot be loaded in a subinterpreter" in notes


@needs_interpreters
def test_a_task_on_a_subinterpreter_can_run_a_thread_pool_of_its_own() -> None:
    # A subinterpreter allows no daemon threads, which the thread backend's workers were.
    results = workpool.map(squares_on_threads, [3, 4], backend="interpreter", workers=2)
    assert results == [[0, 1, 4], [0, 1, 4, 9]]


@needs_interpreters
def test_a_task_on_a_subinterpreter_can_run_a_subinterpreter_pool_of_its_own() -> None:
    # The thread that stays inside each interpreter was a daemon, which a subinterpreter
    # refuses: the inner pool broke as its first interpreter started.
    results = workpool.map(squares_on_interpreters, [3, 4], backend="interpreter", workers=2)
    assert results == [[0, 1, 4], [0, 1, 4, 9]]


@needs_interpreters
def test_a_task_on_a_subinterpreter_can_trace_and_checkpoint_a_map_of_its_own(
    tmp_path: Path,
) -> None:
    # The timeline's rewriter and the journal's writer were daemon threads, which a
    # subinterpreter refuses.
    results = workpool.map(squares_traced_and_checkpointed, [str(tmp_path)], backend="interpreter")
    assert results == [[1, 2, 3]]
    assert (tmp_path / "trace.json").exists()
    assert (tmp_path / "run.ckpt").exists()


@needs_interpreters
def test_a_recursion_limit_the_program_raised_holds_in_the_interpreters_too() -> None:
    # As in a process worker forked from the program; a new interpreter starts at 1000.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 5000)
    try:
        assert workpool.map(depth, [limit + 2000], backend="interpreter") == [limit + 2000]
    finally:
        sys.setrecursionlimit(limit)


@needs_interpreters
def test_writes_into_share_writable_memory_are_seen_by_the_caller() -> None:
    # As on processes and threads: the subinterpreters map the very memory, not a
    # read-only copy of it; memory shared read-only stays read-only there.
    out = workpool.share(bytearray(6), writable=True)
    results = workpool.starmap(
        write_byte, [(out, i) for i in range(6)], backend="interpreter", workers=2, chunksize=1
    )
    assert results == [6] * 6
    assert bytes(out) == b"abcdef"
    frozen = workpool.share(b"xyz")
    [error] = workpool.starmap(
        write_byte, [(frozen, 0)], backend="interpreter", return_exceptions=True
    )
    assert isinstance(error, TypeError) and bytes(frozen) == b"xyz"


@needs_interpreters
@pytest.mark.filterwarnings(FORK_WARNING)
def test_fork_is_refused_with_the_reason_while_subinterpreters_run() -> None:
    # A child forked beside a running subinterpreter dies of SIGSEGV inside CPython:
    # say so at once, rather than let every worker crash as it starts.
    with workpool.Pool(1, backend="interpreter") as interpreters:
        assert interpreters.submit(square, 3).result(timeout=60) == 9
        with pytest.raises(RuntimeError, match="while this process runs subinterpreters"):
            workpool.map(square, range(2), backend="process", start_method="fork")
    assert workpool.map(square, range(2), backend="process", start_method="fork") == [0, 1]
