"""The unit of work every backend runs: a chunk of consecutive inputs, and its results.

A map over many inputs is cut into ``Chunk``s: consecutive input positions, one
function, one calling convention. A backend runs a chunk and hands a ``ResultBatch``
to the chunk's ``sink``, the object that asked for the work (a map run or a Future).
"""

from __future__ import annotations

import enum
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import FunctionType, MethodType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from workpool.timeline.recorder import Recorder

__all__ = [
    "CallMode",
    "Chunk",
    "ResultBatch",
    "arguments_of",
    "call_items",
    "extend_calls",
    "function_name",
    "rerun_failed_here",
]


class CallMode(enum.IntEnum):
    """How an input item becomes the arguments of a call."""

    ONE = 0  # fn(item)
    STAR = 1  # fn(*item)
    CALL = 2  # fn(*item[0], **item[1])


if TYPE_CHECKING:

    class ResultSink(Protocol):
        """Who receives the results of a chunk."""

        def claim(self, chunk: Chunk) -> bool:
            """Called just before ``chunk`` starts; ``False`` means drop it unrun (cancelled).

            A backend may call it holding its own lock: it must not block or submit.
            """
            ...

        def deliver(self, batch: ResultBatch) -> None:
            """Receive a chunk's results; must not block long.

            Called from a backend's thread, or from the submitting thread itself (the serial
            backend, or arguments that cannot be sent); never with a backend's lock held, so
            it may submit again (retries).
            """
            ...


