"""Functions the checkpoint tests run: each call leaves a mark, so a test can count runs.

An item is ``(x, marks)``: ``x`` the value, ``marks`` a directory where each call
creates a file named after ``x``, the worker's pid and a unique suffix. They are
importable by name, so every backend and start method runs the same function.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any


def _mark(x: int, marks: str) -> None:
    Path(marks, f"{x}.{os.getpid()}.{uuid.uuid4().hex}").touch()


def logged_square(item: tuple[int, str]) -> int:
    x, marks = item
    _mark(x, marks)
    return x * x


def logged_cube(item: tuple[int, str]) -> int:
    x, marks = item
    _mark(x, marks)
    return x * x * x


def logged_add(x: int, y: int, marks: str) -> int:
    _mark(x, marks)
    return x + y


def logged_arguments(*args: Any) -> tuple[Any, ...]:
    """Its arguments: a map and a starmap of the same ``(x, marks)`` items differ."""
    x, marks = args[0] if len(args) == 1 else args
    _mark(x, marks)
    return args


def wandering_square(item: tuple[int, str]) -> int:
    """Squares, and makes ``marks`` the process's working directory (threads share it)."""
    x, marks = item
    _mark(x, marks)
    os.chdir(marks)
    return x * x


def slow_logged_square(item: tuple[int, str], delay: float = 0.01) -> int:
    x, marks = item
    time.sleep(delay)
    _mark(x, marks)
    return x * x


def fails_while_flagged(item: tuple[int, str]) -> int:
    """Squares, except that multiples of 7 fail while the file ``marks/../broken`` exists."""
    x, marks = item
    _mark(x, marks)
    if x % 7 == 0 and os.path.exists(os.path.join(marks, os.pardir, "broken")):
        raise ValueError(f"broken at {x}")
    return x * x


def interrupted_while_flagged(item: tuple[int, str]) -> int:
    """Squares, except that item 40 raises KeyboardInterrupt (as a Ctrl+C landing in it
    would) while the file ``marks/../interrupt`` exists."""
    x, marks = item
    if x == 40 and os.path.exists(os.path.join(marks, os.pardir, "interrupt")):
        raise KeyboardInterrupt
    _mark(x, marks)
    return x * x


def note_start(starts: str) -> None:
    """An initializer: leaves a file in ``starts`` for each worker (or pool) it prepares."""
    Path(starts, f"{os.getpid()}.{uuid.uuid4().hex}").touch()


def calls(marks: str | Path) -> Counter[int]:
    """How many times each ``x`` ran."""
    return Counter(int(name.split(".")[0]) for name in os.listdir(marks))


def worker_pids(marks: str | Path) -> set[int]:
    return {int(name.split(".")[1]) for name in os.listdir(marks)}


def held_square(item: tuple[int, str]) -> int:
    """Squares; items from 61 on wait while the file ``marks/../hold`` exists."""
    x, marks = item
    while x >= 61 and os.path.exists(os.path.join(marks, os.pardir, "hold")):
        time.sleep(0.01)
    _mark(x, marks)
    return x * x


def mark_seen(item: dict[str, int]) -> int:
    """Changes its input in place (as threads and the calling thread let it), then returns."""
    item["seen"] = 1
    return item["x"]


def mark_seen_fail_on_3(item: dict[str, int]) -> int:
    """``mark_seen``, but the item whose ``x`` is 3 raises (after being changed)."""
    item["seen"] = 1
    if item["x"] == 3:
        raise ValueError("x is 3")
    return item["x"]


class Unprintable(Exception):
    """An exception whose ``str()`` itself fails (a bug in a user's ``__str__``)."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def unprintable_on_3(x: int) -> int:
    """Squares, except that 3 raises an exception that cannot be turned into text."""
    if x == 3:
        raise Unprintable()
    return x * x


@dataclasses.dataclass
class Parcel:
    """An input item of a class of the user's own, with a set among its fields."""

    weight: int
    tags: set[str]

    def size(self) -> int:
        return len(self.tags)
