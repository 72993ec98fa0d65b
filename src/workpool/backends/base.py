"""The one interface every engine implements; ``Pool`` and map runs know only this.

It also holds the one rule for a failing initializer, which every engine follows (see
``broken_by_initializer``), and the one way an engine hands results over (``deliver``)
and fails the chunks it will not run (``fail_chunks``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from workpool._options import PoolSpec
from workpool.chunking import MAX_CHUNK_ITEMS
from workpool.clock import now_ns
from workpool.errors import TaskTimeout, WorkpoolError
from workpool.tasks import Chunk, ResultBatch, call_items

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from workpool.errors import BrokenPool
    from workpool.tasks import ResultSink
    from workpool.timeline.recorder import Recorder

__all__ = [
    "Backend",
    "InitializerFailed",
    "ShutDown",
    "broken_by_initializer",
    "call_items_timed",
    "deliver",
    "initialize_here",
]


class ShutDown(WorkpoolError, RuntimeError):
    """``submit`` to a pool that has shut down: the ``RuntimeError`` an ``Executor`` raises
    then, of a type of its own, so that a lazy map can tell it from a task's (and, as
    every error of the library's own, a ``WorkpoolError``).

    Its words are the standard pools', which code written for them looks for.
    """

    def __init__(self) -> None:
        super().__init__("cannot schedule new futures after shutdown")


class Backend(abc.ABC):
    """An engine that runs chunks and hands each one's results to the chunk's sink.

    Life cycle: created (workers start), ``submit`` any number of times from any
    thread, ``shutdown`` once. Every submitted chunk ends in exactly one of: its sink's
    ``claim`` refuses it (cancelled), or its sink's ``deliver`` receives a batch with a
    value or an exception for every item.
    """

    #: The name users give in ``backend=...``.
    name: ClassVar[str]
    #: How long one chunk should take on a worker, for adaptive chunk sizes: long
    #: enough that moving the chunk costs little beside running it.
    target_chunk_seconds: ClassVar[float]
    #: The most items one chunk may hold, whatever they cost (see ``chunking``).
    max_chunk_items: ClassVar[int] = MAX_CHUNK_ITEMS

    #: The group of tracks its workers get in a timeline; None: the caller's process
    #: (workers that are threads of it).
    trace_group: ClassVar[str | None] = None

    def __init__(self, spec: PoolSpec, *, recorder: Recorder | None = None) -> None:
        self.spec = spec
        self.workers = spec.workers
        #: The timeline of the one call this pool was started for, if it is traced:
        #: the engine reports its pool's and its workers' start-up there.
        self.recorder = recorder
        #: When the pool began to start, and when its last worker was ready (0: none
        #: yet), on ``clock.now_ns``: what a traced call made later on a ``Pool`` says
        #: about the start-up that preceded it.
        self.started_ns = now_ns()
        self.last_worker_ready_ns = 0
        #: Timelines of the traced calls running on this pool now (``Pool`` calls).
        self.traced_calls: list[Recorder] = []

    def worker_started(self, label: str, began_ns: int, ready_ns: int) -> None:
        """The engine says a worker took ``[began_ns, ready_ns)`` to start.

        Called from the engine's threads, also for a worker that replaces another.
        The start goes on the timeline of the call the pool was started for and of
        every traced call running on it now.
        """
        self.last_worker_ready_ns = max(self.last_worker_ready_ns, ready_ns)
        for recorder in (self.recorder, *self.traced_calls):
            if recorder is not None:
                track = recorder.worker_track(label, self.trace_group)
                recorder.span(track, "worker start", "startup", began_ns, ready_ns)

    @abc.abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Queue ``chunk`` to run. Thread-safe and non-blocking.

        Raises ``BrokenPool`` when the pool cannot run work any more, and
        ``RuntimeError`` once the backend has stopped.
        """

    @abc.abstractmethod
    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        """Stop once the work already submitted is done; idempotent.

        ``cancel_pending`` drops chunks that have not started: their sinks receive
        ``CancelledError`` for every item. ``wait`` blocks until every worker is gone.
        """

    @property
    def max_chunks_in_flight(self) -> int:
        """How many chunks of one run may be submitted and unfinished at once.

        Read again each time a run submits, so an engine whose size changes (a cluster
        that gains or loses workers) can widen or narrow the window.
        """
        return self.workers * 2 + 2

    def forget(self, sink: ResultSink) -> None:
        """``sink`` wants no more results (its run ended): drop what still runs for it.

        The default does nothing: chunks not started yet are refused by the sink's
        ``claim``. An engine that can cancel started work elsewhere (a cluster) does.
        """
        return

    def terminate(self) -> None:
        """Stop at once: drop pending chunks and stop workers without finishing their work.

        The default waits for running work, which is all a thread can do.
        """
        self.shutdown(wait=True, cancel_pending=True)

    def abandon(self) -> None:
        """Ctrl+C: ``terminate``, but wait for nothing, since nobody waits for results.

        An engine whose running work cannot be stopped (threads) leaves it to finish in
        the background, so that the program ends at once. The default terminates.
        """
        self.terminate()


