"""Functions the tests run on workers: importable by name in every start method."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def fail_on(bad: int):  # type: ignore[no-untyped-def]
    """A function that raises ValueError for the input ``bad`` and squares the rest."""

    def check(x: int) -> int:
        if x == bad:
            raise ValueError(f"bad input {x}")
        return x * x

    return check


def stop_on_two(x: int, offset: int = 0) -> int:
    """Add ``offset``, except that input 2 raises StopIteration (which must not end a map)."""
    if x == 2:
        raise StopIteration("not the end of anything")
    return x + offset


def where(_: object) -> tuple[int, str]:
    """The pid and thread name that ran this task."""
    return os.getpid(), threading.current_thread().name


def loaded(module: str) -> tuple[int, bool]:
    """This process's pid, and whether ``module`` is imported in it."""
    return os.getpid(), module in sys.modules


def slow_square(x: int, delay: float = 0.05) -> int:
    time.sleep(delay)
    return x * x


class Unpicklable:
    """An object plain pickle and cloudpickle both refuse (it holds a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class NeedsTwoArgs(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ needs two args)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def raise_needs_two_args(x: int) -> int:
    raise NeedsTwoArgs(x, x)


_state: dict[str, object] = {}


def remember(value: object) -> None:
    """An initializer: stores ``value`` in this worker."""
    _state["value"] = value


def recall(_: object) -> object:
    return _state.get("value")


def broken_initializer() -> None:
    raise RuntimeError("initializer says no")


def interrupt_on_one(x: int) -> int:
    """Raise KeyboardInterrupt for the input 1, as a task of the user's might."""
    if x == 1:
        raise KeyboardInterrupt
    return x


def exit_by_system_exit() -> None:
    """An initializer that raises SystemExit, as ``sys.exit`` in a setup script would."""
    raise SystemExit(3)


class CountingInput:
    """An endless input that counts how many items were taken from it.

    The input is read in the caller's process, whatever the backend, so this counts the
    tasks that were handed to the pool, even when they run in other processes or
    subinterpreters (where a list the task appends to would be a copy).
    """

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.taken = i + 1
            yield i


class Tracked:
    """An object a test watches with a weak reference, to see who keeps it alive."""

    def method(self) -> str:
        return "called"


def make_tracked(_: object) -> Tracked:
    return Tracked()
