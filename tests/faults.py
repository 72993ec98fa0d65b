"""Tasks that misbehave in every way the fault suite needs; importable by workers."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def die(how: str) -> None:
    """End this process abruptly, the way ``how`` names."""
    if how == "exit":
        os._exit(7)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "abort":
        os.abort()
    raise ValueError(f"unknown way to die: {how}")


def crash_on(bad: int, how: str = "exit") -> Callable[[int], int]:
    """Square the input, but kill the worker process on input ``bad``."""

    def task(x: int) -> int:
        if x == bad:
            die(how)
        return x * x

    return task


def crash_on_any(bad: set[int], how: str = "exit") -> Callable[[int], int]:
    def task(x: int) -> int:
        if x in bad:
            die(how)
        return x * x

    return task


def crash_first_try(marks: Path, every: int) -> Callable[[int], int]:
    """Kill the worker the first time an input divisible by ``every`` is run; then succeed."""

    def task(x: int) -> int:
        if x % every == 0:
            mark = marks / str(x)
            if not mark.exists():
                mark.touch()
                os._exit(9)
        return x * x

    return task


def fail_first_try(marks: Path) -> Callable[[int], int]:
    """Raise the first time each input is run; succeed the second time."""

    def task(x: int) -> int:
        mark = marks / f"try-{x}"
        if not mark.exists():
            mark.touch()
            raise ConnectionError(f"flaky {x}")
        return x * x

    return task


def hang_on(bad: int, seconds: float = 60.0) -> Callable[[int], int]:
    """Square the input, but sleep ``seconds`` on input ``bad``."""

    def task(x: int) -> int:
        if x == bad:
            time.sleep(seconds)
        return x * x

    return task


def pid_of(_: object) -> int:
    return os.getpid()


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def announce_then_sleep(marker: str, seconds: float) -> int:
    """Create the file ``marker`` (the task has started), then sleep."""
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


class CrashWhenUnpickled:
    """An argument that kills the worker as the worker unpickles it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (die, ("exit",))


class RaiseWhenUnpickled:
    """An argument that pickles here but raises when the worker unpickles it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse, ("this argument cannot be rebuilt in a worker",))


def _refuse(message: str) -> None:
    raise RuntimeError(message)


def unrebuildable_result_at_1(x: int) -> object:
    """``x``, except for 1: a result that pickles in the worker and cannot be unpickled
    in the caller."""
    return RaiseWhenUnpickled() if x == 1 else x


class CrashWhenPickled:
    """A result that kills the worker while the worker pickles it."""

    def __reduce__(self) -> tuple[Any, ...]:
        die("exit")
        raise AssertionError


def return_crash_when_pickled(x: int) -> object:
    return CrashWhenPickled() if x == 1 else x


def exit_in_initializer() -> None:
    os._exit(5)


class CrashWhenFunctionUnpickled:
    """A callable that kills the worker as the worker unpickles it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (die, ("exit",))

    def __call__(self, x: int) -> int:
        return x


class RaiseWhenFunctionUnpickled:
    """A callable that pickles here but cannot be rebuilt in a worker."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse, ("this function cannot be rebuilt in a worker",))

    def __call__(self, x: int) -> int:
        return x


def _hold_descriptors(seconds: float) -> int:
    """Fork a child that keeps every descriptor of this process open for ``seconds``.

    It stands for any process that inherits a worker's descriptors: a subprocess the
    task starts, or another part of the program forking at the wrong moment. The
    worker's socket and the write end of its exit pipe then live on after it dies.
    """
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(seconds)
        finally:
            os._exit(0)
    return pid


def hold_descriptors_then_hang(pid_file: str) -> int:
    """Leave a descriptor holder behind, write its pid and ours to ``pid_file``, hang."""
    holder = _hold_descriptors(60)
    partial = Path(pid_file + ".partial")
    partial.write_text(f"{holder} {os.getpid()}")
    partial.rename(pid_file)
    time.sleep(60)
    return holder


def hold_descriptors_then_die(pid_file: str) -> None:
    """Leave a descriptor holder behind, write its pid and ours to ``pid_file``, die by SIGKILL."""
    holder = _hold_descriptors(60)
    partial = Path(pid_file + ".partial")
    partial.write_text(f"{holder} {os.getpid()}")
    partial.rename(pid_file)
    os.kill(os.getpid(), signal.SIGKILL)


def kill_holder(pid_file: Path) -> None:
    """End the holder that ``pid_file`` names, if it was started."""
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def hold_descriptors_and_linger(seconds: float) -> int:
    """Leave a descriptor holder behind, and a thread that keeps this process from exiting.

    Returns the holder's pid. The worker then cannot end when told to stop: Python
    waits for its non-daemon threads first.
    """
    holder = _hold_descriptors(seconds)
    threading.Thread(target=time.sleep, args=(seconds,), name="linger").start()
    return holder


def fork_and_forget_to_exit(child_ends: str) -> tuple[str, int | str]:
    """Fork, and let the child leave the task as the parent does: it forgot ``os._exit``.

    The child returns (``child_ends="return"``), raises ValueError (``"raise"``) or
    raises ``SystemExit(3)`` (``"exit"``). The parent waits up to 10 s for it and returns
    its exit status, or ``"still running"`` (and kills it).
    """
    pid = os.fork()
    if pid == 0:
        if child_ends == "raise":
            raise ValueError("raised in the child")
        if child_ends == "exit":
            raise SystemExit(3)
        return ("child", os.getpid())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return ("parent", os.waitstatus_to_exitcode(status))
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return ("parent", "still running")


def count_runs_then_fail(
    marks: Path, raise_on: int, crash_on: int = -1, hang_on: int = -1
) -> Callable[[int], int]:
    """Leave a file in ``marks`` for every run; raise on ``raise_on`` (only the first time
    it runs), end the process on ``crash_on``, sleep a minute on ``hang_on``, square the
    rest."""

    def task(x: int) -> int:
        runs = len(list(marks.glob(f"{x}-*")))
        (marks / f"{x}-{os.getpid()}-{time.monotonic_ns()}").touch()
        if x == raise_on and runs == 0:
            raise ValueError(f"first run of {x}")
        if x == crash_on:
            os._exit(3)
        if x == hang_on:
            time.sleep(60)
        return x * x

    return task


def runs_of(marks: Path, x: int) -> int:
    return len(list(marks.glob(f"{x}-*")))


class HangWhenPickled:
    """A result whose pickling never ends (until the process is killed)."""

    def __reduce__(self) -> tuple[Any, ...]:
        threading.Event().wait()
        raise AssertionError


def return_hang_when_pickled(x: int) -> object:
    return HangWhenPickled() if x == 1 else x


class UnpicklableError(Exception):
    """An exception that holds a lock, which pickle refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable_then_crash(x: int) -> int:
    if x == 1:
        raise UnpicklableError("holds a lock")
    if x == 2:
        os._exit(3)
    return x * x
