"""What each engine adds to a traced call's timeline, seen from the engine's interface.

A chunk whose ``trace`` is set comes back with its worker's times (receiving, running,
returning) on the caller's clock; an engine started for a traced call reports its
workers' start-up; a worker's crash or timeout is put on the timeline by the engine
that saw it, since only the engine knows which chunk the worker was on and since when.
A chunk without ``trace`` costs nothing of this: its batch has no times.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import BACKENDS
from faults import crash_on, hang_on
from helpers import square
from workpool._options import PoolSpec
from workpool.backends import create_backend
from workpool.clock import now_ns
from workpool.errors import TaskTimeout, WorkerCrashed
from workpool.tasks import CallMode, Chunk, ResultBatch
from workpool.timeline import Recorder


class Batches:
    """A sink that keeps every batch, and says when every position has an outcome."""

    def __init__(self, expected: int) -> None:
        self.batches: list[ResultBatch] = []
        self.positions: set[int] = set()
        self._expected = expected
        self._lock = threading.Lock()
        self.done = threading.Event()

    def claim(self, chunk: Chunk) -> bool:
        return True

    def deliver(self, batch: ResultBatch) -> None:
        with self._lock:
            self.batches.append(batch)
            start = batch.chunk.start
            self.positions.update(range(start, start + len(batch.chunk.items)))
            if len(self.positions) >= self._expected:
                self.done.set()


def run_chunks(
    backend_name: str,
    fn: object,
    chunks: list[tuple[int, int]],
    recorder: Recorder | None,
    *,
    task_timeout: float | None = None,
    engine_recorder: Recorder | None = None,
) -> Batches:
    """Submit chunks of ``range`` items, (start, count) each; wait for every outcome."""
    total = sum(count for _, count in chunks)
    sink = Batches(total)
    backend = create_backend(PoolSpec(backend=backend_name, workers=2), recorder=engine_recorder)
    try:
        for start, count in chunks:
            items = list(range(start, start + count))
            backend.submit(
                Chunk(sink, fn, CallMode.ONE, start, items, task_timeout, trace=recorder)  # type: ignore[arg-type]
            )
        assert sink.done.wait(60)
    finally:
        backend.shutdown(wait=True, cancel_pending=True)
    return sink


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_traced_chunk_comes_back_with_its_times_on_the_callers_clock(
    backend: str, tmp_path: Path
) -> None:
    recorder = Recorder(tmp_path / "t.json")
    before = now_ns()
    sink = run_chunks(backend, square, [(0, 50), (50, 50), (100, 50)], recorder)
    after = now_ns()
    assert len(sink.batches) == 3
    for batch in sink.batches:
        assert batch.times is not None
        received, run, ran, returned = batch.times
        assert before <= received <= run <= ran <= returned <= after
        assert batch.worker


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_untraced_chunk_has_no_times(backend: str) -> None:
    sink = run_chunks(backend, square, [(0, 50)], None)
    assert [batch.times for batch in sink.batches] == [None]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "serial"])
def test_an_engine_for_a_traced_call_reports_its_workers_start(
    backend: str, tmp_path: Path
) -> None:
    recorder = Recorder(tmp_path / "t.json")
    sink = run_chunks(
        backend, square, [(i * 10, 10) for i in range(8)], recorder, engine_recorder=recorder
    )
    starts = [span for span in recorder.spans if span[1] == "worker start"]
    assert starts
    started = {recorder.tracks[span[0]].name for span in starts}
    assert started <= {batch.worker for batch in sink.batches} | started
    for _, _, category, begin, end, _ in starts:
        assert category == "startup" and begin <= end


def test_the_process_engine_reports_a_crash_with_its_chunk_and_position(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "t.json")
    sink = run_chunks("process", crash_on(7), [(0, 4), (4, 4), (8, 4)], recorder)
    failed = [b for b in sink.batches if 7 in b.errors or b.chunk.start == 7]
    assert any(isinstance(e, WorkerCrashed) for b in failed for e in b.errors.values())
    crashes = [i for i in recorder.instants if i[1] == "crash"]
    assert any(i[4]["position"] == 7 and "exited with code 7" in i[4]["reason"] for i in crashes)
    crashed = [c for c in recorder.chunks if c[4] == "crashed"]
    assert crashed and all(c[1] <= 7 < c[1] + c[2] for c in crashed)
    worker_names = {recorder.tracks[c[0]].name for c in crashed}
    assert all(name.startswith("worker process") for name in worker_names)


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_an_engine_reports_a_timeout_with_its_position(backend: str, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "t.json")
    sink = run_chunks(backend, hang_on(3, 2.0), [(0, 6)], recorder, task_timeout=0.3)
    assert any(isinstance(e, TaskTimeout) for b in sink.batches for e in b.errors.values())
    (timeout,) = [i for i in recorder.instants if i[1] == "timeout"]
    assert timeout[4]["position"] == 3
    assert "task_timeout=0.3" in timeout[4]["reason"]
    (record,) = [c for c in recorder.chunks if c[4] == "timeout"]
    # The chunk its worker was on: the process engine runs a chunk's timed tasks in turn.
    assert record[1] <= 3 < record[1] + record[2] and record[6] <= record[9]
