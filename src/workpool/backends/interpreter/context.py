"""A worker thread's context on the interpreter backend: its chunks go through a subinterpreter.

Only bytes cross into a subinterpreter. For each chunk the context pickles the items
(the function only the first time that interpreter needs it), has its
``InterpreterHandle`` run them there, and turns the reply into result batches. What
cannot cross fails only its own tasks, saying why:

- a function that cannot be pickled fails every task of the chunk;
- an item that cannot be pickled fails alone; the others run;
- memory from ``share()`` crosses as its descriptor and is mapped there, not copied;
- items that cannot be rebuilt inside are sent again one at a time to find which;
- results that cannot be rebuilt here run again one at a time, so that only the task
  whose result cannot come back fails (as on the process backend).
"""

from __future__ import annotations

import threading

from workpool.backends.base import InitializerFailed
from workpool.backends.interpreter.handle import (
    InterpreterHandle,
    ItemsNotRebuilt,
    LoopStopped,
    ResultsNotRebuilt,
)
from workpool.backends.threaded import TaskClock, WorkerContext
from workpool.clock import now_ns
from workpool.errors import WorkerCrashed, add_note
from workpool.segments import SameProcessFrame, sending
from workpool.serialize import (
    FunctionRef,
    FunctionRegistry,
    cannot_send,
    dumps_items,
    picklable_runs,
)
from workpool.tasks import Chunk, ResultBatch

__all__ = ["InterpreterContext"]


