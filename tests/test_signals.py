"""Ctrl+C, SIGTERM, SIGKILL and plain exit of the parent: no worker outlives it.

The parent is a separate Python process running a small script; its workers write their
pids to files so the test can watch them after the parent is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import START_METHODS, left_in_shared_memory, named_shared_memory, wait_for


@pytest.fixture(autouse=True)
def nothing_left_in_dev_shm() -> Iterator[None]:
    before = named_shared_memory()
    yield
    assert not left_in_shared_memory(before)


TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    import workpool

    # A shell that starts jobs in the background makes them ignore SIGINT, and the
    # child inherits that; a program in a terminal gets Python's usual handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def report_and_sleep(x, *big):
        open(os.path.join({marks!r}, str(os.getpid())), "w").close()
        time.sleep(30)
        return x

    def hold_the_gil(x):
        open(os.path.join({marks!r}, str(os.getpid())), "w").close()
        return sum(range(10**13))  # a C loop that never lets the GIL go: hours

    def finish_later(x):
        open(os.path.join({marks!r}, str(os.getpid())), "w").close()
        time.sleep(0.2)
        open({marks!r} + "-done-" + str(x), "w").close()
        return x

    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "map":
            workpool.map(report_and_sleep, range(100), backend="process", workers=2,
                         chunksize=1, start_method={method!r})
        elif mode == "map-gil":
            workpool.map(hold_the_gil, range(4), backend="process", workers=2,
                         chunksize=1, start_method={method!r})
        elif mode == "map-gil-then-drop-zygote":
            import threading
            from workpool.backends.process import zygote
            workpool.map(abs, [1, 2], backend="process", workers=2)  # the zygote starts
            threading.Thread(
                target=workpool.map, args=(hold_the_gil, range(4)),
                kwargs=dict(backend="process", workers=2, chunksize=1), daemon=True,
            ).start()
            while len(os.listdir({marks!r})) < 2:
                time.sleep(0.01)
            # What a dying program's exit does first, before its children are handed
            # to another parent: its end of the zygote's socket closes, unannounced.
            zygote._zygote._socket.close()
            print("closed", flush=True)
            time.sleep(60)
        elif mode == "map-shared":
            import numpy
            big = numpy.ones(4_000_000)  # 32 MB: travels in shared memory
            workpool.map(report_and_sleep, range(100), [big] * 100, backend="process",
                         workers=2, chunksize=1, start_method={method!r})
        elif mode == "pool":
            with workpool.Pool(2, backend="process", start_method={method!r}) as pool:
                list(pool.imap(report_and_sleep, range(100), chunksize=1))
        elif mode == "exit-with-imap-unread":
            import threading
            results = workpool.imap(report_and_sleep, range(4), backend="process",
                                    workers=2, chunksize=1, start_method={method!r})
            threading.Thread(target=next, args=(results,), daemon=True).start()
            while len(os.listdir({marks!r})) < 2:
                time.sleep(0.01)
            print("leaving with an imap unread", flush=True)
        elif mode in ("nowait-then-ctrl-c", "open-then-ctrl-c"):
            pool = workpool.Pool(2, backend="process", start_method={method!r})
            futures = [pool.submit(report_and_sleep, i) for i in range(4)]
            while len(os.listdir({marks!r})) < 2:
                time.sleep(0.01)
            if mode == "nowait-then-ctrl-c":
                pool.shutdown(wait=False)
            raise KeyboardInterrupt
        elif mode == "pool-in-atexit-hook":
            import atexit
            def late():
                for kind in ("thread", "process"):
                    with workpool.Pool(2, backend=kind) as pool:
                        print(kind, list(pool.map(finish_later, range(3))), flush=True)
            atexit.register(late)
            workpool.map(finish_later, range(2), backend="process", workers=2)
        elif mode.startswith(("fork-with-", "fork-nowait-")):
            kind = mode.rsplit("-", 1)[1]
            with workpool.Pool(2, backend=kind) as pool:
                futures = [pool.submit(finish_later, i) for i in range(6)]
                if mode.startswith("fork-nowait-"):
                    pool.shutdown(wait=False)
                child = os.fork()
                if child == 0:
                    try:
                        pool.submit(finish_later, 99)
                    except RuntimeError as exc:
                        print("child refused:", "is a fork of it" in str(exc), flush=True)
                    sys.exit(0)  # through the with block and the exit hooks, as a script ends
                _, status = os.waitpid(child, 0)
                print("child", os.waitstatus_to_exitcode(status), flush=True)
        elif mode == "fork-over-started-workers":
            with workpool.Pool(2, backend="process", start_method={method!r}) as pool:
                print("parent", list(pool.map(finish_later, range(2))), flush=True)
                child = os.fork()
                if child == 0:
                    sys.exit(0)  # the child's exit, multiprocessing's hook among it
                _, status = os.waitpid(child, 0)
                print("child", os.waitstatus_to_exitcode(status), flush=True)
        elif mode.startswith(("nowait-", "open-")):
            if mode.endswith("-process"):
                pool = workpool.Pool(2, backend="process", start_method={method!r})
            else:
                pool = workpool.Pool(2, backend="thread")
            futures = [pool.submit(finish_later, i) for i in range(6)]
            if mode.startswith("nowait-"):
                pool.shutdown(wait=False)
            print("leaving", flush=True)
    """
)


