"""The thread backend: chunks run on a set of threads in this process.

Threads share memory, start in microseconds and need no pickling. They run Python
code in parallel only where the GIL is released (I/O, NumPy, C extensions) or absent
(free-threaded builds).

A thread cannot be stopped from outside. So ``task_timeout`` works like this: tasks
with a timeout run one per chunk, a watchdog thread notices a task past its deadline,
reports ``TaskTimeout`` for it at once and starts a fresh thread in its place; the
overrunning thread is *abandoned*: it finishes its task in the background, its result
is discarded, and it exits.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import CancelledError

from workpool._options import PoolSpec
from workpool.backends.base import Backend
from workpool.backends.deadlines import DeadlineWatch, TimedTask
from workpool.errors import BrokenPool
from workpool.tasks import Chunk, ResultBatch, call_items

__all__ = ["ThreadBackend"]


class ThreadBackend(Backend):
    """A queue of chunks served by ``workers`` threads (plus a watchdog for timeouts)."""

    name = "thread"
    target_chunk_seconds = 0.002

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__(spec)
        # One lock, two conditions: workers wait for chunks, the watchdog for deadlines.
        # With one condition, a submit's notify() could wake the watchdog instead of an
        # idle worker, and the chunk would wait for the next wake-up.
        self._lock = threading.Lock()
        self._chunk_ready = threading.Condition(self._lock)
        self._queue: deque[Chunk] = deque()
        self._threads: set[threading.Thread] = set()
        self._deadlines = DeadlineWatch(
            self._lock,
            name="workpool-thread-watchdog",
            kind="a thread",
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
        with self._lock:
            for _ in range(self.workers):
                self._spawn()

    def _spawn(self) -> None:
        """Start one more worker thread. Call with ``_lock`` held."""
        thread = threading.Thread(
            target=self._work, name=f"workpool-thread-{next(self._names)}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def submit(self, chunk: Chunk) -> None:
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self._stopped:
                raise RuntimeError("cannot submit work to a pool that has shut down")
            if chunk.task_timeout is not None and len(chunk.items) > 1:
                # Each timed task runs alone, so a timeout abandons nothing else.
                self._queue.extend(chunk.split(i, i + 1) for i in range(len(chunk.items)))
            else:
                self._queue.append(chunk)
            self._chunk_ready.notify()

    def _next_chunk(self) -> Chunk | None:
        with self._lock:
            while not self._queue and not self._stopping:
                self._chunk_ready.wait()
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
                    del chunk  # cancelled: not ours to keep while idle
                    continue
                if tasks_left is not None and len(chunk.items) > tasks_left:
                    with self._lock:
                        self._queue.appendleft(chunk.split(tasks_left, len(chunk.items)))
                        self._chunk_ready.notify()
                    chunk = chunk.split(0, tasks_left)
                if chunk.task_timeout is not None:
                    timed = self._deadlines.watch(chunk, me, worker)
                    values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
                    if self._deadlines.unwatch(timed):
                        return  # the watchdog gave up on us; a new thread took our place
                else:
                    values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
                chunk.sink.deliver(ResultBatch(chunk, values, errors, elapsed, worker=worker))
                if tasks_left is not None:
                    tasks_left -= len(chunk.items)
                    if tasks_left <= 0:  # retire: a fresh thread takes this one's place
                        with self._lock:
                            if not self._stopping or self._queue:
                                self._spawn()
                        return
                # Idle, this thread must not keep the task's function, items or results.
                del chunk, values, errors
        finally:
            self._leave(me)

    def _leave(self, me: threading.Thread) -> None:
        stranded: list[Chunk] = []
        with self._lock:
            self._threads.discard(me)
            if not self._threads and not self._stopped:  # the last one out
                self._stopped = True
                stranded = list(self._queue)
                self._queue.clear()
            self._wake_everyone()
        error = self._broken or CancelledError("the pool stopped before this task started")
        for chunk in stranded:
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))

    # --- timeouts -------------------------------------------------------------------

    def _wake_everyone(self) -> None:
        """Call with ``_lock`` held: the state changed for workers and watchdog alike."""
        self._chunk_ready.notify_all()
        self._deadlines.wake()

    def _abandon(self, overdue: list[TimedTask]) -> None:
        """Called by the watchdog, lock held: fresh threads replace the overrunning ones."""
        for timed in overdue:
            self._threads.discard(timed.thread)
            self._spawn()

    # --- stopping -------------------------------------------------------------------

    def _break(self, exc: BaseException) -> None:
        error = BrokenPool(f"the initializer failed: {exc!r}")
        error.__cause__ = exc
        with self._lock:
            if self._broken is None:
                self._broken = error
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            self._wake_everyone()
        for chunk in dropped:
            chunk.sink.deliver(ResultBatch.failed(chunk, self._broken, retryable=False))

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        with self._lock:
            self._stopping = True
            dropped: list[Chunk] = []
            if cancel_pending:
                dropped = list(self._queue)
                self._queue.clear()
            self._wake_everyone()
        error = CancelledError("the pool shut down before this task started")
        for chunk in dropped:
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))
        if not wait:
            return
        current = threading.current_thread()
        while True:  # retiring and replacing threads may start successors meanwhile
            with self._lock:
                threads = [t for t in self._threads if t is not current]
                watchdog = self._deadlines.thread
                if watchdog is not None and watchdog is not current:
                    threads.append(watchdog)
            if not threads:
                return
            for thread in threads:
                thread.join()
