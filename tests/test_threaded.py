"""The worker-thread design the thread and interpreter backends share, with a toy context.

What a backend built on it (and its users) rely on beyond what the thread and
interpreter suites show: a context that fails while running a chunk costs that chunk
and that worker only; one that cannot start breaks the pool, failing what was queued.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

import workpool
from workpool._options import PoolSpec
from workpool.backends.threaded import ThreadedBackend, WorkerContext
from workpool.tasks import CallMode, Chunk, ResultBatch, call_items


class Collector:
    """A sink that keeps every outcome by input position."""

    def __init__(self, expected: int) -> None:
        self.outcomes: dict[int, object] = {}
        self.retryable: dict[int, bool] = {}
        self._expected = expected
        self._lock = threading.Lock()
        self.done = threading.Event()

    def claim(self, chunk: Chunk) -> bool:
        return True

    def deliver(self, batch: ResultBatch) -> None:
        with self._lock:
            for offset, value in enumerate(batch.values):
                position = batch.chunk.start + offset
                self.outcomes[position] = batch.errors.get(offset, value)
                self.retryable[position] = batch.retryable
            if len(self.outcomes) >= self._expected:
                self.done.set()


class ToyContext(WorkerContext):
    def __init__(self, backend: ToyBackend) -> None:
        self._backend = backend
        self.label = "a toy worker"

    def start(self) -> None:
        self._backend.starts += 1
        if self._backend.refuse_to_start:
            assert self._backend.gate.wait(30)  # until every chunk is queued
            raise OSError("no room for a worker")

    def run(self, chunk: Chunk, on_start: Callable[[], object] | None) -> list[ResultBatch]:
        if chunk.start == self._backend.fail_at:
            raise ConnectionError("the link went down")
        values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
        return [ResultBatch(chunk, values, errors, elapsed, worker=self.label)]


class ToyBackend(ThreadedBackend):
    name = "toy"
    target_chunk_seconds = 0.002
    thread_prefix = "workpool-toy"
    kind = "a toy worker"

    def __init__(self, *, fail_at: int = -1, refuse_to_start: bool = False) -> None:
        self.fail_at = fail_at
        self.refuse_to_start = refuse_to_start
        self.starts = 0
        self.gate = threading.Event()
        super().__init__(PoolSpec(backend="toy", workers=1))

    def _new_context(self, thread: threading.Thread) -> WorkerContext:
        return ToyContext(self)


def _chunks(sink: Collector, count: int) -> list[Chunk]:
    return [Chunk(sink, abs, CallMode.ONE, start, [-start]) for start in range(count)]


def test_a_context_failing_in_run_costs_that_chunk_and_that_worker_only() -> None:
    backend = ToyBackend(fail_at=2)
    sink = Collector(5)
    for chunk in _chunks(sink, 5):
        backend.submit(chunk)
    assert sink.done.wait(30)
    backend.shutdown(wait=True, cancel_pending=False)
    failure = sink.outcomes.pop(2)
    assert isinstance(failure, ConnectionError)
    assert sink.retryable[2]  # the task itself did nothing wrong: it may run again
    assert sink.outcomes == {0: 0, 1: 1, 3: 3, 4: 4}
    assert backend.starts == 2  # the failed worker retired; a fresh one took the rest


def test_a_context_that_cannot_start_breaks_the_pool() -> None:
    backend = ToyBackend(refuse_to_start=True)
    sink = Collector(3)
    for chunk in _chunks(sink, 3):
        backend.submit(chunk)
    backend.gate.set()
    assert sink.done.wait(30)
    assert all(isinstance(error, workpool.BrokenPool) for error in sink.outcomes.values())
    assert "could not start" in str(sink.outcomes[0])
    with pytest.raises(workpool.BrokenPool):
        backend.submit(_chunks(sink, 1)[0])
    backend.shutdown(wait=True, cancel_pending=False)


def test_a_broken_pool_fails_each_call_with_an_exception_of_its_own() -> None:
    # Two calls' chunks are queued when the pool breaks. One exception object raised in
    # both callers' threads would gather both tracebacks, and both calls' notes.
    backend = ToyBackend(refuse_to_start=True)
    first, second = Collector(2), Collector(2)
    for chunk in [*_chunks(first, 2), *_chunks(second, 2)]:
        backend.submit(chunk)
    backend.gate.set()
    assert first.done.wait(30)
    assert second.done.wait(30)
    errors = [first.outcomes[0], second.outcomes[0]]
    assert all(isinstance(error, workpool.BrokenPool) for error in errors)
    assert errors[0] is not errors[1]
    assert all("could not start" in str(error) for error in errors)
    assert all(isinstance(error.__cause__, OSError) for error in errors)
    raised = []
    for _ in range(2):  # and so does each submit refused from then on
        with pytest.raises(workpool.BrokenPool, match="could not start") as caught:
            backend.submit(_chunks(first, 1)[0])
        raised.append(caught.value)
    assert raised[0] is not raised[1]
    assert all(isinstance(error.__cause__, OSError) for error in raised)
    backend.shutdown(wait=True, cancel_pending=False)


LEFT_OPEN = """
import workpool
results = workpool.imap(abs, range(100), backend="thread", chunksize=4)
print(next(results), flush=True)
"""


def test_a_program_ending_with_a_thread_imap_left_open_exits() -> None:
    # The imap is closed while the interpreter shuts down, when its worker threads
    # (daemons) run no more: waiting for them there would never end.
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", LEFT_OPEN], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (0, "0\n"), done.stderr
