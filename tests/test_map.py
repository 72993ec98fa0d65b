"""workpool.map / imap / starmap: results, order, zipping and options, on every backend."""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Iterator

import pytest

import workpool
from conftest import live_worker_processes, live_workpool_threads
from helpers import ArrayStream, add, first_value, slow_square, square, where


def test_map_returns_results_in_input_order(backend: str) -> None:
    assert workpool.map(square, range(1, 11), backend=backend) == [x * x for x in range(1, 11)]


def test_map_of_many_items_keeps_every_result(backend: str) -> None:
    result = workpool.map(square, range(20_000), backend=backend, workers=2)
    assert result == [x * x for x in range(20_000)]


def test_map_zips_several_iterables_like_builtin_map(backend: str) -> None:
    # The shortest input decides the length, as with the builtin.
    assert workpool.map(add, [1, 2, 3], (10, 20, 30, 40), backend=backend) == [11, 22, 33]
    assert workpool.map(pow, [2, 3], [3, 2], backend=backend) == [8, 9]


def test_starmap_unpacks_argument_tuples(backend: str) -> None:
    assert workpool.starmap(pow, [(2, 3), (3, 2)], backend=backend) == [8, 9]
    assert workpool.starmap(add, iter([(1, 1), (2, 2)]), backend=backend) == [2, 4]


def test_empty_input_gives_empty_result(backend: str) -> None:
    assert workpool.map(square, [], backend=backend) == []
    assert list(workpool.imap(square, iter([]), backend=backend)) == []


class _IndexedOnly:
    """An input by the old sequence protocol: ``__getitem__`` until ``IndexError``."""

    def __getitem__(self, index: int) -> int:
        if index >= 3:
            raise IndexError(index)
        return index


class _LengthFails(list[int]):
    def __len__(self) -> int:
        raise RuntimeError("no length here")


def test_inputs_the_builtin_map_takes_are_taken(backend: str) -> None:
    # The builtin map asks for no len() and iterates by __getitem__ alone too.
    assert workpool.map(square, _IndexedOnly(), backend=backend) == [0, 1, 4]
    assert workpool.map(add, _IndexedOnly(), [10, 20], backend=backend) == [10, 21]
    assert workpool.map(square, _LengthFails([1, 2]), backend=backend) == [1, 4]
    huge = range(10**20)  # longer than sys.maxsize: no len(), but every item is there
    assert list(itertools.islice(workpool.imap(square, huge, backend=backend), 3)) == [0, 1, 4]
    pairs = workpool.imap(add, huge, itertools.count(), backend=backend)
    assert list(itertools.islice(pairs, 3)) == [0, 2, 4]
    with workpool.Pool(2, backend=backend) as pool:
        assert list(itertools.islice(pool.imap(square, huge), 3)) == [0, 1, 4]
        assert list(itertools.islice(pool.map(square, huge, buffersize=2), 3)) == [0, 1, 4]


def test_generator_input_of_unknown_length(backend: str) -> None:
    items = (x for x in range(1000))
    assert workpool.map(square, items, backend=backend) == [x * x for x in range(1000)]


def test_imap_yields_in_order(backend: str) -> None:
    assert list(workpool.imap(square, range(500), backend=backend)) == [x * x for x in range(500)]


def test_unordered_gives_every_result_once(backend: str) -> None:
    result = list(workpool.imap(square, range(3000), backend=backend, ordered=False))
    assert sorted(result) == [x * x for x in range(3000)]
    unordered_map = workpool.map(square, range(300), backend=backend, ordered=False)
    assert sorted(unordered_map) == [x * x for x in range(300)]


def test_unordered_yields_fast_results_before_slow_ones() -> None:
    delays = [0.6] + [0.0] * 7
    result = list(
        workpool.imap(
            slow_square_with_delay,
            list(enumerate(delays)),
            backend="thread",
            workers=4,
            ordered=False,
            chunksize=1,
        )
    )
    assert result[-1] == 0  # the slow first item finishes last
    assert sorted(result) == [i * i for i in range(8)]


def slow_square_with_delay(pair: tuple[int, float]) -> int:
    index, delay = pair
    return slow_square(index, delay)


@pytest.mark.parametrize("chunksize", [1, 7, 1000])
def test_fixed_chunksize_gives_the_same_results(backend: str, chunksize: int) -> None:
    result = workpool.map(square, range(100), backend=backend, chunksize=chunksize)
    assert result == [x * x for x in range(100)]


def test_lambdas_and_closures_run_on_every_backend(backend: str) -> None:
    offset = 7
    assert workpool.map(lambda x: x + offset, range(5), backend=backend) == [7, 8, 9, 10, 11]

    def make_multiplier(k: int):  # type: ignore[no-untyped-def]
        return lambda x: x * k

    assert workpool.map(make_multiplier(3), [1, 2], backend=backend) == [3, 6]


def test_builtin_and_bound_functions(backend: str) -> None:
    assert workpool.map(abs, [-1, -2], backend=backend) == [1, 2]
    assert workpool.map(operator.neg, [1], backend=backend) == [-1]
    assert workpool.map("{}!".format, ["a"], backend=backend) == ["a!"]