def start_parent(
    tmp_path: Path, mode: str, method: str | None = "forkserver", portable: bool = False
) -> tuple[subprocess.Popen[str], Path]:
    marks = tmp_path / "pids"
    marks.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), marks=str(marks), method=method))
    parent = subprocess.Popen(
        [sys.executable, str(script), mode],
        env={**os.environ, "WORKPOOL_PORTABLE": "1"} if portable else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a program in a terminal
    )
    return parent, marks


def worker_pids(marks: Path) -> set[int]:
    return {int(p.name) for p in marks.iterdir()}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for_workers(parent: subprocess.Popen[str], marks: Path) -> set[int]:
    assert wait_for(lambda: len(worker_pids(marks)) >= 2, timeout=30), parent.communicate()
    return worker_pids(marks)


def finish(parent: subprocess.Popen[str], timeout: float) -> tuple[int, str, str, float]:
    begin = time.monotonic()
    try:
        out, err = parent.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(parent.pid, signal.SIGKILL)
        out, err = parent.communicate()
        pytest.fail(f"the parent did not end within {timeout}s: {err[-2000:]}")
    return parent.returncode, out, err, time.monotonic() - begin


@pytest.mark.parametrize("mode", ["map", "pool", "map-shared"])
def test_ctrl_c_raises_keyboard_interrupt_and_stops_the_workers(tmp_path: Path, mode: str) -> None:
    parent, marks = start_parent(tmp_path, mode)
    pids = wait_for_workers(parent, marks)
    os.killpg(parent.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
    code, _, err, took = finish(parent, timeout=10)
    assert "KeyboardInterrupt" in err
    assert code != 0
    assert took < 3
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.parametrize("method", START_METHODS)
def test_sigterm_ends_parent_and_workers(tmp_path: Path, method: str) -> None:
    parent, marks = start_parent(tmp_path, "map", method)
    pids = wait_for_workers(parent, marks)
    parent.send_signal(signal.SIGTERM)
    code, _, _, _ = finish(parent, timeout=10)
    assert code == -signal.SIGTERM
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("mode", ["map", "map-shared"])
def test_workers_notice_the_parent_was_killed(tmp_path: Path, method: str, mode: str) -> None:
    parent, marks = start_parent(tmp_path, mode, method)
    pids = wait_for_workers(parent, marks)
    parent.kill()
    finish(parent, timeout=10)
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.parametrize("portable", [False, True], ids=["linux-paths", "portable"])
def test_zygote_workers_holding_the_gil_end_when_the_parent_is_killed(
    tmp_path: Path, portable: bool
) -> None:
    # A worker's own watch is a Python thread, which waits for the GIL while a task
    # runs C code that keeps it (a long regex, a huge sum); the zygote, idle, ends its
    # workers when the parent is gone.
    parent, marks = start_parent(tmp_path, "map-gil", None, portable)
    pids = wait_for_workers(parent, marks)
    try:
        parent.kill()
        finish(parent, timeout=10)
        assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_zygote_kills_its_workers_when_the_socket_closes_before_the_parent_is_gone(
    tmp_path: Path,
) -> None:
    # A killed program's descriptors close before its children get a new parent, so at
    # that moment the zygote still sees its parent's pid: only the missing goodbye says
    # the program is dying. Its workers, stuck in C code, have no one else to end them.
    parent, marks = start_parent(tmp_path, "map-gil-then-drop-zygote", None)
    try:
        pids = wait_for_workers(parent, marks)
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "closed", parent.communicate(timeout=5)
        assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.communicate()
        for pid in worker_pids(marks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_interpreter_exit_with_a_one_shot_imap_unread_leaves_no_worker(tmp_path: Path) -> None:
    # Nobody can read its results any more: its work (30 s tasks) is abandoned.
    parent, marks = start_parent(tmp_path, "exit-with-imap-unread")
    code, out, err, took = finish(parent, timeout=20)
    assert code == 0, err
    assert "leaving with an imap unread" in out
    pids = worker_pids(marks)
    assert pids
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)
    assert took < 15


@pytest.mark.parametrize("mode", ["nowait-process", "nowait-thread", "open-process", "open-thread"])
def test_interpreter_exit_finishes_the_work_a_pool_was_given(tmp_path: Path, mode: str) -> None:
    # concurrent.futures: "Regardless of the value of wait, the entire Python program
    # will not exit until all pending futures are done executing." It keeps that for an
    # executor left open at exit, too.
    parent, marks = start_parent(tmp_path, mode)
    code, out, err, _ = finish(parent, timeout=60)
    assert code == 0, err
    assert "leaving" in out
    assert sorted(p.name for p in tmp_path.glob("pids-done-*")) == [
        f"pids-done-{i}" for i in range(6)
    ]
    pids = worker_pids(marks)
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


def test_a_pool_made_in_an_atexit_hook_works(tmp_path: Path) -> None:
    # The hook runs once threading has begun to shut down, when it takes no more exit
    # hooks of its own: a Pool made then could not register the one it wants.
    parent, marks = start_parent(tmp_path, "pool-in-atexit-hook")
    code, out, err, _ = finish(parent, timeout=60)
    assert code == 0, err
    assert out.splitlines() == ["thread [0, 1, 2]", "process [0, 1, 2]"], err
    pids = worker_pids(marks)
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads: 3.12+ warns
@pytest.mark.parametrize(
    "mode", ["fork-with-thread", "fork-with-process", "fork-nowait-thread", "fork-nowait-process"]
)
def test_a_forked_child_that_exits_leaves_the_parents_pool_alone(tmp_path: Path, mode: str) -> None:
    # The child inherits copies of the pool and of workpool's exit hooks, but not the
    # pool's threads, and the workers are the parent's: it must neither wait for them
    # nor end them. The parent's pool then finishes all its work.
    parent, marks = start_parent(tmp_path, mode)
    code, out, err, _ = finish(parent, timeout=60)
    assert code == 0, err
    assert "child 0" in out
    assert "child refused: True" in out
    assert sorted(p.name for p in tmp_path.glob("pids-done-*")) == [
        f"pids-done-{i}" for i in range(6)
    ]
    pids = worker_pids(marks)
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads: 3.12+ warns
@pytest.mark.parametrize("method", START_METHODS)
def test_a_forked_child_exits_quietly_beside_workers_multiprocessing_started(
    tmp_path: Path, method: str
) -> None:
    # multiprocessing lists the workers it starts for the pool, and a fork copies the
    # list: at exit the child would try to join each, which only their parent may do,
    # and print a traceback (the standard pools' workers do that to a forked child).
    parent, _ = start_parent(tmp_path, "fork-over-started-workers", method)
    code, out, err, _ = finish(parent, timeout=60)
    assert code == 0, err
    assert out.splitlines() == ["parent [0, 1]", "child 0"], err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("mode", ["nowait-then-ctrl-c", "open-then-ctrl-c"])
def test_ctrl_c_at_the_end_stops_the_work_a_pool_was_given(tmp_path: Path, mode: str) -> None:
    # Its tasks sleep for 30 s: the parent ends long before, without waiting for them.
    parent, marks = start_parent(tmp_path, mode)
    code, _, err, _ = finish(parent, timeout=20)
    assert "KeyboardInterrupt" in err
    assert code != 0
    pids = worker_pids(marks)
    assert pids
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=5)


