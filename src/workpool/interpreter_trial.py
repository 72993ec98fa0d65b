"""Timing a pool of two subinterpreters on real items, for ``advise`` (Python 3.14+).

On a build with the GIL, CPU work that holds it gains nothing from threads, while
subinterpreters (each with its own GIL) run it in parallel without a second process:
on pure-Python work they can beat processes. No model predicts that well (starting an
interpreter imports workpool and the function's modules into it; some extension
modules refuse to load there), so ``advise`` measures it::

    first items ──> 1 item per interpreter (start-up)  ──> `want` items, half each
                    │                                     │
                    └─ start = that time - one item ──────┴─ speedup = want x per item
                                                               inline / their time

Every item is a real task of the call; its result is kept. An item that raised in a
subinterpreter runs again in the calling thread (the failure may be the interpreter's:
an extension module that does not support them), or, with retries, is retried there as
they allow; subinterpreters are then not offered. The pool is shut down afterwards,
unless the caller keeps it to run the rest of the call on (``keep``), so that its
start-up is not paid twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from workpool._options import PoolSpec
from workpool.records import Record
from workpool.tasks import CallMode, Chunk, ResultBatch, call_items, rerun_failed_here

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.base import Backend

__all__ = ["Trial", "time_interpreters"]


class Trial(Record):
    """What two subinterpreters did with the items they were given."""

    __slots__ = ("items", "parallelism", "speedup", "start_seconds")
    items: int  # items run there (or, after a failure, here)
    speedup: float | None  # items/s on two started interpreters / items/s inline; None: unusable
    start_seconds: float  # starting two interpreters, beyond running an item in each
    parallelism: float | None  # CPU seconds of the process per wall second meanwhile


class _Collected:
    """The sink of the trial's chunks: their batches, and an event when all items are in.

    It counts items, not chunks: a chunk may come back as several batches (a
    subinterpreter that cannot rebuild a chunk's items runs them again one at a time).
    """

    def __init__(self, items: int) -> None:
        self.batches: dict[int, ResultBatch] = {}
        self._left = items
        self._lock = threading.Lock()
        self.done = threading.Event()

    def claim(self, chunk: Chunk) -> bool:
        return True

    def deliver(self, batch: ResultBatch) -> None:
        with self._lock:
            self.batches[batch.chunk.start] = batch
            self._left -= len(batch.chunk.items)
            if self._left == 0:
                self.done.set()


def _run(
    backend: Backend, fn: Callable[..., Any], mode: CallMode, pieces: list[Sequence[Any]]
) -> tuple[list[Any], dict[int, BaseException]]:
    """Run each piece as one chunk on ``backend``; values and errors in input order."""
    sink = _Collected(sum(len(piece) for piece in pieces))
    start = 0
    for piece in pieces:
        backend.submit(Chunk(sink, fn, mode, start, piece))
        start += len(piece)
    sink.done.wait()
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    for begin in sorted(sink.batches):
        batch = sink.batches[begin]
        errors.update((begin + offset, error) for offset, error in batch.errors.items())
        values.extend(batch.values)
    return values, errors


def time_interpreters(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    per_item: float,
    spec: PoolSpec,
    keep: list[Backend] | None = None,
    rerun_failures: bool = True,
) -> tuple[Trial, list[Any], dict[int, BaseException]]:
    """Run ``items`` (at least 4) on a pool of ``spec`` (an interpreter pool), two at once.

    Returns the trial and the items' values and errors by position. ``per_item`` is
    the inline time of one item. With ``keep``, a pool that ran every item is appended
    to it, still running, instead of being shut down. Items that failed there run again
    in this thread, unless ``rerun_failures`` is False: the caller then tries them again
    itself, as its retries allow (a rerun here would be one attempt more than they
    allow).
    """
    from workpool.backends import create_backend

    assert len(items) >= 4
    middle = 2 + (len(items) - 2) // 2
    try:
        backend = create_backend(spec, fn)
    except Exception:  # the initializer cannot be pickled, say: not offered, run here
        values, errors, _ = call_items(fn, mode, items)
        return (
            Trial(items=len(items), speedup=None, start_seconds=0.0, parallelism=None),
            values,
            errors,
        )
    kept = False
    try:
        started = time.perf_counter()
        first_values, first_errors = _run(backend, fn, mode, [items[:1], items[1:2]])
        warmed = time.perf_counter()
        cpu = time.process_time()
        values, errors = _run(backend, fn, mode, [items[2:middle], items[middle:]])
        ended = time.perf_counter()
        cpu = time.process_time() - cpu
        values = first_values + values
        errors = first_errors | {2 + offset: error for offset, error in errors.items()}
        if not errors:
            kept = keep is not None
            if keep is not None:
                keep.append(backend)
            wall = ended - warmed
            speedup = (len(items) - 2) * per_item / wall if wall > 0 else None
            start_seconds = max(0.0, (warmed - started) - per_item)
            parallelism = cpu / wall if wall > 0 else None
            return (
                Trial(
                    items=len(items),
                    speedup=speedup,
                    start_seconds=start_seconds,
                    parallelism=parallelism,
                ),
                values,
                errors,
            )
    except Exception as exc:  # the pool itself failed (an unpicklable function...): not offered
        values, errors = [None] * len(items), dict.fromkeys(range(len(items)), exc)
    finally:
        if not kept:
            backend.shutdown(wait=True, cancel_pending=True)
    # What failed there runs again here, where it will be judged like any other item.
    if rerun_failures:
        rerun_failed_here(fn, mode, items, values, errors)
    return (
        Trial(items=len(items), speedup=None, start_seconds=0.0, parallelism=None),
        values,
        errors,
    )
