"""The interpreter backend: chunks run in subinterpreters of this process (Python 3.14+).

Each worker is a thread that owns one subinterpreter (``concurrent.interpreters``,
PEP 734). A subinterpreter has its own GIL and its own modules, so workers run Python
code in parallel even on a GIL build, isolated from each other and from the caller,
without a second process. Only bytes cross between interpreters. How one chunk travels::

    caller thread        worker thread workpool-interp-N     loop thread workpool-interp-N-loop
                         (in the main interpreter)           (inside subinterpreter N all its life)
    submit(chunk)
      queue it  -------> take it, claim it
                         pickle the items (the function
                         only the first time this
                         interpreter needs it)
                         CHUNK frame --------- pipe -------> unpickle, run every item,
                                                             pickle values and errors
                         <-------------------- pipe -------- BATCH frame
                         unpickle; rebuild each error as
    sink.deliver  <----- its own type (protocol.unpack_error)

``subinterpreter.py`` starts, feeds and closes one interpreter; ``interpreter_worker.py``
is the loop inside it and the frames on the pipes. Why a loop that stays inside the
interpreter, fed through a pipe, rather than ``Interpreter.call`` once per chunk: every
call enters the interpreter on a fresh thread state and leaves it again, which measured
about 0.2 ms per crossing on 3.14 and 1 ms on 3.14t, against 0.03 ms for a round trip
through a pipe; ``concurrent.interpreters.Queue.get`` polls every 10 ms, slower still.

Workers start on demand, up to ``workers``: a pool that only ever gets one task at a
time creates one interpreter. ``max_tasks_per_worker`` closes a worker's interpreter
after that many tasks; the next chunk it takes starts a fresh one.

``task_timeout``: like a thread, a subinterpreter cannot be stopped from outside. Timed
tasks run one per chunk; the loop says when a task starts, and a watchdog that finds one
past its deadline reports ``TaskTimeout`` at once and lets a new worker take the place.
The overrunning worker is *abandoned*: it finishes the task in the background, its result
is discarded, then its interpreter is closed and its threads exit. Unlike an abandoned
thread, it also holds up the end of the program: Python cannot finalize a subinterpreter
that a thread is still running in (see ``_finish_before_exit``), so at exit the program
waits for such a task, and says so on stderr if that takes more than a moment.

A task that ends the process (``os._exit``, a segfault) ends the program, as on threads.
"""

from __future__ import annotations

import atexit
import itertools
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures import CancelledError

from workpool._options import PoolSpec
from workpool.backends.base import Backend
from workpool.backends.deadlines import DeadlineWatch, TimedTask
from workpool.backends.subinterpreter import (
    InitializerFailed,
    ItemsNotRebuilt,
    LoopStopped,
    ResultsNotRebuilt,
    Subinterpreter,
)
from workpool.errors import BrokenPool, WorkerCrashed, add_note
from workpool.serialize import (
    FunctionRef,
    FunctionRegistry,
    dumps_data,
    dumps_function,
    unpicklable_reason,
)
from workpool.tasks import Chunk, ResultBatch

__all__ = ["InterpreterBackend"]

# Every backend still alive. A program that ends with a pool open (or shut down without
# waiting) must not leave a thread inside a subinterpreter when Python finalizes them:
# one waiting there blocks the exit for good, one that wakes up there crashes it
# (CPython gh-126016). Python runs this after joining non-daemon threads and before
# finalizing subinterpreters. It waits, as concurrent.futures does at exit, for the
# tasks still running, including those abandoned after a timeout.
_live_backends: weakref.WeakSet[InterpreterBackend] = weakref.WeakSet()
# How long the exit waits quietly before saying what it waits for.
_EXIT_NOTICE_SECONDS = 2.0


@atexit.register
def _finish_before_exit() -> None:
    backends = list(_live_backends)
    for backend in backends:
        backend.shutdown(wait=True, cancel_pending=True)
    abandoned = [thread for backend in backends for thread in backend.abandoned_threads()]
    deadline = time.monotonic() + _EXIT_NOTICE_SECONDS
    for thread in abandoned:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in abandoned):
        print(
            "workpool: waiting for tasks that ran past task_timeout to end in their "
            "subinterpreters; Python cannot exit while one is running",
            file=sys.stderr,
            flush=True,
        )
        for thread in abandoned:
            thread.join()


