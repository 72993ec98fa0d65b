"""The thread backend: chunks run on threads of this process.

Threads share memory, start in microseconds and need no pickling. They run Python
code in parallel only where the GIL is released (I/O, NumPy, C extensions) or absent
(free-threaded builds).

The queue, the workers' life cycle, shutdown and ``task_timeout`` are the shared
worker-thread design's (``threaded.py``); a thread's context runs each chunk right
there, in the worker thread. A thread cannot be stopped from outside, so a task past its
``task_timeout`` gets its ``TaskTimeout`` at once while its thread finishes it in the
background.
"""

from __future__ import annotations

import os
import threading

from workpool._options import PoolSpec
from workpool.backends.base import InitializerFailed
from workpool.backends.threaded import TaskClock, ThreadedBackend, WorkerContext
from workpool.chunking import THREAD_CHUNK_SECONDS
from workpool.clock import now_ns
from workpool.task_forks import end_if_forked
from workpool.tasks import Chunk, ResultBatch, call_items

__all__ = ["ThreadBackend"]


class ThreadBackend(ThreadedBackend):
    """A queue of chunks served by up to ``workers`` threads (plus a watchdog for timeouts)."""

    name = "thread"
    target_chunk_seconds = THREAD_CHUNK_SECONDS
    thread_prefix = "workpool-thread"
    kind = "a thread"

    def _new_context(self, thread: threading.Thread) -> WorkerContext:
        return ThreadContext(self.spec, thread)

    def abandon(self) -> None:
        self._stop_without_waiting()


class ThreadContext(WorkerContext):
    """Runs chunks inline, in the worker thread; the initializer runs there first.

    A process that a task (or the initializer) forked ends when it returns here
    (``task_forks``): in it, this thread would wait forever for work.
    """

    def __init__(self, spec: PoolSpec, thread: threading.Thread) -> None:
        self._spec = spec
        self._pid = os.getpid()
        self.label = f"thread {thread.name}"

    def start(self) -> None:
        if self._spec.initializer is not None:
            try:
                self._spec.initializer(*self._spec.initargs)
            except BaseException as exc:  # no real Ctrl+C ever lands in a worker thread
                end_if_forked(self._pid, [exc])
                raise InitializerFailed(exc) from exc
            end_if_forked(self._pid, [])

    def run(self, chunk: Chunk, clock: TaskClock | None) -> list[ResultBatch]:
        if clock is not None:  # stopped as this returns, by the caller
            clock.start()
        # A KeyboardInterrupt raised here comes from the task, not from the user's
        # Ctrl+C (which only the main thread receives): it is the task's failure.
        traced = chunk.trace is not None
        began = now_ns() if traced else 0
        values, errors, elapsed = call_items(
            chunk.fn, chunk.mode, chunk.items, catch_interrupt=True
        )
        end_if_forked(self._pid, errors.values())
        batch = ResultBatch(chunk, values, errors, elapsed, worker=self.label)
        if traced:  # nothing to receive or return in a thread, only running
            ended = now_ns()
            batch.times = (began, began, ended, ended)
        return [batch]
