"""One rule for an initializer that fails, on every backend.

Anything it raises breaks the pool, ``SystemExit`` included; ``KeyboardInterrupt`` too,
except where the initializer runs in the caller's thread (the serial backend, and
``backend="auto"`` before it measures), since Ctrl+C must reach the caller.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import workpool
from helpers import broken_initializer, exit_by_system_exit, fails_when_released, square


def causes(error: BaseException) -> list[BaseException]:
    """``error``'s chain of causes, nearest first."""
    chain: list[BaseException] = []
    while error.__cause__ is not None:
        error = error.__cause__
        chain.append(error)
    return chain


def test_an_initializer_raising_system_exit_breaks_the_pool(backend: str) -> None:
    pool = workpool.Pool(2, backend=backend, initializer=exit_by_system_exit)
    try:
        # Raised by submit, or by the result, depending on when the pool broke.
        with pytest.raises(workpool.BrokenPool, match="initializer") as info:
            pool.submit(square, 1).result(timeout=30)
        assert any(isinstance(cause, SystemExit) for cause in causes(info.value))
    finally:
        pool.shutdown()


def test_an_initializer_raising_system_exit_fails_a_map(backend: str) -> None:
    with pytest.raises(workpool.BrokenPool, match="initializer"):
        workpool.map(square, range(10), backend=backend, initializer=exit_by_system_exit)


class InterruptedOnce:
    """An initializer that is interrupted (Ctrl+C) the first time and succeeds after."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise KeyboardInterrupt


def test_calls_queued_on_a_pool_that_breaks_each_get_a_broken_pool_of_their_own(
    backend: str, tmp_path: Path
) -> None:
    # Their callers may be different threads: one exception object raised in both would
    # carry both tracebacks, and a note one of them adds would show in the other.
    if backend == "serial":
        pytest.skip("serial runs the initializer inside the first call: nothing is queued")
    pool = workpool.Pool(
        1, backend=backend, initializer=fails_when_released, initargs=(str(tmp_path),)
    )
    try:
        calls = [pool.map(square, range(3)), pool.map(square, range(3))]
        (tmp_path / "release").touch()
        errors = []
        for results in calls:
            with pytest.raises(workpool.BrokenPool, match="initializer") as caught:
                list(results)
            errors.append(caught.value)
        assert errors[0] is not errors[1]
        assert all(isinstance(error.__cause__, RuntimeError) for error in errors)
    finally:
        pool.shutdown()


def test_ctrl_c_in_the_serial_initializer_reaches_the_caller_and_breaks_nothing() -> None:
    initializer = InterruptedOnce()
    with workpool.Pool(backend="serial", initializer=initializer) as pool:
        with pytest.raises(KeyboardInterrupt):
            pool.submit(square, 3)
        assert pool.submit(square, 3).result(timeout=30) == 9
    assert initializer.calls == 2


def test_an_initializer_raising_keyboard_interrupt_on_threads_breaks_the_pool() -> None:
    # No real Ctrl+C reaches a worker thread: this one is the initializer's own failure.
    with workpool.Pool(2, backend="thread", initializer=InterruptedOnce()) as pool:
        with pytest.raises(workpool.BrokenPool) as info:
            pool.submit(square, 3).result(timeout=30)
        assert any(isinstance(cause, KeyboardInterrupt) for cause in causes(info.value))


@pytest.mark.parametrize("initializer", [broken_initializer, exit_by_system_exit])
def test_an_initializer_that_fails_breaks_an_auto_map_alike_measured_or_not(
    initializer: object,
) -> None:
    # backend="auto" runs the initializer in the caller's thread before it measures a
    # function it has not seen; once it has, the chosen engine runs it. Either way the
    # call fails as on a named backend: BrokenPool, with what was raised as its cause.
    def fresh(x: int) -> int:  # a function auto has never measured
        return square(x)

    for measured in (False, True):
        if measured:
            assert workpool.map(fresh, range(10)) == [square(i) for i in range(10)]
        with pytest.raises(workpool.BrokenPool, match="initializer") as info:
            workpool.map(fresh, range(10), initializer=initializer)
        assert any(isinstance(cause, (RuntimeError, SystemExit)) for cause in causes(info.value))


def test_ctrl_c_in_the_initializer_auto_runs_inline_reaches_the_caller() -> None:
    # There, as on the serial backend, the initializer runs in the caller's own thread.
    initializer = InterruptedOnce()

    def fresh(x: int) -> int:
        return square(x)

    with pytest.raises(KeyboardInterrupt):
        workpool.map(fresh, range(10), initializer=initializer)
    assert workpool.map(fresh, range(10), initializer=initializer) == [square(i) for i in range(10)]
