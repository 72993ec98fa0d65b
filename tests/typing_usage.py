"""What a caller's type checker sees of the public API (checked by ``make lint``, not run).

mypy reads this file as a user's program: each ``assert_type`` fails the lint if a
public function's declared type drifts (to ``Any``, say, which would hide the caller's
own mistakes).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type

import workpool


def square(x: int) -> int:
    return x * x


def repeat(count: int, text: str) -> str:
    return text * count


def usage() -> None:
    assert_type(workpool.map(square, range(3)), list[int])
    assert_type(workpool.imap(square, range(3), ordered=False), Iterator[int])
    assert_type(workpool.starmap(repeat, [(2, "a")]), list[str])
    with workpool.Pool(2, backend="thread") as pool:
        assert_type(pool.submit(square, 3), concurrent.futures.Future[int])
        assert_type(pool.map(square, [1, 2]), Iterator[int])
        assert_type(pool.imap(square, [1, 2]), Iterator[int])
        assert_type(pool.starmap(repeat, [(2, "a")]), list[str])
    floats: NDArray[np.float64] = np.zeros(3)
    assert_type(workpool.share(floats), NDArray[np.float64])
    assert_type(workpool.share(b"abc"), workpool.Segment | bytes)
    assert_type(workpool.empty((2, 2)), NDArray[Any])
    assert_type(workpool.zeros(4, np.int32), NDArray[Any])
    assert_type(workpool.advise(square, [1, 2, 3]).workers, int)
