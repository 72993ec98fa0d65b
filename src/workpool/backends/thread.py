"""The thread backend: chunks run on a fixed set of threads in this process.

Threads share memory, start in microseconds and need no pickling. They run Python
code in parallel only where the GIL is released (I/O, NumPy, C extensions) or absent
(free-threaded builds); ``workpool.advise`` measures which case a function is in.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import CancelledError

from workpool._options import PoolSpec
from workpool.backends.base import Backend
from workpool.errors import BrokenPool
from workpool.tasks import Chunk, ResultBatch, call_items

__all__ = ["ThreadBackend"]


class ThreadBackend(Backend):
    """A queue of chunks served by ``workers`` threads."""

    name = "thread"
    target_chunk_seconds = 0.002

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__(spec)
        self._cond = threading.Condition()
        self._queue: deque[Chunk] = deque()
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._stopped = False
        self._broken: BrokenPool | None = None
        self._names = itertools.count()
        with self._cond:
            for _ in range(self.workers):
                self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"workpool-thread-{next(self._names)}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def submit(self, chunk: Chunk) -> None:
        with self._cond:
            if self._broken is not None:
                raise self._broken
            if self._stopped:
                raise RuntimeError("cannot submit work to a pool that has shut down")
            self._queue.append(chunk)
            self._cond.notify()

    def _next_chunk(self) -> Chunk | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _work(self) -> None:
        spec = self.spec
        me = threading.current_thread()
        worker = f"thread {me.name}"
        try:
            if spec.initializer is not None:
                try:
                    spec.initializer(*spec.initargs)
                except BaseException as exc:
                    self._break(exc)
                    return
            tasks_left = spec.max_tasks_per_worker
            while (chunk := self._next_chunk()) is not None:
                if not chunk.sink.claim(chunk):
                    continue
                if tasks_left is not None and len(chunk.items) > tasks_left:
                    with self._cond:
                        self._queue.appendleft(chunk.split(tasks_left, len(chunk.items)))
                        self._cond.notify()
                    chunk = chunk.split(0, tasks_left)
                values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
                chunk.sink.deliver(ResultBatch(chunk, values, errors, elapsed, worker=worker))
                if tasks_left is not None:
                    tasks_left -= len(chunk.items)
                    if tasks_left <= 0:  # retire: a fresh thread takes this one's place
                        with self._cond:
                            if not self._stopping or self._queue:
                                self._spawn()
                        return
        finally:
            stranded: list[Chunk] = []
            with self._cond:
                self._threads.discard(me)
                if not self._threads:  # the last one out: nothing may stay queued
                    self._stopped = True
                    stranded = list(self._queue)
                    self._queue.clear()
                self._cond.notify_all()
            error = self._broken or CancelledError("the pool stopped before this task started")
            for chunk in stranded:
                chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))

    def _break(self, exc: BaseException) -> None:
        error = BrokenPool(f"the initializer failed: {exc!r}")
        error.__cause__ = exc
        with self._cond:
            if self._broken is None:
                self._broken = error
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for chunk in dropped:
            chunk.sink.deliver(ResultBatch.failed(chunk, self._broken, retryable=False))

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        with self._cond:
            self._stopping = True
            dropped: list[Chunk] = []
            if cancel_pending:
                dropped = list(self._queue)
                self._queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        error = CancelledError("the pool shut down before this task started")
        for chunk in dropped:
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()
            with self._cond:  # retired threads may have spawned successors meanwhile
                threads = [t for t in self._threads if t is not current]
            for thread in threads:
                thread.join()
