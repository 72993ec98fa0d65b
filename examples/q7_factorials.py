"""Notebook question 7: the factorials of 1 to 10, computed concurrently on a thread pool.

The notebook asked for ``concurrent.futures.ThreadPoolExecutor``. ``workpool.Pool`` is a
``concurrent.futures.Executor`` too, so the same pattern carries over unchanged: submit
one task per number, then collect the futures with ``as_completed`` in whatever order
they finish. The example prints that finishing order, then the results sorted back
into input order. It then does the same job in one line with ``workpool.map``, which
keeps the input order for you, and checks both against ``math.factorial``.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, as_completed

import workpool

NUMBERS = range(1, 11)


def with_submit() -> dict[int, int]:
    """One ``submit`` per number; results gathered as the futures complete."""
    results: dict[int, int] = {}
    finished: list[int] = []
    with workpool.Pool(workers=4, backend="thread") as pool:
        futures: dict[Future[int], int] = {pool.submit(math.factorial, n): n for n in NUMBERS}
        for future in as_completed(futures):
            n = futures[future]
            results[n] = future.result()
            finished.append(n)
    print(f"Pool.submit + as_completed (finishing order: {finished}):")
    for n in sorted(results):
        print(f"  {n}! = {results[n]}")
    return results


def with_map() -> list[int]:
    """The same in one call; the pool exists only for the call."""
    values = workpool.map(math.factorial, NUMBERS, backend="thread")
    print("workpool.map(math.factorial, range(1, 11), backend='thread'):")
    for n, value in zip(NUMBERS, values):
        print(f"  {n}! = {value}")
    return values


def main() -> None:
    expected = {n: math.factorial(n) for n in NUMBERS}
    by_submit = with_submit()
    print()
    by_map = with_map()
    print()
    assert by_submit == expected, f"submit: {by_submit} != {expected}"
    assert by_map == list(expected.values()), f"map: {by_map} != {list(expected.values())}"
    print(f"check: both ways match math.factorial for n = 1..{max(NUMBERS)}")


if __name__ == "__main__":
    main()