class InitializerFailed(Exception):
    """A worker's initializer raised; ``error`` is what it raised.

    Raised between a worker and its backend only; users see ``broken_by_initializer``.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def broken_by_initializer(error: BaseException) -> BrokenPool:
    """The ``BrokenPool`` an initializer that raised ``error`` leaves, with it as the cause.

    One rule on every engine: the initializer has failed when it raises anything,
    ``SystemExit`` included, since a worker cannot serve without it. So does
    ``KeyboardInterrupt``, except where the initializer runs in the caller's own thread
    (the serial backend): there it is the user's Ctrl+C, so it propagates, the pool is
    not broken and the initializer runs again before the next task.
    """
    from workpool import errors  # BrokenPool is made on first use (errors.py)

    broken = errors.BrokenPool(f"the initializer failed: {error!r}")
    broken.__cause__ = error
    return broken


def initialize_here(spec: PoolSpec) -> None:
    """Run the pool's initializer in the caller's own thread (serial, and ``auto``'s
    measuring): what it raises becomes ``broken_by_initializer``'s ``BrokenPool``,
    except the user's Ctrl+C, which propagates as itself."""
    assert spec.initializer is not None
    try:
        spec.initializer(*spec.initargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise broken_by_initializer(exc) from exc


def deliver(batch: ResultBatch) -> None:
    """Hand ``batch`` to its sink, from one of an engine's own threads.

    A Future's done-callbacks run in here. ``concurrent.futures`` logs the exceptions
    they raise but passes ``SystemExit`` on (a callback that ends a service with
    ``sys.exit``, say), which would end the engine's thread, or break its pool, and
    cost other tasks their results. It is logged the same way instead. An ``Exception``
    escaping here is a fault of the engine's own and goes on up.
    """
    try:
        batch.chunk.sink.deliver(batch)
    except Exception:
        raise
    except BaseException as exc:
        import logging

        logging.getLogger("concurrent.futures").error(
            "exception calling callback of a workpool Future", exc_info=exc
        )


def fail_chunks(
    chunks: Iterable[Chunk], make_error: Callable[[], BaseException], *, in_engine_thread: bool
) -> None:
    """Every item of ``chunks`` fails, for good, each chunk with a ``make_error()`` of its
    own (the chunks may belong to many calls, and each call raises its own).

    Every chunk has its failure whatever a Future's done-callback raises meanwhile
    (``concurrent.futures`` passes a ``SystemExit`` on). In one of an engine's own
    threads each goes through ``deliver``, which logs it; in a caller's (``shutdown``,
    ``terminate``), it reaches the caller once the last chunk has its failure, as it does
    from the standard pools.
    """
    raised: BaseException | None = None
    for chunk in chunks:
        failed = ResultBatch.failed(chunk, make_error(), retryable=False)
        if in_engine_thread:
            deliver(failed)
            continue
        try:
            chunk.sink.deliver(failed)
        except BaseException as exc:
            if raised is None:
                raised = exc
    if raised is not None:
        raise raised


def call_items_timed(
    chunk: Chunk, runner: str
) -> tuple[list[Any], dict[int, BaseException], float]:
    """Run ``chunk``'s items one at a time in this thread, as ``call_items`` does; one
    that overran ``task_timeout`` fails with ``TaskTimeout``.

    Here a task cannot be interrupted, so the timeout is reported when the task
    returns, and its result is dropped; ``runner`` names what ran it, for the message.
    """
    assert chunk.task_timeout is not None
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    total = 0.0
    for position in range(len(chunk.items)):
        value, error, elapsed = call_items(
            chunk.fn, chunk.mode, chunk.items[position : position + 1]
        )
        total += elapsed
        if error:
            errors[position] = error[0]
        elif elapsed > chunk.task_timeout:
            errors[position] = TaskTimeout(
                f"{chunk.task_name(position)} took {elapsed:.3g}s, longer than "
                f"task_timeout={chunk.task_timeout:g}s; {runner} cannot interrupt "
                "a task, so this is reported when it returns and its result is dropped"
            )
        values.append(None if position in errors else value[0])
    return values, errors, total
