"""Tasks for tests/test_interpreter.py that subinterpreters import by name.

Kept apart from the test module because that one imports ``conftest`` and with it
psutil, a C extension that cannot be loaded in a subinterpreter.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Set by tasks; in the main interpreter it must stay as it is.
touched: dict[str, object] = {}


def current_interpreter_id() -> int:
    from concurrent import interpreters

    return int(interpreters.get_current().id)


def touch(value: object) -> int:
    """Record ``value`` in this module's globals; return the id of the interpreter."""
    touched["value"] = value
    return current_interpreter_id()


def interpreter_id(_: object) -> int:
    return current_interpreter_id()


def pid(_: object) -> int:
    return os.getpid()


def wait_for_file(path: str, bad: int) -> Callable[[int], int]:
    """Square the input, but on input ``bad`` wait (at most 60 s) until ``path`` exists."""

    def task(x: int) -> int:
        if x == bad:
            deadline = time.monotonic() + 60
            while not Path(path).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return x * x

    return task


def return_a_lock(x: int) -> object:
    return threading.Lock() if x == 1 else x


def cut_the_loop_off(x: int) -> int:
    """Close the pipe the interpreter's loop answers on, as a misbehaving task might."""
    import sys

    frame = sys._getframe()
    while frame.f_code.co_name != "serve":
        assert frame.f_back is not None
        frame = frame.f_back
    os.close(frame.f_locals["wfd"])
    return x


def fill_shared_range(size: int) -> object:
    """A task that builds its result with ``workpool.zeros`` (NumPy, if it loads here)."""
    import workpool

    out = workpool.zeros(size)
    out[:] = range(size)
    return out


def import_numpy(_: object) -> str:
    """Import NumPy in the task itself (it does not load in subinterpreters)."""
    import numpy

    return str(numpy.__version__)


def squares_on_threads(n: int) -> list[int]:
    """A task that runs a thread pool of its own (with a timeout, so a watchdog too)."""
    import workpool

    with workpool.Pool(2, backend="thread") as pool:
        squares = list(pool.map(pow, range(n), [2] * n))
    assert workpool.map(pow, range(n), [2] * n, backend="thread", task_timeout=30) == squares
    return squares


def squares_on_interpreters(n: int) -> list[int]:
    """A task that runs a subinterpreter pool of its own."""
    import workpool

    with workpool.Pool(2, backend="interpreter") as pool:
        return list(pool.map(pow, range(n), [2] * n))


def squares_traced_and_checkpointed(folder: str) -> list[int]:
    """A task whose own map keeps a timeline and a checkpoint in ``folder``."""
    import workpool

    trace, checkpoint = f"{folder}/trace.json", f"{folder}/run.ckpt"
    return workpool.map(abs, [-1, -2, -3], backend="thread", trace=trace, checkpoint=checkpoint)


def depth(n: int) -> int:
    """``n``, counted by recursing ``n`` calls deep."""
    return 0 if n == 0 else 1 + depth(n - 1)


def write_byte(memory: object, index: int) -> int:
    """Write into bytes-like memory given to the task (``share(writable=True)``)."""
    view = memoryview(memory)  # type: ignore[arg-type]
    view[index] = ord("a") + index
    return len(view)


def mark_then_wait_for_file(
    marks: str, path: str, *, interrupt: bool = False, patience: float = 60
) -> Callable[[int], int]:
    """Return the input, but first note its start as a file in directory ``marks``, then
    wait (at most ``patience`` seconds) until ``path`` exists. With ``interrupt``, input
    0 sends this process a SIGINT (Ctrl+C) once two tasks have started."""

    def task(x: int) -> int:
        Path(marks, str(x)).touch()
        deadline = time.monotonic() + patience
        if interrupt and x == 0:
            while len(os.listdir(marks)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return x

    return task


def interrupt_then_wait_for_file(path: str) -> Callable[[int], int]:
    """Return the input, but first wait (at most 60 s) until ``path`` exists; on input 0,
    send this process a SIGINT (Ctrl+C) first."""

    def task(x: int) -> int:
        if x == 0:
            os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 60
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return x

    return task


def marked_fails_every_tenth(item: tuple[int, str]) -> int:
    """About 2 ms of pure-Python CPU work; leaves a file in ``marks`` for each run, and
    raises for every tenth ``x``, wherever it runs."""
    x, marks = item
    Path(marks, f"{x}.{os.getpid()}.{threading.get_native_id()}.{time.perf_counter_ns()}").touch()
    deadline = time.thread_time() + 0.002
    while time.thread_time() < deadline:
        pass
    if x % 10 == 9:
        raise ValueError(x)
    return x
