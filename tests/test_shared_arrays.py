"""workpool.empty and workpool.zeros: NumPy arrays made in shared memory from the start.

A task that builds its large result in one returns it without a copy on the process
backend; the caller can also make one and hand it to tasks, as with ``share()``. Every
test checks that no segment stays open in this process once its arrays are dropped,
and that nothing is left in /dev/shm, under memfd and under the portable path
(``WORKPOOL_PORTABLE=1``) alike.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import HAS_INTERPRETERS, left_in_shared_memory, named_shared_memory, wait_for
from workpool import _platform

np = pytest.importorskip("numpy")

MB = 1 << 20


def segments_held(pid: int | str = "self", at_least: int = 0) -> int:
    """Descriptors and mappings of workpool's shared memory that process ``pid`` holds.

    A memfd shows as ``memfd:workpool...``; the portable path's unlinked POSIX object as
    ``/dev/shm/wp-...``. ``at_least`` counts only memory of that many bytes or more.
    """
    marks = ("memfd:workpool", "/dev/shm/wp-")
    held = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # the process is gone, and what it held with it
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            size = os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
        held += any(mark in target for mark in marks) and size >= at_least
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                start, _, end = line.split(maxsplit=1)[0].partition("-")
                size = int(end, 16) - int(start, 16)
                held += any(mark in line for mark in marks) and size >= at_least
    except FileNotFoundError:
        pass
    return held


@pytest.fixture(autouse=True)
def nothing_left_in_shared_memory() -> Iterator[None]:
    before_dev_shm = named_shared_memory()
    yield
    gc.collect()
    assert segments_held() == 0, "a shared-memory segment is still held in this process"
    assert not left_in_shared_memory(before_dev_shm)


def identity(array: Any) -> tuple[int, int] | None:
    """Which shared memory ``array`` lies in, the same in every process (None: private)."""
    from workpool.segments import find_segment

    found = find_segment(array)
    return found[0].identity if found is not None else None


# --- tasks --------------------------------------------------------------------------


def fill_range(size: int) -> Any:
    """The common case: a task builds its result in shared memory and returns it."""
    out = workpool.zeros(size)
    out[:] = np.arange(size)
    return out


def fill_range_and_say_where(size: int) -> tuple[Any, tuple[int, int] | None, int]:
    out = fill_range(size)
    return out, identity(out), os.getpid()


def fill_grid(rows: int) -> Any:
    out = workpool.empty((rows, 300), dtype=np.int32, order="F")
    out[...] = np.arange(rows * 300, dtype=np.int32).reshape(rows, 300)
    return out


def fill_then_die(size: int) -> None:
    out = workpool.zeros(size)
    out[:] = 1.0
    os._exit(3)


def fill_row(out: Any, row: int) -> tuple[int, tuple[int, int] | None]:
    out[row, :] = row
    return row, identity(out)


def look(array: Any) -> tuple[bool, tuple[int, int] | None, float]:
    return bool(array.flags.writeable), identity(array), float(array.sum())


# --- the arrays themselves ---------------------------------------------------------


def test_zeros_and_empty_make_arrays_in_shared_memory() -> None:
    z = workpool.zeros((3, 4), dtype=np.int16)
    assert (z.shape, z.dtype, z.flags.c_contiguous) == ((3, 4), np.dtype(np.int16), True)
    assert not z.any()
    assert z.flags.writeable
    assert identity(z) is not None
    e = workpool.empty(5, "complex64", "F")
    assert (e.shape, e.dtype) == ((5,), np.dtype(np.complex64))
    assert workpool.empty((2, 3), order="F").flags.f_contiguous
    assert workpool.zeros(7).dtype == np.float64  # NumPy's default
    empty = workpool.zeros((0, 4))
    assert empty.shape == (0, 4)
    assert identity(z) != identity(e)  # each array its own segment


def allocated_bytes(array: Any) -> int:
    """How much memory the system has given the shared segment under ``array``."""
    from workpool.segments import find_segment

    found = find_segment(array)
    assert found is not None
    return os.fstat(found[0].fd).st_blocks * 512


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate here")
def test_empty_takes_its_memory_at_once_and_zeros_only_as_written() -> None:
    filled = workpool.empty(4 * MB, dtype=np.uint8)
    assert allocated_bytes(filled) >= 4 * MB  # to be written whole: no fault per page
    sparse = workpool.zeros(4 * MB, dtype=np.uint8)
    assert allocated_bytes(sparse) == 0
    sparse[3 * MB] = 1
    assert 0 < allocated_bytes(sparse) < MB  # only the page that was written
    assert int(sparse.sum()) == 1 and not filled.any()


@pytest.mark.skipif(
    _platform.USE_MEMFD or not hasattr(os, "posix_fallocate"),
    reason="needs shared memory with a size limit (the portable path's /dev/shm)",
)
def test_empty_bigger_than_shared_memory_raises_at_once() -> None:
    limit = os.statvfs("/dev/shm")
    too_big = limit.f_blocks * limit.f_frsize + MB  # more than it can ever hold
    # An OSError from the system; a MemoryError first if that is more than the machine has.
    error = (OSError, MemoryError)
    with pytest.raises(error, match=r"cannot allocate [\d,]+ bytes of shared memory"):
        workpool.empty(too_big, dtype=np.uint8)
    gc.collect()
    assert segments_held() == 0


@pytest.mark.parametrize(
    "dtype", ["U", "S", bytes, str, "V", "M8", None, ">i2", ("f8", (2, 3)), "U0"]
)
def test_the_dtype_is_the_one_numpy_would_make(dtype: Any) -> None:
    # A string type without a size was taken as is: an array of 0-character strings,
    # into which every string written was cut to "".
    for make, like in ((workpool.zeros, np.zeros), (workpool.empty, np.empty)):
        made, expected = make(3, dtype=dtype), like(3, dtype=dtype)
        assert (made.dtype, made.shape) == (expected.dtype, expected.shape)
    if dtype in ("U", str):
        letters = workpool.zeros(2, dtype=dtype)
        letters[0] = "x"
        assert letters[0] == "x"


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: workpool.zeros(3, dtype=object), TypeError, "Python objects"),
        (lambda: workpool.zeros((2, -1)), ValueError, "negative"),
        (lambda: workpool.empty("ten"), TypeError, "shape must be"),
        (lambda: workpool.zeros(3, order="K"), ValueError, "order must be"),
        (lambda: workpool.zeros(3, writable="yes"), TypeError, "writable must be"),
        # As numpy.zeros refuses them, rather than an array that dies when written.
        (lambda: workpool.zeros(1 << 60, dtype=np.uint8), MemoryError, "machine's memory"),
        (lambda: workpool.zeros((10**10, 10**10)), ValueError, "too big"),
    ],
    ids=["object-dtype", "negative", "not-a-shape", "order", "writable", "huge", "overflow"],
)
def test_bad_arguments_say_what_is_accepted(call: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        call()


# --- made in a task ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_a_task_returns_its_shared_array_on_every_backend(backend: str) -> None:
    big, small = 3 * MB // 8, 10
    results = workpool.map(fill_range, [big, small], backend=backend, workers=2)
    for result, size in zip(results, [big, small]):
        assert result.shape == (size,)
        assert result[-1] == size - 1
        assert (result[:10] == np.arange(10)).all()
        assert result.flags.writeable  # the caller's own array
        result[0] = -1
    grid = workpool.map(fill_grid, [40], backend=backend)[0]
    assert grid.flags.f_contiguous
    assert (grid == np.arange(40 * 300, dtype=np.int32).reshape(40, 300)).all()


def numpy_loads_in_a_subinterpreter() -> bool:
    from concurrent import interpreters  # type: ignore[import-not-found]

    interpreter = interpreters.create()
    try:
        interpreter.exec("import numpy")
    except interpreters.ExecutionFailed:
        return False
    finally:
        interpreter.close()
    return True


@pytest.mark.skipif(not HAS_INTERPRETERS, reason="subinterpreters need Python 3.14+")
def test_in_a_subinterpreter_it_works_or_says_numpy_cannot_load_there() -> None:
    from interp_tasks import fill_shared_range

    outcome = workpool.map(
        fill_shared_range, [1000], backend="interpreter", return_exceptions=True
    )[0]
    if numpy_loads_in_a_subinterpreter():
        assert outcome[-1] == 999
    else:
        assert isinstance(outcome, ImportError)
        assert "workpool.zeros() makes a NumPy array, and NumPy cannot be imported" in str(outcome)
        assert "subinterpreters" in str(outcome)  # NumPy's own reason


def test_a_big_result_reaches_the_caller_in_the_memory_the_task_filled() -> None:
    result, made_in, pid = workpool.map(fill_range_and_say_where, [4 * MB // 8], backend="process")[
        0
    ]
    assert pid != os.getpid()
    assert made_in is not None
    assert identity(result) == made_in  # the same memory: not a copy of it
    assert result.flags.writeable
    assert result.sum() == sum(range(4 * MB // 8))


def test_a_result_passed_on_to_tasks_goes_read_only_and_can_be_checkpointed(
    tmp_path: Path,
) -> None:
    # The caller owns the result: passed on, it is shared as share() shares, and no
    # worker can write into it behind a checkpoint's back.
    result = workpool.map(fill_range, [MB // 8], backend="process")[0]
    seen = workpool.map(look, [result], backend="process")
    assert seen == [(False, identity(result), float(result.sum()))]
    journal = tmp_path / "run.ckpt"
    assert workpool.map(look, [result], backend="process", checkpoint=journal) == seen
    result[0] = 1.0  # still writable here


def fill_part_of_a_scratch_buffer(size: int) -> Any:
    scratch = workpool.empty(32 * MB // 8)  # room for the most a task could make
    scratch[:size] = 1.0
    return scratch[:size]  # what it made: a small part of it


def test_a_result_that_is_a_small_part_of_a_big_buffer_keeps_only_itself() -> None:
    # As pickle would send it: the part returned, not the whole buffer behind it,
    # which would otherwise stay allocated in the caller for as long as each result.
    from workpool.segments import find_segment

    results = workpool.map(fill_part_of_a_scratch_buffer, [2 * MB // 8] * 2, backend="process")
    for result in results:
        assert result.shape == (2 * MB // 8,) and (result == 1.0).all()
        assert result.flags.writeable
        found = find_segment(result)
        held = len(found[0]) if found is not None else result.nbytes
        assert held < 4 * MB, f"a 2 MiB result holds {held / MB:.0f} MiB of shared memory"


def fill_rows(size: int) -> list[Any]:
    out = workpool.empty((4, size))
    out[:] = np.arange(4)[:, None]
    return list(out)  # four parts, each a quarter of it, that use it all


def test_results_that_together_use_all_of_a_buffer_come_back_in_it_without_a_copy() -> None:
    rows = workpool.map(fill_rows, [2 * MB // 8], backend="process")[0]
    assert [float(row[-1]) for row in rows] == [0.0, 1.0, 2.0, 3.0]
    assert len({identity(row) for row in rows}) == 1 and identity(rows[0]) is not None


def fill_and_repeat(size: int) -> Any:
    row = workpool.empty(size)
    row[:] = 1.0
    return np.broadcast_to(row, (3, size))  # each element three times, read-only


def test_a_result_that_views_its_memory_more_than_once_comes_back_as_its_own_elements() -> None:
    # NumPy keeps a broadcast (or sliding-window) view read-only, for one write there
    # is many; the caller's writable result must not be one, but what pickle makes of
    # it: every element its own.
    result = workpool.map(fill_and_repeat, [MB // 8], backend="process")[0]
    assert result.shape == (3, MB // 8) and (result == 1.0).all()
    result[0, 0] = 5.0
    assert result[1, 0] == 1.0 and result[2, 0] == 1.0


def test_small_results_come_back_inside_the_message() -> None:
    # Below share_threshold a copy is cheaper than a mapping, and the caller keeps no
    # descriptor per result: thousands of small results cannot exhaust them.
    results = workpool.map(fill_range, [100] * 300, backend="process", workers=2)
    assert segments_held() == 0
    assert all(identity(r) is None and r[-1] == 99 and r.flags.writeable for r in results)
    shared = workpool.map(fill_range, [100], backend="process", share_threshold=0)[0]
    assert identity(shared) is not None


def test_a_pool_holds_no_memory_of_results_once_the_caller_drops_them() -> None:
    # Counted: memory of 64 KiB or more (each result is 1 MiB), not the pool's own
    # bookkeeping page, which every worker maps while the pool lives.
    big = 64 << 10
    with workpool.Pool(2) as pool:
        pids = set()
        for _ in range(3):
            results = list(pool.map(fill_range_and_say_where, [MB // 8] * 20))
            assert segments_held(at_least=big) > 0  # the results are alive, in shared memory
            assert all(r[0][-1] == MB // 8 - 1 for r in results)
            pids |= {pid for _, _, pid in results}
            del results
            # Free-threaded builds free an object that another thread (the pool's) made
            # when that thread next runs: a moment later, not at once.
            assert wait_for(lambda: gc.collect() >= 0 and segments_held(at_least=big) == 0)
        assert wait_for(lambda: all(segments_held(pid, big) == 0 for pid in pids))


def test_a_task_that_crashes_after_filling_leaves_nothing_behind() -> None:
    before = named_shared_memory()
    outcome = workpool.map(fill_then_die, [8 * MB // 8], backend="process", return_exceptions=True)
    assert isinstance(outcome[0], workpool.WorkerCrashed)
    assert not left_in_shared_memory(before)


@pytest.fixture
def low_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """This process's soft limit on open descriptors, lowered to a little over what it holds.

    As the common default of 1,024 is, for a service that keeps many results; restored
    afterwards, whatever workpool made of it. (workpool reads the limit once, and
    expects no program to lower it: here it is told to read it again.)
    """
    from workpool import fd_limit

    resource = pytest.importorskip("resource")
    monkeypatch.setattr(fd_limit, "_mark", 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(os.listdir("/proc/self/fd")) + 100
    if hard != resource.RLIM_INFINITY and hard < 4 * low:
        pytest.skip(f"the hard limit on open descriptors ({hard}) leaves no room to grow")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        yield low
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_shared_results_than_the_soft_descriptor_limit_can_be_kept(
    low_descriptor_limit: int,
) -> None:
    # Each result in shared memory keeps a descriptor open (to be passed on without a
    # copy): a caller holding a few hundred would fail with EMFILE mid-call.
    count = 2 * low_descriptor_limit
    with workpool.Pool(2) as pool:
        results = list(pool.map(fill_range, [16] * count, share_threshold=0))
    assert all(identity(r) is not None and r[-1] == 15 for r in results)
    made = [workpool.zeros(2) for _ in range(count)]
    shared = [workpool.share(np.ones(2)) for _ in range(count)]
    assert workpool.map(look, shared[-2:], backend="process")[1][2] == 2.0
    del results, made, shared


def test_results_kept_past_the_hard_descriptor_limit_arrive_as_copies() -> None:
    # Each result in shared memory keeps a descriptor open; where even the hard limit
    # is low (macOS allows 10,240; some systems 4,096), a caller keeping thousands of
    # large results would fail mid-call and break the pool. Past it they are copied,
    # as pickle would bring them.
    program = textwrap.dedent(
        """
        import os, resource, workpool

        def fill(i):
            out = workpool.zeros(16)
            out[:] = i
            return out

        if __name__ == "__main__":
            limit = len(os.listdir("/proc/self/fd")) + 60
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            with workpool.Pool(2, share_threshold=0) as pool:
                kept = list(pool.map(fill, range(3 * limit)))
                assert [float(r[0]) for r in kept] == list(range(3 * limit))
                assert all(r.flags.writeable for r in kept)
                assert list(pool.map(fill, range(3)))[2][0] == 2  # the pool still works
            print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