@pytest.mark.skipif(
    sys.version_info >= (3, 14),
    reason="from 3.14 a `with lock:` calls __enter__ as an ordinary call, after which a "
    "KeyboardInterrupt can leave the lock held for ever: any lock of the program, "
    "concurrent.futures' own included (see the README's Ctrl+C note)",
)
def test_ctrl_c_storm_during_submits_leaves_the_pool_sound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGINTs at random moments of many submit/result round trips, in the main thread.

    Each one interrupts whatever it lands in, a submit half-way included (between
    writing a chunk to a worker and recording it); the pool must go on: every Future
    that was handed out still gets its own answer, and new work still runs.
    """
    import threading
    import types

    import workpool
    from helpers import square

    stop = threading.Event()
    armed = False  # raise only inside the round trips, not in the test's own steps

    # A SIGINT that lands in a weakref callback (the garbage collector's) is reported
    # by Python as an unraisable exception: the storm's doing, not the pool's. Python
    # calls the hook in this thread, and the storm must not land in the hook itself
    # (pytest's formats a traceback: it once took a second SIGINT there, and the
    # test failed with "Failed to process unraisable exception").
    unraisable: list[type[BaseException]] = []

    def note_unraisable(report: sys.UnraisableHookArgs) -> None:
        unraisable.append(report.exc_type)

    monkeypatch.setattr(sys, "unraisablehook", note_unraisable)

    def in_the_hook(frame: types.FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code is note_unraisable.__code__:
                return True
            frame = frame.f_back
        return False

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        if armed and not in_the_hook(frame):
            raise KeyboardInterrupt

    def interrupter() -> None:
        while not stop.wait(0.002):
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = 0
    handed_out = []
    previous = signal.signal(signal.SIGINT, interrupt)
    with workpool.Pool(2, backend="process") as pool:
        thread = threading.Thread(target=interrupter)
        thread.start()
        try:
            for x in range(2000):
                try:
                    armed = True
                    future = pool.submit(square, x)
                    handed_out.append((x, future))
                    future.result(timeout=30)
                    armed = False
                except KeyboardInterrupt:
                    armed = False
                    interrupted += 1
        finally:
            stop.set()
            thread.join()
            signal.signal(signal.SIGINT, previous)
        for x, future in handed_out:
            assert future.result(timeout=30) == x * x
        assert list(pool.map(square, range(100))) == [x * x for x in range(100)]
    assert interrupted > 10
    assert set(unraisable) <= {KeyboardInterrupt}, unraisable


HOLDER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import workpool
    from workpool.backends.process import zygote

    with workpool.Pool(2, backend="process") as pool:
        pool.submit(abs, -1).result()
    holder = os.fork()  # holds a copy of every descriptor, the zygote's socket too
    if holder == 0:
        time.sleep(60)
        os._exit(0)
    print(zygote.get_zygote().pid, holder, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's signal: Linux")
class Ending:
    """A pool as the exit rule sees it; ``interrupted`` raises Ctrl+C in its first terminate."""

    def __init__(self, *, shutting_down: bool, interrupted: bool = False) -> None:
        self.shutting_down = shutting_down
        self.interrupted = interrupted
        self.terminated = self.joined = False

    def join(self) -> None:
        self.joined = True

    def terminate(self) -> None:
        if self.interrupted:
            self.interrupted = False
            raise KeyboardInterrupt
        self.terminated = True


def test_a_ctrl_c_while_pools_are_ended_at_exit_still_ends_every_one() -> None:
    from workpool.backends.at_exit import end_all

    # Ctrl+C may land at any point of the exit, as while a first pool is terminated.
    pools = [Ending(shutting_down=False, interrupted=True), Ending(shutting_down=False)]
    pools.append(Ending(shutting_down=True))
    end_all(pools)  # type: ignore[arg-type]
    assert [pool.terminated for pool in pools] == [True, True, True]


def test_the_zygote_ends_with_the_parent_while_another_process_holds_its_socket(
    tmp_path: Path,
) -> None:
    # The zygote's socket does not close while a process the program forked holds a
    # copy; the parent's death must end the zygote all the same (PR_SET_PDEATHSIG on
    # Linux's path, the parent-death pipe on the portable one).
    script = tmp_path / "holder.py"
    script.write_text(HOLDER_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    try:
        assert line, "the parent script did not start its pool"
        zygote_pid, holder_pid = (int(field) for field in line.split())
        parent.kill()
        parent.wait(timeout=10)  # not communicate(): the holder keeps stdout open
        assert wait_for(lambda: gone(zygote_pid), timeout=5)
        os.kill(holder_pid, signal.SIGKILL)
        assert wait_for(lambda: gone(holder_pid), timeout=5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # whatever of its group is left
        parent.stdout.close()


THREAD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import workpool

    signal.signal(signal.SIGINT, signal.default_int_handler)

    def report_and_sleep(x):
        open(os.path.join({marks!r}, str(threading.get_ident())), "w").close()
        time.sleep(30)
        return x

    if __name__ == "__main__":
        # What the README advises for a batch job's time limit: SIGTERM becomes an exit.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        if sys.argv[1] == "map":
            workpool.map(report_and_sleep, range(100), backend="thread", workers=2, chunksize=1)
        else:
            with workpool.Pool(2, backend="thread") as pool:
                list(pool.map(report_and_sleep, range(100)))
    """
)


