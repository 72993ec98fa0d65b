"""The serial backend: every chunk runs at once, in the caller's thread.

Nothing is pickled and nothing runs concurrently, so a debugger, a profiler and
print() all behave as in a plain loop; it is also the right engine for work too small
to be worth shipping anywhere.
"""

from __future__ import annotations

import collections
import threading

from workpool import errors
from workpool._options import PoolSpec
from workpool.backends.base import (
    Backend,
    ShutDown,
    call_items_timed,
    fail_chunks,
    initialize_here,
)
from workpool.chunking import PROCESS_CHUNK_SECONDS
from workpool.clock import now_ns
from workpool.tasks import Chunk, ResultBatch, call_items

TYPE_CHECKING = False
if TYPE_CHECKING:
    from workpool.errors import BrokenPool  # made on first use (errors.py)
    from workpool.timeline.recorder import Recorder

__all__ = ["SerialBackend"]

# How messages and timelines name where the tasks ran.
WORKER = "the calling thread"


class SerialBackend(Backend):
    """Runs each chunk inside ``submit``; the initializer runs before the first one."""

    name = "serial"
    target_chunk_seconds = PROCESS_CHUNK_SECONDS

    def __init__(self, spec: PoolSpec, *, recorder: Recorder | None = None) -> None:
        super().__init__(spec, recorder=recorder)
        self.workers = 1
        self._initialized = spec.initializer is None
        # Threads that submit at once run their tasks at once, each in its own thread;
        # the initializer still runs once, and the others wait for it to end. Reentrant:
        # an initializer that submits to its own pool fails as before, not in a deadlock.
        self._initializing = threading.RLock()
        self._broken: BrokenPool | None = None
        self._stopped = False
        # What this thread is delivering (``sink``) and the retries it asked for.
        self._here = threading.local()

    def submit(self, chunk: Chunk) -> None:
        if self._stopped:
            raise ShutDown()
        if self._broken is not None:
            raise self._broken
        if not self._initialized:
            self._initialize()
        here = self._here
        if chunk.attempt and chunk.sink is getattr(here, "sink", None):
            # A retry, asked for while this thread delivers its failed attempt: it runs
            # once that delivery returns (``_run``), not inside it, or a task with many
            # retries would nest a delivery per attempt and run out of stack.
            here.retries.append(chunk)
            return
        self._run(chunk)

    def _run(self, chunk: Chunk) -> None:
        """Run ``chunk`` and deliver it, then the retries its delivery asked for."""
        here = self._here
        outer = (getattr(here, "sink", None), getattr(here, "retries", None))
        retries: collections.deque[Chunk] = collections.deque()
        here.sink, here.retries = chunk.sink, retries
        try:
            self._run_one(chunk)
            while retries:
                self._run_one(retries.popleft())
        finally:
            here.sink, here.retries = outer
            if retries:  # a delivery raised (Ctrl+C, a callback's SystemExit)
                fail_chunks(retries, _retry_not_run, in_engine_thread=False)

    @staticmethod
    def _run_one(chunk: Chunk) -> None:
        if not chunk.sink.claim(chunk):
            return
        traced = chunk.trace is not None
        began = now_ns() if traced else 0
        if chunk.task_timeout is None:
            values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
        else:
            values, errors, elapsed = call_items_timed(chunk, "the serial backend")
        batch = ResultBatch(chunk, values, errors, elapsed, worker=WORKER)
        if traced:  # nothing to receive or return here, only running
            ended = now_ns()
            batch.times = (began, began, ended, ended)
        chunk.sink.deliver(batch)

    def _initialize(self) -> None:
        with self._initializing:
            if self._broken is not None:  # another thread's run of it failed meanwhile
                raise self._broken
            if self._initialized:  # another thread ran it meanwhile
                return
            try:
                initialize_here(self.spec)
            except errors.BrokenPool as broken:  # not the user's Ctrl+C, which propagates
                self._broken = broken
                raise
            self._initialized = True

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        self._stopped = True


def _retry_not_run() -> BaseException:
    from concurrent.futures import CancelledError  # only on this rare path: it imports logging

    return CancelledError("the delivery before this task's retry raised: the retry did not run")