# --- made in the caller -------------------------------------------------------------


def test_made_in_the_caller_it_reaches_workers_as_share_would() -> None:
    data = workpool.zeros(1000)
    data[:] = 1.0
    seen = workpool.map(look, [data, data], backend="process", workers=2)
    assert seen == [(False, identity(data), 1000.0)] * 2  # read-only, the same memory
    out = workpool.zeros((4, 500), writable=True)
    rows = workpool.starmap(fill_row, [(out, row) for row in range(4)], backend="process")
    assert {where for _, where in rows} == {identity(out)}
    assert [float(out[row].max()) for row in range(4)] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("backend", ["serial", "thread"])
def test_in_process_backends_pass_the_array_itself(backend: str) -> None:
    data = workpool.zeros(10)
    assert workpool.map(lambda a: a is data, [data], backend=backend) == [True]


def test_without_numpy_the_error_says_so() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["numpy"] = None  # as if NumPy were not installed
        import workpool
        for make in (workpool.zeros, workpool.empty):
            try:
                make(3)
            except ImportError as exc:
                print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert "workpool.zeros() makes a NumPy array" in lines[0]
    assert "workpool.empty() makes a NumPy array" in lines[1]
    assert "pip install numpy" in lines[0]


def test_import_workpool_does_not_import_numpy() -> None:
    program = "import sys, workpool; print('numpy' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr
