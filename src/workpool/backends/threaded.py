"""One design for engines whose workers are threads of this process.

The thread and interpreter backends differ only in where a worker runs a chunk: in the
worker thread itself, or in a subinterpreter that thread owns. That difference is a
``WorkerContext``, one per worker thread; everything else lives here once, as CPython
3.14 builds ``InterpreterPoolExecutor`` on ``ThreadPoolExecutor``::

    caller thread              worker thread <prefix>-N              its WorkerContext
    submit(chunk)
      queue it, start a  ----> take it, claim it
      worker if none idle      (first chunk: start the context) ---> boot, run the initializer
                               context.run(chunk) ----------------> run every item
                               <----------------------------------- ResultBatch(es)
    sink.deliver  <----------- each batch

What lives here:

- **The queue.** One deque under one lock; workers wait on a condition for chunks.
- **Workers start on demand**, up to ``workers``: one starts when the queued chunks
  outnumber the idle workers, so a pool that only ever gets one task at a time has one
  worker, and a pool never used starts none. A worker starts its context with the first
  chunk it takes.
- **``max_tasks_per_worker``.** A chunk larger than what a worker has left is split and
  the rest queued again; a worker whose count runs out (or whose context can run nothing
  more) retires, and a successor starts if work is waiting.
- **``task_timeout``.** A thread cannot be stopped from outside, and neither can a
  subinterpreter. Timed tasks run one per chunk; the context starts the clock when the
  task starts; the watchdog (``deadlines.DeadlineWatch``) reports ``TaskTimeout`` for one
  past its deadline at once and takes its worker out of service (*abandons* it); a new
  worker takes the place if work is waiting. The abandoned worker finishes the task in
  the background, drops its result and exits.
- **The state** (stopping, stopped, broken) changes only in the ``_flag_*`` methods.
  A context that cannot start (its initializer failed) breaks the pool: every queued
  chunk fails with ``BrokenPool``, and ``submit`` raises it from then on.
"""

from __future__ import annotations

import abc
import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError

from workpool._options import PoolSpec
from workpool.backends import at_exit
from workpool.backends.base import (
    Backend,
    InitializerFailed,
    ShutDown,
    broken_by_initializer,
    deliver,
    fail_chunks,
)
from workpool.backends.deadlines import DeadlineWatch, TimedTask
from workpool.clock import now_ns
from workpool.daemons import DAEMONS
from workpool.errors import BrokenPool, add_note, one_for_each_call
from workpool.tasks import Chunk, ResultBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

    from workpool.timeline.recorder import Recorder

__all__ = ["TaskClock", "ThreadedBackend", "WorkerContext"]


class TaskClock:
    """The clock of a timed task: ``start`` as its call begins, ``stop`` as it returns.

    ``task_timeout`` bounds the call: sending its outcome back is the pool's time.
    ``start(started, ended)`` and ``stop(ended)`` take the task's own times, on
    ``time.monotonic``, from a context that hears of them late (a subinterpreter's
    replies wait for its worker thread to read them): ``started`` when the call began
    (default: now), ``ended`` a reading of when it returned (None while it runs) that
    the watchdog may take from its own thread, and ``stop``'s ``ended`` that time.
    """

    __slots__ = ("_start", "_stop")

    def __init__(
        self,
        start: Callable[[float | None, Callable[[], float | None] | None], object],
        stop: Callable[[float | None], object],
    ) -> None:
        self._start = start
        self._stop = stop

    def start(
        self, started: float | None = None, ended: Callable[[], float | None] | None = None
    ) -> None:
        self._start(started, ended)

    def stop(self, ended: float | None = None) -> None:
        self._stop(ended)


