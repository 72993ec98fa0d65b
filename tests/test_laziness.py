"""imap reads its input lazily, keeps a bounded number of tasks in flight, and stops cleanly."""

from __future__ import annotations

import functools
import gc
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import workpool
from conftest import BACKENDS, live_worker_processes, live_workpool_threads, wait_for
from helpers import CountingInput, slow_square, square, wait_at_zero
from workpool.chunking import MAX_CHUNK_ITEMS
from workpool.run import HELD_WINDOWS


def window(workers: int, chunksize: int) -> int:
    """The documented bound on items read ahead of what was consumed (ordered results)."""
    return HELD_WINDOWS * (2 * workers + 2) * chunksize


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
    for consumed, value in enumerate(itertools.islice(results, 5000), start=1):
        assert value == (consumed - 1) ** 2
        assert source.taken - consumed <= window(workers, chunksize)
    results.close()


@pytest.mark.parametrize("parallel", [b for b in BACKENDS if b != "serial"])
def test_a_slow_item_does_not_hold_up_the_others_in_ordered_imap(
    parallel: str, tmp_path: Path
) -> None:
    """Results wait for item 0 to keep their order, but the other workers go on working."""
    marks = tmp_path
    results = workpool.imap(
        functools.partial(wait_at_zero, directory=str(marks)),
        range(10_000),
        backend=parallel,
        workers=2,
        chunksize=1,
    )
    waiting = threading.Thread(target=lambda: next(results))
    waiting.start()
    ahead = 2 * (2 * 2 + 2)  # twice the window of chunks in flight
    # Before, the finished items behind item 0 filled the window and the pool stood idle.
    went_on = wait_for(lambda: len(list(marks.iterdir())) >= ahead, timeout=30)
    (marks / "release").touch()
    waiting.join(timeout=30)
    assert went_on, f"only {len(list(marks.iterdir()))} items ran while item 0 was slow"
    assert list(itertools.islice(results, 20)) == list(range(1, 21))
    results.close()


def test_endless_input_with_adaptive_chunks_stays_bounded(backend: str) -> None:
    source = CountingInput()
    results = workpool.imap(square, source, backend=backend, workers=2)
    taken_ahead = 0
    for consumed, _ in enumerate(itertools.islice(results, 300_000), start=1):
        taken_ahead = max(taken_ahead, source.taken - consumed)
    results.close()
    # Six chunks in flight at most, four windows read ahead, each chunk at most
    # MAX_CHUNK_ITEMS, whatever the input's length.
    assert taken_ahead <= HELD_WINDOWS * 6 * MAX_CHUNK_ITEMS


class TricklingInput(CountingInput):
    """A stream that gives an item every ``gap`` seconds (a socket, a queue, a log)."""

    def __init__(self, gap: float) -> None:
        super().__init__()
        self.gap = gap

    def __iter__(self) -> Iterator[int]:
        for i in super().__iter__():
            time.sleep(self.gap)  # the stream's own pace: the input is slow, not the tasks
            yield i


@pytest.mark.parametrize("ordered", [True, False])
def test_results_of_a_slow_input_come_as_they_are_ready(backend: str, ordered: bool) -> None:
    """Each result is handed over about when it is ready, not a chunk or a window of the
    input's waits later: the next items are not waited for while results are waiting."""
    source = TricklingInput(gap=0.05)
    with workpool.Pool(workers=2, backend=backend) as pool:
        # Started and warm first: items read while workers start (a subinterpreter takes
        # a quarter of a second on a busy machine) are read ahead rightly, not held back.
        assert list(pool.map(square, range(4), chunksize=1)) == [0, 1, 4, 9]
        results = pool.imap(square, source, ordered=ordered)
        read_on = []  # how many more items had been read when each result came
        for consumed, _ in enumerate(itertools.islice(results, 20), start=1):
            read_on.append(source.taken - consumed)
        results.close()
    # Before, chunks grew to hold many items (each waited for) and the window of them
    # in flight was filled before a result was handed over: results came up to hundreds
    # of items (tens of seconds) after their own.
    assert max(read_on) <= 4, read_on  # one item being read, and room for a busy machine


def test_breaking_out_of_imap_leaves_no_work_running(backend: str) -> None:
    # The input is read in the caller, so it counts the tasks started on any backend.
    source = CountingInput()
    consumed = 0
    for value in workpool.imap(
        functools.partial(slow_square, delay=0.01), source, backend=backend, workers=2, chunksize=1
    ):
        consumed += 1
        if value >= 25:
            break
    # CPython closes the abandoned generator here; the pool is gone with it, so nothing
    # can run any more, and the input was read no further than the window.
    assert live_workpool_threads() == []
    assert live_worker_processes() == []
    assert consumed == 6
    assert source.taken <= consumed + window(2, 1)


def test_closing_a_process_imap_stops_its_workers() -> None:
    results = workpool.imap(
        slow_square, range(1000), itertools.repeat(0.05), backend="process", workers=2
    )
    assert next(results) == 0
    assert live_worker_processes() != []
    results.close()
    assert live_worker_processes() == []


def _two_imaps_left_unfinished(backend: str) -> None:
    # The first is dropped mid-expression, the second when this function returns.
    assert list(itertools.islice(workpool.imap(square, itertools.count(), backend=backend), 3))
    results = workpool.imap(square, itertools.count(), backend=backend)
    assert list(itertools.islice(results, 3)) == [0, 1, 4]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_an_imap_dropped_unfinished_ends_its_pool_when_its_last_reference_goes(
    backend: str,
) -> None:
    """Not at the next collection of cycles, which may be long in coming.

    The exception that ended the first call (its ``GeneratorExit``) was kept: its frames
    held the caller's frame, and so the second call's iterator, until the cycle
    collector ran (seen on 3.13, where a kept frame holds its caller's).
    """
    gc.disable()  # only reference counting frees what is let go
    try:
        _two_imaps_left_unfinished(backend)
        assert wait_for(lambda: not live_worker_processes() and not live_workpool_threads(), 10)
    finally:
        gc.enable()


def test_pool_imap_closed_early_stops_feeding_the_pool(backend: str) -> None:
    source = CountingInput()
    with workpool.Pool(2, backend=backend) as pool:
        results = pool.imap(square, source, chunksize=1)
        assert next(results) == 0
        results.close()
        # The pool stays usable, and the abandoned run does not keep feeding it.
        assert pool.submit(square, 4).result(timeout=30) == 16
    assert source.taken <= 1 + window(2, 1)