def test_workers_option_sets_the_number_of_workers() -> None:
    pids = {
        pid for pid, _ in workpool.map(where, range(200), backend="process", workers=3, chunksize=1)
    }
    assert 1 <= len(pids) <= 3
    names = {
        name for _, name in workpool.map(where, range(50), backend="thread", workers=2, chunksize=1)
    }
    assert 1 <= len(names) <= 2


def test_process_backend_runs_in_other_processes() -> None:
    import os

    pids = {pid for pid, _ in workpool.map(where, range(40), backend="process", workers=2)}
    assert os.getpid() not in pids


def test_serial_backend_runs_in_the_calling_thread() -> None:
    me = threading.current_thread().name
    assert {name for _, name in workpool.map(where, range(5), backend="serial")} == {me}


def test_auto_backend_returns_correct_results() -> None:
    assert workpool.map(square, range(50)) == [x * x for x in range(50)]


def test_nothing_of_a_one_shot_map_outlives_it(backend: str) -> None:
    workpool.map(square, range(1000), backend=backend, workers=2)
    assert live_worker_processes() == []
    assert live_workpool_threads() == []


def test_initializer_runs_in_every_worker_before_tasks(backend: str) -> None:
    from helpers import recall, remember

    result = workpool.map(
        recall, range(20), backend=backend, initializer=remember, initargs=("ok",)
    )
    assert result == ["ok"] * 20


def test_max_tasks_per_worker_replaces_workers() -> None:
    results = workpool.map(where, range(12), backend="process", workers=2, max_tasks_per_worker=3)
    pids = {pid for pid, _ in results}
    assert len(pids) >= 4  # 12 tasks, at most 3 per process
    threads = workpool.map(where, range(12), backend="thread", workers=2, max_tasks_per_worker=3)
    assert len({name for _, name in threads}) >= 4


def test_every_start_method_works(start_method: str) -> None:
    result = workpool.map(
        lambda x: x * 2, range(100), backend="process", workers=2, start_method=start_method
    )
    assert result == [x * 2 for x in range(100)]


# --- the serial engine's straight loop: map/starmap with nothing to do per chunk ------


@pytest.mark.parametrize("lazy", [False, True])
def test_a_serial_map_stops_at_the_first_failure_and_names_its_position(lazy: bool) -> None:
    ran: list[int] = []
    read: list[int] = []

    def reads(items: range) -> Iterator[int]:
        for x in items:
            read.append(x)
            yield x

    def fails_at_40(x: int) -> int:
        ran.append(x)
        if x == 40:
            raise KeyError(x)
        return x

    with pytest.raises(KeyError) as caught:
        workpool.map(fails_at_40, reads(range(100)) if lazy else range(100), backend="serial")
    assert "input position 40 in the calling thread" in "".join(caught.value.__notes__)
    assert ran == list(range(41))  # every item once, none after the failure
    assert read == (ran if lazy else [])  # nor read from the input


def test_a_serial_map_with_return_exceptions_keeps_going() -> None:
    def odd_fails(x: int) -> int:
        if x % 2:
            raise ValueError(x)
        return x

    results = workpool.map(odd_fails, iter(range(10)), backend="serial", return_exceptions=True)
    assert [r for r in results if not isinstance(r, ValueError)] == [0, 2, 4, 6, 8]
    errors = [r for r in results if isinstance(r, ValueError)]
    assert [e.args[0] for e in errors] == [1, 3, 5, 7, 9]
    assert "input position 9 " in "".join(errors[-1].__notes__)


def test_auto_on_tiny_work_runs_every_item_once_and_in_order() -> None:
    ran: list[int] = []

    def records(x: int) -> int:
        ran.append(x)
        return x * x

    assert workpool.map(records, range(50_000)) == [x * x for x in range(50_000)]
    assert ran == list(range(50_000))  # measured items are not run again


@pytest.mark.parametrize("lazy", [False, True])
def test_a_task_raising_stop_iteration_fails_alone_in_a_serial_map(lazy: bool) -> None:
    def stops_at_3(x: int) -> int:
        if x == 3:
            raise StopIteration
        return x

    pairs = [(i, 0) for i in range(6)]
    results = workpool.starmap(
        lambda x, y: stops_at_3(x + y),
        iter(pairs) if lazy else pairs,
        backend="serial",
        return_exceptions=True,
    )
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], RuntimeError)
    assert "input position 3" in "".join(results[3].__notes__)


def test_cheap_tasks_over_an_endless_input_of_arrays_do_not_read_far_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("numpy")
    # Chunks sized by time alone grow to thousands of such items, all held at once.
    monkeypatch.setattr("workpool.chunking.MAX_CHUNK_BYTES", 64 * 1024)
    arrays = ArrayStream(1000)  # 8 KB each: 8 of them to a chunk
    most_held = 0
    results = workpool.imap(first_value, arrays, backend="process", workers=2)
    try:
        for i, result in zip(range(3000), results):
            assert result == i
            if i % 100 == 0:
                most_held = max(most_held, arrays.alive())
    finally:
        results.close()
    assert most_held < 500