class WorkerContext(abc.ABC):
    """Where one worker thread runs its chunks. Used by that thread only.

    Life cycle: made when the worker starts; ``start`` with its first chunk; ``run``
    any number of times; ``close`` once when the worker ends, whether ``start``
    succeeded or not.
    """

    #: Names the worker in messages and in ``ResultBatch.worker``.
    label: str = "a worker"

    def start(self) -> None:  # noqa: B027 -- a context may need no start at all
        """Make ready to run chunks: boot what the worker runs in, run the initializer.

        Raises ``InitializerFailed`` when the initializer fails (the rule is
        ``base.broken_by_initializer``'s); any other exception means the worker cannot
        start. Either one breaks the pool.
        """

    @abc.abstractmethod
    def run(self, chunk: Chunk, clock: TaskClock | None) -> list[ResultBatch]:
        """Run ``chunk``; batches that together hold a value or an error for every item.

        A task's failure, or a failure to move it, is an error in a batch. ``clock`` is
        given for a chunk with a ``task_timeout`` (such a chunk holds one item): start it
        as the task starts, so that its deadline counts from then, and stop it as the
        call returns, if its outcome then still has a way to go (it is stopped when
        ``run`` returns in any case). An exception raised here fails the whole chunk
        and retires the worker.
        """

    @property
    def spent(self) -> bool:
        """True once this context can run nothing more: its worker then retires."""
        return False

    def close(self) -> None:  # noqa: B027 -- a context may hold nothing to release
        """Release what ``start`` made. Called once, by the worker thread."""


