"""Properties of the process engine that users rely on without seeing them."""

from __future__ import annotations

import os
from typing import Any

import workpool
from helpers import square

_unpickled_here: list[int] = []


def _count_unpickling() -> CountedFunction:
    _unpickled_here.append(os.getpid())
    return CountedFunction()


class CountedFunction:
    """A callable that notes every time it is unpickled in a process."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_count_unpickling, ())

    def __call__(self, x: int) -> tuple[int, int]:
        return os.getpid(), len(_unpickled_here)


def test_function_is_shipped_once_per_worker_not_per_task() -> None:
    results = workpool.map(
        CountedFunction(), range(2000), backend="process", workers=2, chunksize=5
    )
    per_worker: dict[int, int] = {}
    for pid, times_unpickled in results:
        per_worker[pid] = max(per_worker.get(pid, 0), times_unpickled)
    assert per_worker  # some worker ran tasks
    assert set(per_worker.values()) == {1}


def test_pool_reuses_its_workers_across_calls() -> None:
    with workpool.Pool(2, backend="process") as pool:
        first = {pid for pid, _ in pool.map(CountedFunction(), range(50))}
        second = {pid for pid, _ in pool.map(CountedFunction(), range(50))}
        assert first | second  # the same processes answer both calls
        assert len(first | second) <= 2


def test_large_arguments_and_results_cross_intact() -> None:
    blob = os.urandom(3 * 1024 * 1024)
    result = workpool.map(bytes.upper, [blob, blob[:10]], backend="process", workers=2)
    assert result == [blob.upper(), blob[:10].upper()]
    echoes = workpool.map(lambda b: b * 2, [blob] * 4, backend="process", workers=2, chunksize=2)
    assert echoes == [blob * 2] * 4


def test_many_functions_through_one_pool() -> None:
    with workpool.Pool(2, backend="process") as pool:
        functions = [lambda x, k=k: x + k for k in range(150)]  # more than a worker caches
        futures = [pool.submit(fn, 1) for fn in functions]
        assert [f.result(timeout=60) for f in futures] == [1 + k for k in range(150)]
        assert pool.submit(square, 9).result(timeout=30) == 81