@pytest.mark.parametrize(
    ("mode", "sent"),
    [("map", signal.SIGINT), ("pool", signal.SIGINT), ("map", signal.SIGTERM)],
    ids=["map-ctrl-c", "pool-ctrl-c", "map-sigterm-as-exit"],
)
def test_ctrl_c_ends_a_program_whose_thread_tasks_still_run(
    tmp_path: Path, mode: str, sent: signal.Signals
) -> None:
    # A thread cannot be stopped, but nobody waits for its result any more: the program
    # ends at once, as it does on processes, not when the running tasks end (30 s).
    marks = tmp_path / "threads"
    marks.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(THREAD_SCRIPT.format(marks=str(marks)))
    parent = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wait_for(lambda: len(list(marks.iterdir())) >= 2, timeout=30), parent.communicate()
    os.killpg(parent.pid, sent)
    code, _, err, took = finish(parent, timeout=10)
    if sent == signal.SIGINT:
        assert err.rstrip().endswith("KeyboardInterrupt")
        assert code == -signal.SIGINT
    else:
        assert err == ""
        assert code == 128 + signal.SIGTERM
    assert "During handling" not in err
    assert took < 3


STARTING_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import workpool

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal

    if __name__ != "__main__":
        # A worker (spawn) or the fork server importing the program again: it marks
        # that it is starting, then takes its time, as a program with heavy imports does.
        open(os.path.join({marks!r}, "starting-" + str(os.getpid())), "w").close()
        time.sleep(3)

    if __name__ == "__main__":
        workpool.map(abs, range(4), backend="process", workers=2, start_method={method!r})
        print("not interrupted", flush=True)
    """
)


@pytest.mark.parametrize("method", [m for m in START_METHODS if m != "fork"])
def test_ctrl_c_while_workers_start_prints_one_traceback(tmp_path: Path, method: str) -> None:
    # Ctrl+C reaches the whole process group: a worker (or the standard fork server)
    # still importing the program gets it too, before workpool's code in it can ignore
    # it. Only the parent may report it: one traceback, the caller's.
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(STARTING_SCRIPT.format(marks=str(marks), method=method))
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wait_for(lambda: any(marks.iterdir()), timeout=30), parent.communicate()
    starting = {int(p.name.rsplit("-", 1)[1]) for p in marks.iterdir()}
    os.killpg(parent.pid, signal.SIGINT)
    code, out, err, took = finish(parent, timeout=10)
    assert code == -signal.SIGINT, err
    assert "not interrupted" not in out
    assert err.count("Traceback") == 1, err
    assert "multiprocessing" not in err, err
    if method == "spawn" or sys.version_info < (3, 14):
        # From 3.14 the standard fork server answers a pool only once it has imported
        # the program (3 s here), and a pool that is starting a worker waits for that.
        assert took < 3
    # A fork server ends once it has read the program (and seen that the parent is gone).
    assert wait_for(lambda: all(gone(p) for p in starting), timeout=10)


PROGRAM_OF_A_TASK = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    import workpool

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal

    def run_a_program(x):
        program = subprocess.Popen(["sleep", "60"])
        open(os.path.join(sys.argv[1], str(program.pid)), "w").close()
        return program.wait()

    if __name__ == "__main__":
        workpool.map(run_a_program, range(2), backend="process", workers=2)
    """
)


@pytest.mark.parametrize("portable", [False, True], ids=["linux", "portable"])
def test_ctrl_c_ends_the_programs_tasks_run(tmp_path: Path, portable: bool) -> None:
    # Workers ignored Ctrl+C with SIG_IGN, which a program run by a task inherits
    # through exec: after a Ctrl+C the caller and its workers ended, and `sleep` ran on.
    marks = tmp_path / "pids"
    marks.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(PROGRAM_OF_A_TASK)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(marks)],
        env={**os.environ, "WORKPOOL_PORTABLE": "1"} if portable else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a program in a terminal
    )
    programs = wait_for_workers(parent, marks)
    try:
        os.killpg(parent.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
        code, _, err, _ = finish(parent, timeout=10)
        assert "KeyboardInterrupt" in err
        assert code != 0
        assert wait_for(lambda: all(gone(p) for p in programs), timeout=5)
    finally:
        for pid in programs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