class ThreadedBackend(Backend):
    """A queue of chunks served by up to ``workers`` threads, each with its own context."""

    #: Worker threads are named ``<thread_prefix>-<n>``; the watchdog
    #: ``<thread_prefix>-watchdog``.
    thread_prefix: ClassVar[str]
    #: What cannot be stopped from outside, for timeout messages: "a thread".
    kind: ClassVar[str]

    def __init__(self, spec: PoolSpec, *, recorder: Recorder | None = None) -> None:
        super().__init__(spec, recorder=recorder)
        self._lock = threading.Lock()
        # Workers wait on this condition, the watchdog on another over the same lock:
        # a chunk put in the queue must wake a worker, never the watchdog in its place.
        self._chunk_ready = threading.Condition(self._lock)
        self._queue: deque[Chunk] = deque()
        self._threads: set[threading.Thread] = set()  # workers in service
        self._abandoned: set[threading.Thread] = set()  # finishing a task past its timeout
        self._idle = 0  # workers waiting for a chunk, or started and about to take one
        self._deadlines = DeadlineWatch(
            self._lock,
            name=f"{self.thread_prefix}-watchdog",
            kind=self.kind,
            abandon=self._abandon,
            finished=lambda: (
                self._stopped
                or (self._stopping and not self._deadlines.watching and not self._queue)
            ),
        )
        self._stopping = False  # shutting down: workers leave once the queue is empty
        self._stopped = False  # the last worker has left (or none was ever needed)
        self._broken: BrokenPool | None = None
        self._names = itertools.count()

    @abc.abstractmethod
    def _new_context(self, thread: threading.Thread) -> WorkerContext:
        """The context for the worker running in ``thread``. Called in that thread."""

    # --- the queue ------------------------------------------------------------------

    def submit(self, chunk: Chunk) -> None:
        with self._lock:
            if self._broken is not None:
                raise one_for_each_call(self._broken)
            # Once shut down, a pool takes only retries of the work it was given: new work
            # (a lazy imap reading on) would keep it from ever stopping.
            if self._stopped or (self._stopping and chunk.attempt == 0):
                raise ShutDown()
            if chunk.task_timeout is not None and len(chunk.items) > 1:
                # Each timed task runs alone, so a timeout abandons nothing else.
                pieces = [chunk.split(i, i + 1) for i in range(len(chunk.items))]
                self._queue.extend(pieces)
                self._grow()
                self._chunk_ready.notify(len(pieces))
            else:
                self._queue.append(chunk)
                self._grow()
                self._chunk_ready.notify()

    def _grow(self) -> None:
        """Start workers while queued chunks outnumber idle ones. Call with the lock held."""
        while len(self._queue) > self._idle and len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"{self.thread_prefix}-{next(self._names)}", daemon=DAEMONS
            )
            self._threads.add(thread)
            self._idle += 1  # it takes a chunk as soon as it runs
            try:
                thread.start()
            except BaseException:
                self._threads.discard(thread)
                self._idle -= 1
                raise

    def _next_chunk(self, *, fresh: bool) -> Chunk | None:
        """The next chunk to run, waiting for one; ``None`` once the pool is stopping.

        ``fresh``: the worker's first call; ``_grow`` counted it idle already.
        """
        with self._lock:
            if not fresh:
                self._idle += 1
            try:
                while not self._queue and not self._stopping:
                    self._chunk_ready.wait()
            finally:
                self._idle -= 1
            return self._queue.popleft() if self._queue else None

    def _put_back_beyond(self, chunk: Chunk, count: int) -> Chunk:
        """Queue again all but the first ``count`` items of ``chunk``; return those."""
        with self._lock:
            self._queue.appendleft(chunk.split(count, len(chunk.items)))
            self._grow()
            self._chunk_ready.notify()
        return chunk.split(0, count)

    # --- a worker -------------------------------------------------------------------

    def _work(self) -> None:
        me = threading.current_thread()
        context: WorkerContext | None = None
        tasks_left = self.spec.max_tasks_per_worker
        fresh = True
        try:
            context = self._new_context(me)
            started = False
            while (chunk := self._next_chunk(fresh=fresh)) is not None:
                fresh = False
                if not chunk.sink.claim(chunk):
                    del chunk  # cancelled: not ours to keep while idle
                    continue
                if not started:
                    began = now_ns()
                    try:
                        context.start()
                    except BaseException as exc:
                        self._break(self._start_failure(exc, context), chunk)
                        return
                    started = True
                    self.worker_started(context.label, began, now_ns())
                if tasks_left is not None and len(chunk.items) > tasks_left:
                    chunk = self._put_back_beyond(chunk, tasks_left)
                outcome = self._run(context, chunk, me)
                if outcome is None:
                    return  # abandoned after a timeout; another worker takes the place
                batches, sound = outcome
                while batches:
                    deliver(batches.pop(0))
                if tasks_left is not None:
                    tasks_left -= len(chunk.items)
                if not sound or context.spent or (tasks_left is not None and tasks_left <= 0):
                    return  # retire; a successor starts if work is waiting
                # Idle, this thread must not keep the task's function, items or results.
                del chunk, outcome
        finally:
            try:
                if context is not None:
                    context.close()
            finally:
                self._leave(me)

    def _run(
        self, context: WorkerContext, chunk: Chunk, me: threading.Thread
    ) -> tuple[list[ResultBatch], bool] | None:
        """Run ``chunk`` in ``context``: its batches, and whether the context is still sound.

        ``None`` when the watchdog abandoned this worker meanwhile; no batches when the
        task ended past its deadline. Either way the chunk has had its ``TaskTimeout``.
        """
        timed: TimedTask | None = None
        overran: TimedTask | None = None  # timed out: its results are dropped

        def start_clock(started: float | None, ended: Callable[[], float | None] | None) -> None:
            nonlocal timed
            timed = self._deadlines.watch(chunk, me, context.label, started, ended)

        def stop_clock(ended: float | None = None) -> None:
            nonlocal timed, overran
            if timed is not None:
                if self._deadlines.unwatch(timed, ended):
                    overran = timed
                timed = None

        clock = None if chunk.task_timeout is None else TaskClock(start_clock, stop_clock)
        sound = True
        try:
            batches = context.run(chunk, clock)
        except Exception as exc:  # a fault of the context, not of a task: retire it
            add_note(exc, f"workpool: {context.label} failed while running {chunk.task_name()}")
            failed = ResultBatch.failed(chunk, exc, retryable=True)
            failed.worker = context.label
            batches, sound = [failed], False
        stop_clock(None)
        if overran is not None:
            # Abandoned: another worker has taken this one's place. Otherwise the task
            # ended past its deadline and has had its TaskTimeout; this worker is free.
            return None if overran.abandoned else ([], sound)
        return batches, sound

    def _start_failure(self, exc: BaseException, context: WorkerContext) -> BrokenPool:
        if isinstance(exc, InitializerFailed):
            return broken_by_initializer(exc.error)
        broken = BrokenPool(f"{context.label} could not start: {exc!r}")
        broken.__cause__ = exc
        return broken

    def _leave(self, me: threading.Thread) -> None:
        """A worker ends: a successor if work is waiting; the last one out stops the pool."""
        stranded: list[Chunk] = []
        with self._lock:
            self._threads.discard(me)
            self._abandoned.discard(me)
            if not self._stopped:
                self._grow()
                if not self._threads and self._stopping:
                    stranded = self._flag_stopped()
            self._wake_all()
        error = self._broken or CancelledError("the pool stopped before this task started")
        fail_chunks(stranded, lambda: one_for_each_call(error), in_engine_thread=True)

    def abandoned_threads(self) -> list[threading.Thread]:
        """Worker threads still finishing a task that ran past its timeout."""
        with self._lock:
            return list(self._abandoned)

    def _abandon(self, overdue: list[TimedTask]) -> None:
        """Called by the watchdog, lock held: take the overrunning workers out of service."""
        for timed in overdue:
            self._threads.discard(timed.thread)
            self._abandoned.add(timed.thread)
        self._grow()

    @property
    def shutting_down(self) -> bool:
        """Whether ``shutdown`` was called: the workers finish the queue, then leave."""
        return self._stopping

    # --- the state ------------------------------------------------------------------

    def _wake_all(self) -> None:
        """Wake every waiting worker and the watchdog: the state changed. Lock held."""
        self._chunk_ready.notify_all()
        self._deadlines.wake()

    def _flag_stopping(self, *, cancel_pending: bool) -> list[Chunk]:
        """No more submissions; the chunks to cancel. Lock held."""
        self._stopping = True
        dropped: list[Chunk] = []
        if cancel_pending:
            dropped = list(self._queue)
            self._queue.clear()
        if not self._threads and not self._stopped:  # none was ever needed, or all left
            dropped += self._flag_stopped()
        self._wake_all()
        return dropped

    def _flag_stopped(self) -> list[Chunk]:
        """The last worker has left: the chunks no one will run now. Lock held."""
        self._stopped = True
        stranded = list(self._queue)
        self._queue.clear()
        return stranded

    def _flag_broken(self, error: BrokenPool) -> list[Chunk]:
        """The pool can run nothing more: the queued chunks, to fail. Lock held.

        The first error is the one the pool keeps; ``submit`` raises a copy of it.
        """
        if self._broken is None:
            self._broken = error
        self._stopping = True
        dropped = list(self._queue)
        self._queue.clear()
        self._wake_all()
        return dropped

    def _break(self, error: BrokenPool, claimed: Chunk) -> None:
        """A worker could not start: ``claimed`` and every queued chunk fail."""
        with self._lock:
            dropped = self._flag_broken(error)
            broken = self._broken or error
        fail_chunks([claimed, *dropped], lambda: one_for_each_call(broken), in_engine_thread=True)

    def _stop_without_waiting(self) -> None:
        """Cancel what is queued; running tasks finish in the background, unwaited for.

        Their workers, daemon threads, leave once their task returns, or end with the
        program. A subinterpreter must end before the program does: its engine waits.
        """
        if not DAEMONS:
            self.terminate()
            return
        with self._lock:
            dropped = self._flag_stopping(cancel_pending=True)
        fail_chunks(dropped, _not_started, in_engine_thread=False)

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        if sys.is_finalizing():
            # The interpreter is exiting (an imap left open is closed then): the
            # workers, daemon threads, run no more and may hold the lock. They end
            # with the process; waiting for them would never end.
            return
        with self._lock:
            dropped = self._flag_stopping(cancel_pending=cancel_pending)
        fail_chunks(dropped, _not_started, in_engine_thread=False)
        if not wait:
            at_exit.finish_before_exit(self)  # the program exits once the work is done
            return
        current = threading.current_thread()
        while True:  # a leaving worker may start a successor meanwhile
            with self._lock:
                # Alive: in a child forked from the process that runs the pool, its
                # threads are listed but did not come along (they never leave the list).
                threads = [t for t in self._threads if t is not current and t.is_alive()]
                watchdog = self._deadlines.thread
                if watchdog is not None and watchdog is not current and watchdog.is_alive():
                    threads.append(watchdog)
            if not threads:
                return
            for thread in threads:
                thread.join()


def _not_started() -> CancelledError:
    return CancelledError("the pool shut down before this task started")