class InterpreterBackend(Backend):
    """A queue of chunks served by up to ``workers`` threads, each owning a subinterpreter."""

    name = "interpreter"
    target_chunk_seconds = 0.002

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__(spec)
        self._init_payload = b""
        if spec.initializer is not None:
            # Pickled now, so that one that cannot be pickled fails here, at once.
            try:
                self._init_payload = dumps_function((spec.initializer, spec.initargs))
            except Exception as exc:
                raise TypeError(
                    f"the initializer {spec.initializer!r} and its initargs cannot be sent to "
                    f"a subinterpreter: {exc}"
                ) from exc
        self._functions = FunctionRegistry()
        lock = threading.Lock()
        # The watchdog waits on its own condition over the same lock: a chunk put in
        # the queue must wake a worker, never the watchdog in its place.
        self._cond = threading.Condition(lock)  # workers wait here for chunks
        self._queue: deque[Chunk] = deque()
        self._threads: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()  # finishing a task past its timeout
        self._idle = 0  # threads waiting for a chunk
        self._deadlines = DeadlineWatch(
            lock,
            name="workpool-interp-watchdog",
            kind="a subinterpreter",
            abandon=self._abandon,
            finished=lambda: (
                self._stopped
                or (self._stopping and not self._deadlines.watching and not self._queue)
            ),
        )
        self._stopping = False
        self._stopped = False
        self._broken: BrokenPool | None = None
        self._names = itertools.count()
        _live_backends.add(self)

    # --- the queue ------------------------------------------------------------------

    def submit(self, chunk: Chunk) -> None:
        with self._cond:
            if self._broken is not None:
                raise self._broken
            if self._stopped:
                raise RuntimeError("cannot submit work to a pool that has shut down")
            if chunk.task_timeout is not None and len(chunk.items) > 1:
                # Each timed task runs alone, so a timeout abandons nothing else.
                self._queue.extend(chunk.split(i, i + 1) for i in range(len(chunk.items)))
            else:
                self._queue.append(chunk)
            self._grow()
            self._cond.notify()

    def _grow(self) -> None:
        """Start workers while queued chunks outnumber idle ones. Call with ``_cond`` held."""
        while len(self._queue) > self._idle and len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"workpool-interp-{next(self._names)}", daemon=True
            )
            self._threads.add(thread)
            self._idle += 1  # it will take a chunk as soon as it runs
            try:
                thread.start()
            except BaseException:
                self._threads.discard(thread)
                self._idle -= 1
                raise

    def _next_chunk(self, *, fresh: bool = False) -> Chunk | None:
        """The next chunk to run, waiting for one; ``None`` once the pool is stopping."""
        with self._cond:
            if not fresh:
                self._idle += 1
            try:
                while not self._queue and not self._stopping:
                    self._cond.wait()
            finally:
                self._idle -= 1
            return self._queue.popleft() if self._queue else None

    # --- a worker -------------------------------------------------------------------

    def _work(self) -> None:
        me = threading.current_thread()
        interp: Subinterpreter | None = None
        tasks_left: int | None = None
        fresh = True
        try:
            while (chunk := self._next_chunk(fresh=fresh)) is not None:
                fresh = False
                if not chunk.sink.claim(chunk):
                    del chunk  # cancelled: not ours to keep while idle
                    continue
                if interp is None:
                    try:
                        interp = Subinterpreter(me.name, self._init_payload)
                    except BaseException as exc:
                        self._break(exc, chunk)
                        return
                    tasks_left = self.spec.max_tasks_per_worker
                if tasks_left is not None and len(chunk.items) > tasks_left:
                    with self._cond:
                        self._queue.appendleft(chunk.split(tasks_left, len(chunk.items)))
                        self._grow()
                        self._cond.notify()
                    chunk = chunk.split(0, tasks_left)
                if not self._run(interp, chunk, me):
                    return  # abandoned after a timeout; a new worker took our place
                if tasks_left is not None:
                    tasks_left -= len(chunk.items)
                if interp.stopped or (tasks_left is not None and tasks_left <= 0):
                    interp.close()  # the next chunk starts a fresh interpreter
                    interp = None
                # Idle, this thread must not keep the task's function, items or results.
                del chunk
        finally:
            try:
                if interp is not None:
                    interp.close()
            finally:
                self._leave(me)

    def _run(self, interp: Subinterpreter, chunk: Chunk, me: threading.Thread) -> bool:
        """Run ``chunk`` in ``interp`` and deliver its results; False if it was abandoned."""
        try:
            fn_ref = self._functions.ref(chunk.fn)
        except Exception as exc:
            chunk.sink.deliver(_unsendable_function(chunk, exc, interp.label))
            return True
        try:
            payload = dumps_data(chunk.items)
        except Exception:
            return self._run_picklable_part(interp, chunk, fn_ref, me)
        try:
            batch = self._exchange(interp, chunk, fn_ref, payload, me)
        except ItemsNotRebuilt as exc:
            if len(chunk.items) == 1:
                batch = ResultBatch.failed(chunk, exc.error, retryable=False)
                batch.worker = interp.label
            else:  # find out which items cannot be rebuilt there: one at a time
                for i in range(len(chunk.items)):
                    if not self._run(interp, chunk.split(i, i + 1), me):
                        return False
                return True
        if batch is None:
            return False
        chunk.sink.deliver(batch)
        return True

    def _run_picklable_part(
        self, interp: Subinterpreter, chunk: Chunk, fn_ref: FunctionRef, me: threading.Thread
    ) -> bool:
        """Fail the items that cannot be pickled; run the others as usual."""
        start = 0
        for position, item in enumerate(chunk.items):
            reason = unpicklable_reason(item)
            if reason is None:
                continue
            if position > start and not self._run(interp, chunk.split(start, position), me):
                return False
            add_note(
                reason, "the task's arguments could not be pickled to send them to a subinterpreter"
            )
            piece = chunk.split(position, position + 1)
            batch = ResultBatch.failed(piece, reason, retryable=False)
            batch.worker = interp.label
            piece.sink.deliver(batch)
            start = position + 1
        if start < len(chunk.items):
            return self._run(interp, chunk.split(start, len(chunk.items)), me)
        return True

    def _exchange(
        self,
        interp: Subinterpreter,
        chunk: Chunk,
        fn_ref: FunctionRef,
        payload: bytes,
        me: threading.Thread,
    ) -> ResultBatch | None:
        """One round trip: the chunk in, its batch out; ``None`` if abandoned meanwhile.

        Raises ``ItemsNotRebuilt`` when the items cannot be unpickled in ``interp``.
        """
        timed: TimedTask | None = None

        def start_clock() -> None:
            nonlocal timed
            timed = self._deadlines.watch(chunk, me, interp.label)

        batch: ResultBatch
        try:
            values, errors, elapsed = interp.run(
                fn_ref,
                int(chunk.mode),
                payload,
                on_start=None if chunk.task_timeout is None else start_clock,
            )
        except LoopStopped as exc:
            error = WorkerCrashed(f"{chunk.task_name()} was running when {exc}")
            batch = ResultBatch.failed(chunk, error, retryable=True)
        except ResultsNotRebuilt as exc:
            add_note(
                exc.error,
                "the results came back from the subinterpreter but could not be unpickled",
            )
            batch = ResultBatch.failed(chunk, exc.error, retryable=False)
        else:
            batch = ResultBatch(chunk, values, errors, elapsed)
        batch.worker = interp.label
        if timed is not None and self._deadlines.unwatch(timed):
            return None  # the watchdog gave up on us; a new worker took our place
        return batch

    def _leave(self, me: threading.Thread) -> None:
        stranded: list[Chunk] = []
        with self._cond:
            self._threads.discard(me)
            self._abandoned.discard(me)
            if not self._threads and self._stopping and not self._stopped:  # the last one out
                self._stopped = True
                stranded = list(self._queue)
                self._queue.clear()
            self._wake_all()
        error = self._broken or CancelledError("the pool stopped before this task started")
        for chunk in stranded:
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))

    def abandoned_threads(self) -> list[threading.Thread]:
        """Worker threads still finishing a task that ran past its timeout."""
        with self._cond:
            return list(self._abandoned)

    # --- timeouts -------------------------------------------------------------------

    def _abandon(self, overdue: list[TimedTask]) -> None:
        """Called by the watchdog, lock held: new workers take the overrunning ones' place."""
        for timed in overdue:
            self._threads.discard(timed.thread)
            self._abandoned.add(timed.thread)
        self._grow()

    # --- stopping -------------------------------------------------------------------

    def _wake_all(self) -> None:
        """Wake every waiting worker and the watchdog. Call with the lock held."""
        self._cond.notify_all()
        self._deadlines.wake()

    def _break(self, exc: BaseException, chunk: Chunk) -> None:
        """A new interpreter could not start: the pool is broken; fail what is queued."""
        if isinstance(exc, InitializerFailed):
            error = BrokenPool(f"the initializer failed: {exc.error!r}")
            error.__cause__ = exc.error
        else:
            error = BrokenPool(f"could not start a subinterpreter: {exc!r}")
            error.__cause__ = exc
        with self._cond:
            if self._broken is None:
                self._broken = error
            self._stopping = True
            dropped = [chunk, *self._queue]
            self._queue.clear()
            self._wake_all()
        for piece in dropped:
            piece.sink.deliver(ResultBatch.failed(piece, self._broken, retryable=False))

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        with self._cond:
            self._stopping = True
            dropped: list[Chunk] = []
            if cancel_pending or (not self._threads and not self._stopped):
                dropped = list(self._queue)
                self._queue.clear()
            if not self._threads:  # no worker was ever needed, or all have left
                self._stopped = True
            self._wake_all()
        error = CancelledError("the pool shut down before this task started")
        for chunk in dropped:
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))
        if not wait:
            return
        current = threading.current_thread()
        while True:  # a worker may start a successor meanwhile (a timeout's replacement)
            with self._cond:
                threads = [t for t in self._threads if t is not current]
                watchdog = self._deadlines.thread
                if watchdog is not None and watchdog is not current:
                    threads.append(watchdog)
            if not threads:
                return
            for thread in threads:
                thread.join()


def _unsendable_function(chunk: Chunk, reason: BaseException, worker: str) -> ResultBatch:
    """Every task of ``chunk`` fails: its function cannot be pickled to cross over."""
    count = len(chunk.items)
    errors: dict[int, BaseException] = {}
    for position in range(count):
        error = TypeError(f"the function {chunk.fn!r} cannot be sent to a subinterpreter: {reason}")
        error.__cause__ = reason
        errors[position] = error
    return ResultBatch(chunk, [None] * count, errors, retryable=False, worker=worker)
