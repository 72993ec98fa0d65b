"""Notebook question 8: squares of 1 to 10 on process pools of 2, 4 and 8 workers, timed.

For each pool size the example times one ``workpool.map(..., backend="process")`` call,
which starts the worker processes, ships the ten numbers to them, collects the results
and stops the workers again. It also times the plain serial list comprehension. The
point the numbers make: squaring a number takes a fraction of a microsecond, while
starting processes and passing data between them takes milliseconds, so for work this
small the serial loop wins by orders of magnitude. A process pool pays off only when
each task does far more work than it costs to hand it over.

The work is started under the ``__main__`` guard. On Linux the workers fork from
workpool's *zygote*, a helper process forked from this program the first time a pool
needs one, which stays for the later pools: the first process run pays once for
starting it, so it is usually the slowest. A program that already runs threads gets
the standard library's fork server instead, which imports this module afresh: the
guard keeps it from running the example again.
"""

from __future__ import annotations

import time

import workpool

NUMBERS = range(1, 11)
POOL_SIZES = (2, 4, 8)


def square(x: int) -> int:
    return x * x


def time_serial() -> tuple[float, list[int]]:
    start = time.perf_counter()
    results = [square(n) for n in NUMBERS]
    return time.perf_counter() - start, results


def time_pool(size: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    results = workpool.map(square, NUMBERS, backend="process", workers=size)
    return time.perf_counter() - start, results


def main() -> None:
    serial_seconds, expected = time_serial()
    rows: list[tuple[str, float, list[int]]] = [("serial", serial_seconds, expected)]
    for size in POOL_SIZES:
        seconds, results = time_pool(size)
        assert results == expected, f"pool of {size}: {results} != {expected}"
        rows.append((f"pool of {size}", seconds, results))

    print(f"{'run':<10}  {'seconds':>10}  results")
    for label, seconds, results in rows:
        print(f"{label:<10}  {seconds:>10.6f}  {results}")
    print()

    print(
        f"(the first process run, pool of {POOL_SIZES[0]}, also starts the helper process that "
        "every later pool forks its workers from, which adds to its time)"
    )
    label, fastest, _ = min(rows[1:], key=lambda row: row[1])
    ratio = fastest / serial_seconds if serial_seconds > 0 else float("inf")
    if ratio > 1:
        print(
            f"For 10 tiny tasks the serial loop is far faster: even the quickest process run "
            f"({label}, {fastest:.4f} s) took {ratio:,.0f} times as long as the serial loop "
            f"({serial_seconds * 1e6:.1f} µs), because starting processes and shipping items "
            f"to them costs much more than squaring a number."
        )
    else:
        print(
            f"Unexpectedly, the quickest process run ({label}, {fastest:.4f} s) was not "
            f"slower than the serial loop ({serial_seconds:.4f} s): ratio {ratio:.2f}."
        )


if __name__ == "__main__":
    main()