class InterpreterContext(WorkerContext):
    """One worker's subinterpreter, created by ``start`` and closed by ``close``.

    ``functions`` is the backend's registry, shared by its workers, so that a function
    is pickled once per pool; ``init_payload`` the pickled ``(initializer, initargs)``.
    """

    def __init__(
        self, thread: threading.Thread, functions: FunctionRegistry, init_payload: bytes
    ) -> None:
        self._thread_name = thread.name
        self._functions = functions
        self._init_payload = init_payload
        self._handle: InterpreterHandle | None = None
        self.label = "a new subinterpreter"

    def start(self) -> None:
        try:
            self._handle = InterpreterHandle(self._thread_name, self._init_payload)
        except InitializerFailed as exc:
            _explain_if_not_loadable(exc.error, "the initializer")
            raise
        self.label = self._handle.label

    @property
    def spent(self) -> bool:
        return self._handle is not None and self._handle.stopped

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def run(self, chunk: Chunk, clock: TaskClock | None) -> list[ResultBatch]:
        batches: list[ResultBatch] = []
        self._run(chunk, clock, batches)
        return batches

    def _run(self, chunk: Chunk, clock: TaskClock | None, batches: list[ResultBatch]) -> None:
        """Run ``chunk``, adding its batches to ``batches``."""
        began = now_ns() if chunk.trace is not None else 0
        try:
            fn_ref = self._functions.ref(chunk.fn, chunk.sink)
        except Exception as exc:
            batches.append(self._unsendable_function(chunk, exc))
            return
        try:
            payload = _dumps_in_process(chunk.items)
        except Exception:
            self._run_picklable_part(chunk, clock, batches)
            return
        try:
            batches.append(self._exchange(chunk, fn_ref, payload, clock, began))
        except ItemsNotRebuilt as exc:
            if len(chunk.items) == 1:
                _explain_if_not_loadable(exc.error)
                batches.append(self._failed(chunk, exc.error))
            else:  # find out which items cannot be rebuilt there: one at a time
                self._run_one_at_a_time(chunk, clock, batches)
        except ResultsNotRebuilt as exc:
            if len(chunk.items) == 1:
                add_note(
                    exc.error,
                    "the results came back from the subinterpreter but could not be unpickled",
                )
                batches.append(self._failed(chunk, exc.error))
            else:  # one result spoils the whole reply's pickle: find out whose
                self._run_one_at_a_time(chunk, clock, batches)

    def _run_one_at_a_time(
        self, chunk: Chunk, clock: TaskClock | None, batches: list[ResultBatch]
    ) -> None:
        for i in range(len(chunk.items)):
            self._run(chunk.split(i, i + 1), clock, batches)

    def _run_picklable_part(
        self, chunk: Chunk, clock: TaskClock | None, batches: list[ResultBatch]
    ) -> None:
        """Fail the items that cannot be pickled; run the others as usual."""
        for begin, end, reason in picklable_runs(chunk.items):
            piece = chunk.split(begin, end)
            if reason is None:
                self._run(piece, clock, batches)
                continue
            add_note(
                reason, "the task's arguments could not be pickled to send them to a subinterpreter"
            )
            batches.append(self._failed(piece, reason, unsent=True))

    def _exchange(
        self,
        chunk: Chunk,
        fn_ref: FunctionRef,
        payload: bytes,
        clock: TaskClock | None,
        began: int = 0,
    ) -> ResultBatch:
        """One round trip: the chunk in, its batch out.

        ``began``, for a traced chunk, is when pickling its items began: the batch then
        gets its times, receiving being the pickling here (the unpickling there counts
        as running: the interpreter reports the two together).
        Raises ``ItemsNotRebuilt`` when the items cannot be unpickled in the interpreter,
        ``ResultsNotRebuilt`` when its results cannot be unpickled here.
        """
        assert self._handle is not None
        batch: ResultBatch
        sent = now_ns() if began else 0
        try:
            values, errors, elapsed = self._handle.run(
                fn_ref, int(chunk.mode), payload, clock=clock
            )
        except LoopStopped as exc:
            error = WorkerCrashed(f"{chunk.task_name()} was running when {exc}")
            if chunk.trace is not None:
                chunk.trace.fault(
                    chunk.trace.worker_track(self.label),
                    "crashed",
                    (chunk.start, len(chunk.items), chunk.attempt),
                    began,
                    now_ns(),
                    chunk.start if len(chunk.items) == 1 else None,
                    str(error),
                )
            batch = ResultBatch.failed(chunk, error, retryable=True)
        else:
            for raised in errors.values():
                _explain_if_not_loadable(raised)
            batch = ResultBatch(chunk, values, errors, elapsed)
            if began:
                replied = now_ns()
                batch.times = (began, sent, min(sent + int(elapsed * 1e9), replied), replied)
        batch.worker = self.label
        return batch

    def _failed(self, chunk: Chunk, error: BaseException, *, unsent: bool = False) -> ResultBatch:
        """Every task of ``chunk`` fails with ``error``, for good: trying again cannot help."""
        batch = ResultBatch.failed(chunk, error, retryable=False, unsent=unsent)
        batch.worker = self.label
        return batch

    def _unsendable_function(self, chunk: Chunk, reason: BaseException) -> ResultBatch:
        """Every task of ``chunk`` fails: its function cannot be pickled to cross over."""
        count = len(chunk.items)
        errors: dict[int, BaseException] = {}
        for position in range(count):
            error = cannot_send(chunk.fn, "a subinterpreter", reason)
            error.__cause__ = reason
            errors[position] = error
        return ResultBatch(chunk, [None] * count, errors, retryable=False, worker=self.label)


# What CPython says of an extension module that refuses a subinterpreter (NumPy, for one);
# NumPy wraps it in an ImportError of its own that blames the installation.
_NOT_LOADABLE = "does not support loading in subinterpreters"


def _dumps_in_process(items: object) -> bytes:
    """Pickle a chunk's items for a subinterpreter: shared memory among them travels as
    its descriptor, to be mapped there (``segments.SameProcessFrame``), not as a copy."""
    previous = sending.frame
    sending.frame = _SAME_PROCESS
    try:
        return dumps_items(items)
    finally:
        sending.frame = previous


_SAME_PROCESS = SameProcessFrame()


def _explain_if_not_loadable(error: BaseException, needed_by: str = "this task") -> None:
    """Add a note saying what to do to an ImportError of a module no subinterpreter loads."""
    if isinstance(error, ImportError) and _NOT_LOADABLE in str(error):
        add_note(
            error,
            f"workpool: a module {needed_by} needs cannot be loaded in a subinterpreter "
            "(NumPy is one); run it with backend='process' or backend='thread'",
        )