def function_name(fn: Callable[..., Any]) -> str:
    """How messages name a function: its qualified name, else its type's name."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


class Chunk:
    """Consecutive inputs ``items`` starting at input position ``start``, run with ``fn``.

    ``start`` is -1 for a task submitted on its own, which has no input position.

    ``attempt`` counts earlier failed tries of these items (retries); ``tag`` is opaque
    to backends and lets the sink find its own bookkeeping when results come back,
    including for pieces a backend splits off a chunk after a crash. ``sharing`` is the
    automatic sharing of large arrays for the call the chunk belongs to. ``trace`` is
    the call's timeline recorder when it was asked for (``trace=``): a backend then
    times the chunk's phases (``ResultBatch.times``) and reports its worker's faults;
    otherwise it is None, and checking it is all tracing costs.
    """

    # Plain slots, not a dataclass: every chunk of every call is one of these, and
    # dataclasses cost start-up time (their module pulls in inspect).
    __slots__ = (
        "attempt",
        "fn",
        "items",
        "mode",
        "sharing",
        "sink",
        "start",
        "tag",
        "task_timeout",
        "trace",
    )

    def __init__(
        self,
        sink: ResultSink,
        fn: Callable[..., Any],
        mode: CallMode,
        start: int,
        items: Sequence[Any],
        task_timeout: float | None = None,
        attempt: int = 0,
        tag: Any = None,
        sharing: Any = None,
        trace: Recorder | None = None,
    ) -> None:
        self.sink = sink
        self.fn = fn
        self.mode = mode
        self.start = start
        self.items = items
        self.task_timeout = task_timeout
        self.attempt = attempt
        self.tag = tag
        self.sharing = sharing
        self.trace = trace

    def __repr__(self) -> str:
        return f"<Chunk start={self.start} items={len(self.items)} attempt={self.attempt}>"

    def task_name(self, offset: int = 0) -> str:
        """How error messages name item ``offset`` of this chunk: by its input position,
        or, for a submitted task (which has none), by its function."""
        if self.start < 0:
            return f"the task {function_name(self.fn)}(...)"
        return f"the task at input position {self.start + offset}"

    def split(self, begin: int, end: int) -> Chunk:
        """The piece of this chunk holding items ``[begin, end)``, as a new chunk."""
        return Chunk(
            sink=self.sink,
            fn=self.fn,
            mode=self.mode,
            start=self.start + begin,
            items=self.items[begin:end],
            task_timeout=self.task_timeout,
            attempt=self.attempt,
            tag=self.tag,
            sharing=self.sharing,
            trace=self.trace,
        )


class ResultBatch:
    """The outcome of one chunk: a value or an exception for every item.

    ``values[i]`` is the result of ``chunk.items[i]`` unless ``i`` is in ``errors``.
    ``elapsed`` is the time the worker spent running the items, for chunk sizing.
    ``retryable`` is False when trying again cannot help: the items could not be
    pickled, the pool was shut down with ``cancel_futures``, or the pool is broken.
    ``worker`` names where the chunk ran ("process 1234", "thread workpool-2"), for
    error messages and timelines. ``pickled``, when an engine has it, is the standard
    pickle of ``(values, errors)`` exactly as a worker sent it, with nothing failed and
    nothing in shared memory: a checkpoint stores it as it is instead of pickling again.
    ``times``, given for a traced chunk, are when its worker began receiving it, began
    and finished running it, and finished returning the results
    (``workpool.clock.now_ns``, on the caller's clock).
    """

    __slots__ = (
        "chunk",
        "elapsed",
        "errors",
        "pickled",
        "retryable",
        "times",
        "unsent",
        "values",
        "worker",
    )

    def __init__(
        self,
        chunk: Chunk,
        values: list[Any],
        errors: dict[int, BaseException],
        elapsed: float = 0.0,
        retryable: bool = True,
        worker: str = "",
        pickled: bytes | memoryview | None = None,
        times: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.chunk = chunk
        self.values = values
        self.errors = errors
        self.elapsed = elapsed
        self.retryable = retryable
        self.worker = worker
        self.pickled = pickled
        self.times = times
        # Its items never reached a worker: their arguments cannot be pickled.
        self.unsent = False

    def __repr__(self) -> str:
        return f"<ResultBatch {self.chunk!r} errors={len(self.errors)} by {self.worker!r}>"

    @classmethod
    def failed(
        cls, chunk: Chunk, error: BaseException, *, retryable: bool, unsent: bool = False
    ) -> ResultBatch:
        """A batch in which every item of ``chunk`` failed with ``error``; ``unsent``: it
        failed because its arguments could not be pickled to reach a worker."""
        count = len(chunk.items)
        batch = cls(chunk, [None] * count, dict.fromkeys(range(count), error), retryable=retryable)
        batch.unsent = unsent
        return batch


def arguments_of(mode: CallMode, item: Any) -> list[Any]:
    """The arguments, positional and keyword, that ``item`` is called with in ``mode``."""
    if mode is CallMode.ONE:
        return [item]
    if mode is CallMode.STAR:
        return list(item)
    args, kwargs = item
    return [*args, *kwargs.values()]


def stop_iteration_failure(cause: StopIteration | None) -> RuntimeError:
    """The error a task that raised ``StopIteration`` fails with.

    As PEP 479 does for generators, it becomes a ``RuntimeError``, so that no iterator
    on the way back (``map``, ``imap``, the user's own loop) takes it for its end.
    """
    error = RuntimeError("the task raised StopIteration")
    error.__cause__ = cause
    return error


# Whether a ``for`` loop calls a Python function faster than ``map`` (``extend_calls``).
_LOOP_CALLS_FASTER = sys.version_info >= (3, 11)


def extend_calls(
    values: list[Any], fn: Callable[..., Any], mode: CallMode, remaining: Iterator[Any]
) -> None:
    """Append to ``values`` what ``fn`` returns for each item left in ``remaining``
    (in ``mode``), until they end or a call raises.

    A function written in Python (or a method of one) is called from a ``for`` loop:
    Python 3.11+ runs it without leaving the interpreter's own loop, while ``map``
    enters that loop anew from C for each call. Over 200,000 trivial items the ``for``
    loop took 5% less time on 3.11, 17% on 3.12, 15% on 3.13, 20% on 3.14 (with or
    without the GIL), and 36-39% more on 3.10, which keeps ``map``. For a function
    written in C (builtins, ``operator``'s) ``map`` took 10-30% less, and calls those.
    ``map`` takes a call's ``StopIteration`` for the end of its input, where the
    ``for`` loop lets it out.
    """
    if mode is not CallMode.CALL and not (
        _LOOP_CALLS_FASTER and isinstance(fn, (FunctionType, MethodType))
    ):
        values.extend(
            map(fn, remaining) if mode is CallMode.ONE else itertools.starmap(fn, remaining)
        )
    elif mode is CallMode.ONE:
        for item in remaining:
            values.append(fn(item))
    elif mode is CallMode.STAR:
        for args in remaining:
            values.append(fn(*args))
    else:  # keyword arguments too: map has no form for them
        for args, kwargs in remaining:
            values.append(fn(*args, **kwargs))


def call_items(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    *,
    before_each: Callable[[int], object] | None = None,
    after_error: Callable[[list[Any], dict[int, BaseException]], object] | None = None,
    catch_interrupt: bool = False,
) -> tuple[list[Any], dict[int, BaseException], float]:
    """Run ``fn`` over ``items``; return values, exceptions by position, elapsed seconds.

    A failing item leaves ``None`` in ``values`` and its exception in the dict; the
    other items still run. ``KeyboardInterrupt`` propagates (it is the user's, not the
    task's) unless ``catch_interrupt``, for workers that never see a real one.
    ``before_each(position)`` is called before each item, for those who watch progress;
    ``after_error(values, errors)`` after each item that raised, with the outcomes so
    far (the failed item's ``None`` in place), for those who report failures at once.

    This is the hot loop of every backend (``extend_calls``, in the common case).
    """
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    append = values.append
    passthrough: Any = () if catch_interrupt else KeyboardInterrupt  # () matches nothing
    started = time.perf_counter()
    if before_each is not None:
        for position, item in enumerate(items):
            before_each(position)
            try:
                if mode is CallMode.ONE:
                    append(fn(item))
                elif mode is CallMode.STAR:
                    append(fn(*item))
                else:
                    append(fn(*item[0], **item[1]))
            except passthrough:
                raise
            except StopIteration as exc:
                errors[position] = stop_iteration_failure(exc)
                append(None)
            except BaseException as exc:  # SystemExit from a task is that task's failure
                errors[position] = exc
                append(None)
            else:
                continue
            if after_error is not None:
                after_error(values, errors)
    else:
        # When a call raises, every value before it is in place, so len(values) is the
        # failing item's position, and the same iterator resumes after it.
        remaining = iter(items)
        while True:
            try:
                extend_calls(values, fn, mode, remaining)
            except passthrough:
                raise
            except StopIteration as exc:
                errors[len(values)] = stop_iteration_failure(exc)
                append(None)
            except BaseException as exc:
                errors[len(values)] = exc
                append(None)
            else:
                if len(values) == len(items):
                    break
                # A call raised StopIteration, and map took it for the end of its input.
                errors[len(values)] = stop_iteration_failure(None)
                append(None)
            if after_error is not None:
                after_error(values, errors)
    return values, errors, time.perf_counter() - started


def rerun_failed_here(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    values: list[Any],
    errors: dict[int, BaseException],
) -> None:
    """Run again, in this thread, the ``items`` that raised elsewhere, one at a time.

    ``values`` and ``errors`` (by position) are updated: the error that stands is this
    run's. For measuring, where another thread or interpreter ran what a plain loop would
    have run here, and a failure may be the other place's, not the item's.
    """
    for position in sorted(errors):
        again, again_errors, _ = call_items(fn, mode, items[position : position + 1])
        values[position] = again[0]
        if again_errors:
            errors[position] = again_errors[0]
        else:
            del errors[position]
