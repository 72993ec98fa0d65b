"""imap reads its input lazily, keeps a bounded number of tasks in flight, and stops cleanly."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

import workpool
from conftest import live_worker_processes, live_workpool_threads
from helpers import slow_square, square


class CountingInput:
    """An endless input that counts how many items were taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.taken = i + 1
            yield i


def test_imap_does_not_read_input_before_the_first_next(backend: str) -> None:
    source = CountingInput()
    results = workpool.imap(square, source, backend=backend)
    assert source.taken == 0
    assert next(results) == 0
    results.close()


@pytest.mark.parametrize("chunksize", [1, 10])
def test_endless_input_keeps_a_bounded_window(backend: str, chunksize: int) -> None:
    workers = 2
    source = CountingInput()
    results = workpool.imap(square, source, backend=backend, workers=workers, chunksize=chunksize)
    window_items = (2 * workers + 2) * chunksize  # the documented bound on items in flight
    for consumed, value in enumerate(itertools.islice(results, 5000), start=1):
        assert value == (consumed - 1) ** 2
        assert source.taken - consumed <= window_items
    results.close()


def test_endless_input_with_adaptive_chunks_stays_bounded(backend: str) -> None:
    source = CountingInput()
    results = workpool.imap(square, source, backend=backend, workers=2)
    taken_ahead = 0
    for consumed, _ in enumerate(itertools.islice(results, 300_000), start=1):
        taken_ahead = max(taken_ahead, source.taken - consumed)
    results.close()
    # Six chunks in flight at most, each at most 65,536 items, whatever the input's length.
    assert taken_ahead <= 6 * 65_536


def test_breaking_out_of_imap_leaves_no_work_running(backend: str) -> None:
    calls: list[int] = []

    def record(x: int) -> int:
        calls.append(x)
        return slow_square(x, 0.01)

    chosen = "thread" if backend == "process" else backend  # the recorder needs shared memory
    for value in workpool.imap(record, range(10_000), backend=chosen, workers=2):
        if value >= 25:
            break
    # CPython closes the abandoned generator here; the pool is gone with it.
    assert live_workpool_threads() == []
    count = len(calls)
    assert count < 200
    assert len(calls) == count  # nothing still running adds calls


def test_closing_a_process_imap_stops_its_workers() -> None:
    results = workpool.imap(
        slow_square, range(1000), itertools.repeat(0.05), backend="process", workers=2
    )
    assert next(results) == 0
    assert live_worker_processes() != []
    results.close()
    assert live_worker_processes() == []


def test_pool_imap_closed_early_drops_its_queued_tasks(backend: str) -> None:
    calls: list[int] = []

    def record(x: int) -> int:
        calls.append(x)
        return x

    chosen = "thread" if backend == "process" else backend
    with workpool.Pool(2, backend=chosen) as pool:
        results = pool.imap(record, range(100_000), chunksize=1)
        assert next(results) == 0
        results.close()
        # The pool stays usable and the abandoned run does not keep feeding it.
        assert pool.submit(square, 4).result(timeout=30) == 16
    assert len(calls) < 100
