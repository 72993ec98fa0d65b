"""Large data without copies: workpool.share and automatic sharing of big NumPy arrays.

Shared memory here is anonymous (memfd): it never appears in /dev/shm, and it is gone
once no process holds it. Each test also checks that no descriptor of it stays open
in this process once the objects are dropped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import gc
import itertools
import os
import re
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import workpool
from conftest import left_in_shared_memory, named_shared_memory, wait_for
from helpers import ArrayStream, first_value, run_while_imported

np = pytest.importorskip("numpy")

MB = 1 << 20
DEFAULT_THRESHOLD = 1 << 20  # share_threshold's default


def open_segments() -> int:
    """Descriptors of shared-memory segments this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "memfd:workpool" in os.readlink(f"/proc/self/fd/{fd}"):
                count += 1
        except OSError:
            continue
    return count


@pytest.fixture(autouse=True)
def nothing_left_in_shared_memory() -> Iterator[None]:
    before_dev_shm = named_shared_memory()
    yield
    gc.collect()
    assert open_segments() == 0, "a shared-memory segment is still held open"
    assert not left_in_shared_memory(before_dev_shm)


# --- what the workers see ------------------------------------------------------------


def describe(array: Any) -> tuple[bool, str, tuple[int, int] | None]:
    """(writable?, class of the memory's owner, identity of its shared segment)."""
    from workpool.segments import find_segment

    found = find_segment(array)
    root: Any = array
    while getattr(root, "base", None) is not None:
        root = root.base
    owner = type(root.obj if isinstance(root, memoryview) else root).__name__
    return bool(array.flags.writeable), owner, found[0].identity if found else None


def describe_pair(array: Any, index: int) -> tuple[bool, str, tuple[int, int] | None]:
    return describe(array)


def part_sum(array: Any, part: int, parts: int = 8) -> float:
    size = len(array) // parts
    return float(array[part * size : (part + 1) * size].sum())


def fill_row(out: Any, row: int) -> int:
    out[row, :] = row
    return row


def try_to_write(array: Any) -> None:
    array[0] = 42


def write_inside(arrays: dict[str, Any]) -> None:
    arrays["weights"][0] = 42


def make_array(size: int) -> Any:
    return np.arange(size, dtype=np.float64)


# --- share() ----------------------------------------------------------------------------


def test_share_returns_an_array_of_the_same_kind() -> None:
    original = np.arange(12, dtype=np.int32).reshape(3, 4)
    shared = workpool.share(original)
    assert isinstance(shared, np.ndarray)
    assert shared.dtype == original.dtype
    assert shared.shape == original.shape
    assert (shared == original).all()
    fortran = workpool.share(np.asfortranarray(original))
    assert fortran.flags.f_contiguous
    assert (fortran == original).all()


def test_sharing_zeros_allocates_nothing_and_the_rest_is_copied_exactly() -> None:
    from workpool.segments import find_segment

    zeros = workpool.share(np.zeros((1000, 1000)))
    found = find_segment(zeros)
    assert found is not None
    assert os.fstat(found[0].fd).st_blocks == 0  # not one page of memory taken yet
    assert zeros.shape == (1000, 1000)
    assert not zeros.any()
    mostly_zero = np.zeros(3 * MB)
    mostly_zero[2 * MB + 3] = 7.0
    mostly_zero[-1] = -0.0  # equal to 0.0, but not the same bytes
    shared = workpool.share(mostly_zero)
    assert (shared == mostly_zero).all()
    assert np.signbit(shared[-1])
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    assert (workpool.share(fortran) == fortran).all()


def test_sharing_a_small_array_reads_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a large copy is split over threads; counting the CPUs reads the cgroup's
    # files, which took 60% of sharing a small array (0.36 ms each, 10,000 in 3.6 s).
    from workpool import _cpus

    asked: list[int] = []
    real = _cpus.usable_cpus
    monkeypatch.setattr(_cpus, "usable_cpus", lambda: asked.append(1) or real())
    small = [workpool.share(np.full((3, 4), i)) for i in range(50)]
    assert [int(a[2, 3]) for a in small] == list(range(50))
    assert not asked
    assert (workpool.share(np.ones(3 * MB)) == 1).all()  # 24 MB: copied by several threads
    assert asked


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_share_bytes_like(kind: type) -> None:
    data = kind(b"hello shared world")
    shared = workpool.share(data)
    assert isinstance(shared, workpool.Segment)  # a public type, for annotations and checks
    assert repr(type(shared)) == "<class 'workpool.Segment'>"
    assert bytes(shared) == b"hello shared world"
    assert len(shared) == len(b"hello shared world")
    assert memoryview(shared).tobytes() == b"hello shared world"


def test_share_of_a_memoryview_that_is_not_contiguous_holds_its_bytes() -> None:
    # A strided slice, or a view of a column, is a memoryview like any other: its bytes,
    # in order, are what is shared (as bytes(view) gives them).
    import array

    strided = memoryview(b"abcdefgh")[::2]
    column = memoryview(np.arange(12, dtype=np.int32).reshape(3, 4)[:, 1])
    doubles = memoryview(array.array("d", [1.5, 2.5, 3.5]))[::-1]
    for view in (strided, column, doubles):
        shared = workpool.share(view)
        assert bytes(shared) == view.tobytes()
    assert workpool.map(bytes, [workpool.share(strided)], backend="process") == [b"aceg"]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_share_of_nothing_is_nothing(kind: type) -> None:
    shared = workpool.share(kind(b""))  # no memory of no size can be mapped
    assert shared == b"" and len(shared) == 0
    assert workpool.map(len, [shared], backend="process") == [0]


@pytest.mark.parametrize("value", [[1, 2, 3], "text", 42, {"a": 1}])
def test_share_refuses_other_kinds_and_says_which_it_takes(value: object) -> None:
    with pytest.raises(TypeError, match="NumPy array, bytes, bytearray or memoryview"):
        workpool.share(value)


@pytest.mark.parametrize(
    "array",
    [
        np.array([object(), object()]),
        np.zeros(2, dtype=[("x", np.float64), ("label", object)]),
        *([np.array(["a", "b"], dtype=np.dtypes.StringDType())] if hasattr(np, "dtypes") else []),
    ],
    ids=lambda array: str(array.dtype),
)
def test_share_refuses_arrays_of_python_objects_naming_their_dtype(array: Any) -> None:
    with pytest.raises(TypeError, match=f"dtype {re.escape(str(array.dtype))}"):
        workpool.share(array)


def test_calls_go_on_while_another_thread_imports_numpy(tmp_path: Path) -> None:
    # A thread importing NumPy (pandas, say) puts the module in sys.modules long
    # before numpy.ndarray exists: every call meanwhile looked for arrays among its
    # arguments there and failed, on processes as "cannot be sent to a worker".
    done = run_while_imported(
        "numpy",
        """
        print(workpool.map(abs, range(-3, 0), backend="process", workers=1))
        with workpool.Pool(1, backend="thread") as pool:
            print(list(pool.map(abs, [-1, -2])), pool.submit(abs, -4).result())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["[3, 2, 1]", "[1, 2] 4"]


def test_shared_array_reaches_workers_read_only_as_a_reference() -> None:
    shared = workpool.share(np.arange(1000, dtype=np.float64))
    results = workpool.map(
        describe_pair, itertools.repeat(shared, 6), range(6), backend="process", workers=2
    )
    assert all(not writable for writable, _, _ in results)
    assert all(owner == "Segment" for _, owner, _ in results)
    assert len({identity for _, _, identity in results}) == 1
    errors = workpool.map(try_to_write, [shared], backend="process", return_exceptions=True)
    assert isinstance(errors[0], ValueError)
    assert "read-only" in str(errors[0])
    assert shared[0] == 0


def center(array: Any) -> float:
    array -= array.mean()  # in place, as tasks often change what they were given
    return float(array[0])


def test_a_task_that_writes_to_a_shared_argument_is_told_why_it_cannot() -> None:
    # The same task runs on a small array (a copy of its own) and fails on a large one
    # (read-only, in shared memory): the error says so, and what to do.
    assert workpool.map(center, [np.arange(3.0)], backend="process") == [-1.0]
    big = np.arange(2 * MB // 8, dtype=np.float64)
    error = workpool.map(center, [big], backend="process", return_exceptions=True)[0]
    assert isinstance(error, ValueError)
    assert "read-only" in str(error)  # NumPy's own words
    notes = " ".join(getattr(error, "__notes__", []))
    assert "shared memory" in notes
    assert "share_threshold" in notes
    assert "copy it in the task" in notes
    assert big[0] == 0.0
    assert workpool.map(center, [big], backend="process", share_threshold=None)[0] < 0


def test_an_array_inside_an_argument_that_cannot_be_written_is_explained_too() -> None:
    big = {"weights": np.zeros(2 * MB // 8)}
    error = workpool.map(write_inside, [big], backend="process", return_exceptions=True)[0]
    assert isinstance(error, ValueError)
    notes = " ".join(getattr(error, "__notes__", []))
    assert "read-only, in shared memory" in notes
    assert "share_threshold=None" in notes


def write_first_byte(data: Any) -> None:
    data[0] = 42


@pytest.mark.parametrize("threshold", [DEFAULT_THRESHOLD, None])
def test_a_task_that_writes_to_a_read_only_share_is_told_to_share_it_writable(
    threshold: int | None,
) -> None:
    # An array the program shared itself (smaller than share_threshold, or with
    # automatic sharing off) is read-only because share() made it so:
    # share_threshold=None would change nothing, writable=True would.
    small = workpool.share(np.zeros(10))
    error = workpool.map(
        try_to_write, [small], backend="process", share_threshold=threshold, return_exceptions=True
    )[0]
    assert isinstance(error, ValueError), repr(error)
    notes = " ".join(getattr(error, "__notes__", []))
    assert "writable=True" in notes
    assert "share_threshold=None" not in notes
    shared_bytes = workpool.share(b"abc")
    error = workpool.map(
        write_first_byte, [shared_bytes], backend="process", return_exceptions=True
    )[0]
    assert isinstance(error, TypeError), repr(error)
    assert "writable=True" in " ".join(getattr(error, "__notes__", []))
    assert bytes(shared_bytes) == b"abc"


class Table:
    """Like a pandas DataFrame: ``flags`` of its own (not NumPy's), columns inside."""

    flags = "allows_duplicate_labels=True"

    def __init__(self, column: Any) -> None:
        self.column = column


def write_column(table: Table) -> None:
    table.column[0] = 42


def test_an_argument_with_flags_of_its_own_does_not_upset_the_explanation() -> None:
    # pandas' DataFrame.flags has no .writeable: looking for NumPy's killed the worker.
    table = Table(np.zeros(2 * MB // 8))
    error = workpool.map(write_column, [table], backend="process", return_exceptions=True)[0]
    assert isinstance(error, ValueError), repr(error)
    assert "read-only, in shared memory" in " ".join(getattr(error, "__notes__", []))


def test_writable_share_shows_the_workers_writes() -> None:
    out = workpool.share(np.zeros((8, 1000)), writable=True)
    workpool.map(fill_row, itertools.repeat(out, 8), range(8), backend="process", workers=2)
    assert [float(out[row].max()) for row in range(8)] == [float(r) for r in range(8)]
    assert out.sum() == sum(row * 1000 for row in range(8))


@dataclasses.dataclass(frozen=True)
class RowJob:
    """A task's input as programs often bundle it: where to write, and what."""

    out: Any
    row: int


def fill_job(job: RowJob) -> int:
    job.out[job.row, :] = job.row
    return job.row


def test_a_writable_share_inside_a_dataclass_is_refused_by_a_checkpoint(tmp_path: Path) -> None:
    # A checkpoint cannot restore the workers' writes into it, inside a tuple or not.
    out = workpool.share(np.zeros((2, 3)), writable=True)
    with pytest.raises(ValueError, match=r"share\(writable=True\)"):
        workpool.map(
            fill_job,
            [RowJob(out, 0), RowJob(out, 1)],
            backend="process",
            checkpoint=str(tmp_path / "run.ckpt"),
        )
    assert not out.any()  # nothing ran
    assert workpool.map(fill_job, [RowJob(out, 1)], backend="process") == [1]
    assert out[1].tolist() == [1, 1, 1]


def test_shared_bytes_reach_workers() -> None:
    shared = workpool.share(b"x" * 5000)
    assert workpool.map(len, [shared, shared], backend="process") == [5000, 5000]
    assert workpool.map(bytes.__len__, [b"abc"], backend="process") == [3]


@pytest.mark.parametrize("backend", ["serial", "thread"])
def test_in_process_backends_pass_the_object_itself(backend: str) -> None:
    shared = workpool.share(np.arange(10))
    assert workpool.map(lambda a: a is shared, [shared], backend=backend) == [True]


# --- automatic sharing ------------------------------------------------------------------


def test_big_arrays_are_shared_once_per_call_read_only() -> None:
    big = np.random.default_rng(1).random(2 * MB // 8 * 4)  # 8 MB
    results = workpool.map(
        describe_pair, itertools.repeat(big, 8), range(8), backend="process", workers=2
    )
    assert all(not writable for writable, _, _ in results)
    assert {owner for _, owner, _ in results} == {"Segment"}
    assert len({identity for _, _, identity in results}) == 1  # one segment for 8 tasks
    sums = workpool.map(part_sum, itertools.repeat(big, 8), range(8), backend="process")
    assert sum(sums) == pytest.approx(big.sum())


@pytest.mark.parametrize("how", ["submit", "map"])
def test_a_task_that_writes_to_a_big_argument_is_told_why_it_is_read_only(how: str) -> None:
    # With ProcessPoolExecutor each task may change its own pickled copy; here a big
    # array arrives in shared memory, read-only. NumPy's "output array is read-only"
    # alone does not say why, nor what to do.
    big = np.zeros(MB // 8 * 2)
    with workpool.Pool(1, backend="process") as pool:
        with pytest.raises(ValueError, match="read-only") as caught:
            if how == "submit":
                pool.submit(try_to_write, big).result(timeout=30)
            else:
                list(pool.map(try_to_write, [big]))
        assert any("share_threshold=None" in note for note in caught.value.__notes__)
        unrelated = pool.submit(int, "x").exception(timeout=30)
        assert not any("share_threshold" in note for note in unrelated.__notes__)
    assert big[0] == 0


def make_writable(array: Any) -> None:
    array.flags.writeable = True  # as a task that means to change its own copy may try


def test_a_task_that_makes_a_big_argument_writable_is_told_why_it_cannot() -> None:
    # NumPy says only "cannot set WRITEABLE flag to True of this array".
    big = np.zeros(MB // 8 * 2)
    with pytest.raises(ValueError, match="WRITEABLE") as caught:
        workpool.map(make_writable, [big], backend="process")
    assert any("share_threshold=None" in note for note in caught.value.__notes__)
    assert big.flags.writeable


def test_arrays_of_an_endless_input_leave_shared_memory_once_their_tasks_are_done() -> None:
    arrays = ArrayStream(1000)  # 8 KB each: over the threshold below
    results = workpool.imap(
        first_value, arrays, backend="process", workers=2, share_threshold=4096, chunksize=1
    )
    try:
        for i, result in zip(range(150), results):
            assert result == i
        # Neither the arrays nor their segments are all held until the call ends.
        assert wait_for(lambda: arrays.alive(among_first=100) == 0, timeout=10)
        assert open_segments() < 50
    finally:
        results.close()


# --- arrays a function holds (its globals, its closure) ---------------------------------


def reader_of(array: Any) -> Any:
    """A task that reads ``array`` from its closure, as a script's reads a global."""

    def read(position: int) -> tuple[float, bool, str, tuple[int, int] | None]:
        writable, owner, identity = describe(array)
        return float(array[position]), writable, owner, identity

    return read


def test_a_big_array_a_function_holds_reaches_workers_in_shared_memory() -> None:
    from workpool.sharing import dumps_function_sharing

    big = np.arange(8 * MB // 8, dtype=np.float64)
    task = reader_of(big)
    payload, fds, _keep = dumps_function_sharing(task)
    assert len(payload) < 100_000 and len(fds) == 1  # a reference, not 8 MB of pickle
    del _keep
    results = workpool.map(task, [0, 5, len(big) - 1] * 3, backend="process", workers=2)
    assert [value for value, *_ in results] == [0.0, 5.0, len(big) - 1.0] * 3
    # Each worker holds its own copy, as a pickled one would be (writable, private to
    # it), made of the shared pages until it writes: one segment for the whole call.
    assert {(writable, owner) for _, writable, owner, _ in results} == {(True, "Segment")}
    assert len({identity for *_, identity in results}) == 1


def test_a_workers_writes_to_an_array_its_function_holds_stay_its_own() -> None:
    big = np.zeros(2 * MB // 8)

    def scribble_and_return(value: float) -> Any:
        big[:3] = value  # the worker's copy, as if it had been pickled
        return big

    results = workpool.map(scribble_and_return, [1.0, 2.0], backend="process", workers=2)
    assert [float(result[0]) for result in results] == [1.0, 2.0]  # what the task held
    assert [float(result[3]) for result in results] == [0.0, 0.0]
    assert not big.any()  # the caller's array is untouched


def test_a_function_holding_a_shared_array_reads_it_read_only_without_a_copy() -> None:
    shared = workpool.share(np.arange(2 * MB // 8, dtype=np.float64))
    results = workpool.map(reader_of(shared), [1, 2], backend="process", workers=2)
    assert [value for value, *_ in results] == [1.0, 2.0]
    assert {writable for _, writable, _, _ in results} == {False}  # as arguments are
    assert {identity for *_, identity in results} == {describe(shared)[2]}  # the same memory

    def write() -> None:
        shared[0] = 42

    with workpool.Pool(1) as pool, pytest.raises(ValueError, match="read-only"):
        pool.submit(write).result()
    assert shared[0] == 0


def test_an_array_a_function_holds_is_sent_as_it_is_at_each_call() -> None:
    big = np.zeros(2 * MB // 8)
    task = reader_of(big)
    assert workpool.map(task, [0], backend="process")[0][0] == 0.0
    big[0] = 7.0  # changed in place between two calls
    assert workpool.map(task, [0], backend="process")[0][0] == 7.0


def test_a_function_holding_more_large_arrays_than_a_message_carries_still_runs() -> None:
    from workpool.sharing import MAX_FDS_PER_FRAME

    chunks = [np.full(MB // 8, i, dtype=np.float64) for i in range(MAX_FDS_PER_FRAME + 5)]

    def first_of(i: int) -> float:
        return float(chunks[i][0])

    last = len(chunks) - 1
    assert workpool.map(first_of, [0, last], backend="process") == [0.0, float(last)]


HELD: list[Any] = []


def hold(array: Any) -> None:
    HELD[:] = [array]


def held_array(position: int) -> tuple[float, bool, str, tuple[int, int] | None]:
    return (float(HELD[0][position]), *describe(HELD[0]))


def test_a_big_array_among_initargs_reaches_workers_in_shared_memory() -> None:
    big = np.arange(2 * MB // 8, dtype=np.float64)
    results = workpool.map(
        held_array, [3, 4], backend="process", workers=2, initializer=hold, initargs=(big,)
    )
    assert [value for value, *_ in results] == [3.0, 4.0]
    assert {(writable, owner) for _, writable, owner, _ in results} == {(True, "Segment")}
    assert len({identity for *_, identity in results}) == 1


def test_small_arrays_and_threshold_none_are_pickled() -> None:
    small = np.arange(100)
    writable, _, identity = workpool.map(describe, [small], backend="process")[0]
    assert writable
    assert identity is None
    big = np.zeros(2 * MB // 8)
    off = workpool.map(describe, [big], backend="process", share_threshold=None)[0]
    assert off[2] is None
    low = workpool.map(describe, [small], backend="process", share_threshold=0)[0]
    assert low[2] is not None


def test_a_threshold_bigger_than_any_array_shares_nothing() -> None:
    # As share_threshold=None does; past 2**63 bytes it once broke the worker's message
    # (struct.error, or a call that never returned when the supervisor sent it).
    huge = 2**70
    assert (
        workpool.map(describe, [np.zeros(3)], backend="process", share_threshold=huge)[0][2] is None
    )
    with workpool.Pool(1, share_threshold=huge) as pool:
        assert pool.submit(first_value, np.ones(2 * MB // 8)).result(timeout=30) == 1.0


@pytest.mark.parametrize(
    "array",
    [
        np.arange(300_000, dtype=np.int8),
        np.arange(300_000, dtype=np.float32).reshape(600, 500),
        np.asfortranarray(np.arange(300_000, dtype=np.complex128).reshape(500, 600)),
        np.arange(600_000, dtype=np.int64)[::3],  # not contiguous
        np.ones(300_000, dtype=np.bool_),
        np.zeros(200_000, dtype=[("x", np.float64), ("y", np.int32)]),
    ],
    ids=["int8", "float32-2d", "complex-fortran", "strided-view", "bool", "structured"],
)
def test_any_dtype_and_layout_arrives_intact(array: Any) -> None:
    echoed = workpool.map(np.copy, [array], backend="process", share_threshold=1024)[0]
    assert echoed.dtype == array.dtype
    assert echoed.shape == array.shape
    assert (echoed == array).all()


class Tagged(np.ndarray):  # type: ignore[type-arg]
    """A subclass of a user's own that pickles as NumPy pickles every ndarray."""


def kind_and_owner(array: Any) -> tuple[str, str]:
    return type(array).__name__, describe(array)[1]


def sum_of_field_x(records: Any) -> float:
    return float(records.x.sum())  # a recarray's fields are attributes


def records_of(size: int) -> Any:
    records = workpool.zeros(size, dtype=[("x", np.float64), ("y", np.int32)])
    records["x"] = 1.0
    return records.view(np.recarray)


@pytest.mark.parametrize(
    "array",
    [
        np.rec.array(np.ones(200_000, dtype=[("x", np.float64), ("y", np.int32)])),
        np.arange(300_000, dtype=np.float64).reshape(500, 600).view(Tagged),
    ],
    ids=["recarray", "own-subclass"],
)
def test_ndarray_subclasses_travel_in_shared_memory_as_their_own_class(array: Any) -> None:
    # As pickle sends them, only without the copy: a recarray whose fields a task reads
    # as attributes, a class of the program's own with its methods.
    kind = type(array).__name__
    seen = workpool.map(kind_and_owner, [array], backend="process", share_threshold=1024)
    assert seen == [(kind, "Segment")]
    echoed = workpool.map(np.copy, [array], backend="process", share_threshold=1024)[0]
    assert type(echoed) is np.ndarray  # np.copy makes a plain array, here as anywhere
    shared = workpool.share(array)
    assert type(shared) is type(array)
    assert (shared == array).all()
    assert workpool.map(kind_and_owner, [shared], backend="process") == [(kind, "Segment")]


def test_a_recarray_arrives_with_its_fields_as_attributes_and_comes_back_as_one() -> None:
    records = np.rec.array(np.ones(200_000, dtype=[("x", np.float64), ("y", np.int32)]))
    assert workpool.map(sum_of_field_x, [records], backend="process") == [200_000.0]
    made = workpool.map(records_of, [200_000], backend="process", share_threshold=1024)[0]
    assert type(made) is np.recarray
    assert describe(made)[1] == "Segment"
    assert made.x.sum() == 200_000.0


def count_masked(array: Any) -> tuple[str, int]:
    return type(array).__name__, int(np.ma.count_masked(array))


def masked_summary(array: Any, part: int) -> tuple[str, int, float, Any]:
    return (
        type(array).__name__,
        int(np.ma.count_masked(array)),
        float(array.fill_value),
        describe(array.data)[2],
    )


def test_a_big_masked_array_reaches_workers_in_shared_memory_once_per_call() -> None:
    # Its data and mask are two arrays that pickle as one, by value: a 100 MB one was
    # pickled for every chunk (16 tasks: 14.6 s, against 0.47 s for its data alone).
    values = np.arange(MB, dtype=np.float64)  # 8 MB
    masked = np.ma.masked_array(values, mask=values % 3 == 0, fill_value=-1.0)
    seen = workpool.map(
        masked_summary, itertools.repeat(masked, 4), range(4), backend="process", chunksize=1
    )
    assert {summary[:3] for summary in seen} == {("MaskedArray", (MB + 2) // 3, -1.0)}
    assert len({summary[3] for summary in seen}) == 1 and seen[0][3] is not None
    whole = np.ma.masked_array(values)  # no mask at all: none is masked there either
    assert workpool.map(masked_summary, [whole], [0], backend="process")[0][1] == 0


def test_a_masked_array_keeps_its_mask_on_the_way_there_and_back() -> None:
    values = np.arange(300_000, dtype=np.float64)
    masked = np.ma.masked_array(values, mask=values % 3 == 0)
    seen = workpool.map(count_masked, [masked], backend="process", share_threshold=1024)
    assert seen == [("MaskedArray", 100_000)]
    echoed = workpool.map(np.ma.copy, [masked], backend="process", share_threshold=1024)[0]
    assert isinstance(echoed, np.ma.MaskedArray)
    assert (echoed.mask == masked.mask).all()
    assert (echoed.data == values).all()
    with pytest.raises(TypeError, match="MaskedArray"):
        workpool.share(masked)


def mark_done(masked: Any, index: int) -> None:
    masked[index] = index + 1


def test_a_small_masked_array_over_shared_memory_travels_in_it() -> None:
    # Below share_threshold a MaskedArray was pickled whole, even over a writable
    # share: the workers wrote into copies, and the caller saw none of it.
    out = workpool.zeros(8, writable=True)
    masked = np.ma.masked_array(out, mask=np.zeros(8, dtype=bool))
    workpool.map(mark_done, itertools.repeat(masked, 8), range(8), backend="process")
    assert out.tolist() == [float(i + 1) for i in range(8)]
    shared = workpool.share(np.arange(10.0))
    seen = workpool.map(masked_summary, [np.ma.masked_array(shared)], [0], backend="process")
    assert seen[0][3] == describe(shared)[2]  # the same memory, not a copy


def test_object_arrays_fall_back_to_pickling() -> None:
    objects = np.array([{"a": i} for i in range(50_000)], dtype=object)
    echoed = workpool.map(lambda a: a[-1], [objects], backend="process", share_threshold=1024)
    assert echoed == [{"a": 49_999}]


def where_and_sum(array: Any) -> tuple[tuple[int, int] | None, float]:
    return describe(array)[2], float(array.sum())


def sums(arrays: tuple[Any, ...]) -> list[float]:
    return [float(array.sum()) for array in arrays]


def test_a_read_only_memmap_reaches_workers_as_its_file_not_a_copy(tmp_path: Path) -> None:
    # As joblib sends one: a file larger than memory would otherwise be read whole
    # into shared memory for every call (a 1 GiB file took 1.7 s a submit).
    path = tmp_path / "data.f8"
    np.arange(1_000_000, dtype=np.float64).tofile(path)
    the_file = (os.stat(path).st_dev, os.stat(path).st_ino)
    whole = np.memmap(path, dtype=np.float64, mode="r")
    past_a_header = np.memmap(path, dtype=np.float64, mode="r", offset=8 * 70_000)
    the_start = np.memmap(path, dtype=np.float64, mode="r", shape=(200_000,))
    views = [whole, whole[::-3], np.asarray(whole)[1000:], past_a_header, past_a_header[5:]]
    seen = workpool.map(where_and_sum, views, backend="process", share_threshold=1024)
    assert seen == [(the_file, float(view.sum())) for view in views]
    # Two memmaps of one file, over different parts of it, in one message:
    both = workpool.map(sums, [(the_start, past_a_header)], backend="process")[0]
    assert both == [float(the_start.sum()), float(past_a_header.sum())]
    del whole, past_a_header, the_start, views


def test_a_memmap_the_caller_may_write_or_whose_file_is_gone_is_copied(tmp_path: Path) -> None:
    # Mode r+ (or copy-on-write c): the caller may change it while the call runs, so
    # the tasks get a copy of it as it is now, as for any other array.
    path = tmp_path / "data.f8"
    np.zeros(500_000, dtype=np.float64).tofile(path)
    the_file = (os.stat(path).st_dev, os.stat(path).st_ino)
    for mode in ("r+", "c"):
        array = np.memmap(path, dtype=np.float64, mode=mode)
        array[0] = 1.0
        where, total = workpool.map(where_and_sum, [array], backend="process")[0]
        assert where != the_file
        assert total == 1.0
        del array
    orphan = np.memmap(path, dtype=np.float64, mode="r")
    path.unlink()  # its file can no longer be opened by name: it is copied instead
    assert workpool.map(where_and_sum, [orphan], backend="process")[0][1] == 1.0
    del orphan


def test_a_memmap_whose_file_was_replaced_sends_what_it_maps(tmp_path: Path) -> None:
    # Saving a new array to the same path makes a new file there: the memmap still
    # maps the old one, and the tasks must see what the caller sees through it.
    path = tmp_path / "data.f8"
    np.full(300_000, 1.0).tofile(path)
    array = np.memmap(path, dtype=np.float64, mode="r")
    replacement = tmp_path / "new.f8"
    np.full(300_000, 2.0).tofile(replacement)
    os.replace(replacement, path)
    where, total = workpool.map(where_and_sum, [array], backend="process")[0]
    assert total == float(array.sum()) == 300_000.0
    assert where != (os.stat(path).st_dev, os.stat(path).st_ino)
    del array


def test_big_results_come_back_in_shared_memory_and_writable() -> None:
    result = workpool.map(make_array, [3 * MB], backend="process")[0]
    assert result[-1] == 3 * MB - 1
    assert result.flags.writeable
    assert describe(result)[1] == "Segment"
    result[0] = -1  # it is the caller's own array now


@pytest.mark.parametrize(
    ("how", "count"), [("share", 10), ("share", 400_000), ("automatic", 400_000)]
)
def test_an_argument_handed_back_is_the_callers_own_writable_array(how: str, count: int) -> None:
    # It reached the worker read-only because it travelled in shared memory; returned
    # (here, a view of it), it is a result like any other: writable, and not an alias.
    array = np.arange(count, dtype=np.float64)  # 80 bytes, or 3.2 MB: shared automatically
    argument = workpool.share(array) if how == "share" else array
    result = workpool.map(lambda a: a[1:], [argument], backend="process")[0]
    assert result[0] == 1
    assert result.flags.writeable
    result[0] = -1
    assert argument[1] == 1
    assert array[1] == 1


@pytest.mark.parametrize("count", [10, 400_000])
def test_a_fortran_ordered_argument_handed_back_keeps_its_order(count: int) -> None:
    # As pickle brings an array back, and as share() makes one: in Fortran order still,
    # the layout the caller's code (a LAPACK call, an order="F" reshape) relies on.
    array = np.asfortranarray(np.arange(2 * count, dtype=np.float64).reshape(count, 2))
    result = workpool.map(lambda a: a, [workpool.share(array)], backend="process")[0]
    assert result.flags.f_contiguous and not result.flags.c_contiguous
    assert np.array_equal(result, array)
    assert result.flags.writeable


def test_segments_are_released_after_errors_and_crashes() -> None:
    from faults import die

    big = np.zeros(2 * MB // 8)

    def fail(array: Any, i: int) -> float:
        if i == 1:
            raise ValueError("no")
        if i == 2:
            die("sigkill")
        return float(array.sum())

    results = workpool.map(
        fail, itertools.repeat(big, 4), range(4), backend="process", return_exceptions=True
    )
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], workpool.WorkerCrashed)
    assert results[0] == results[3] == 0.0
    # Fail fast: whichever failure is seen first is raised.
    with pytest.raises((ValueError, workpool.WorkerCrashed)):
        workpool.map(fail, itertools.repeat(big, 4), range(4), backend="process")


def test_pool_calls_share_too() -> None:
    big = np.ones(2 * MB // 8)
    with workpool.Pool(2, backend="process") as pool:
        assert pool.submit(part_sum, big, 0, 1).result(timeout=30) == len(big)
        assert sum(pool.starmap(part_sum, [(big, i) for i in range(8)])) == len(big)
        assert pool.submit(describe, big).result(timeout=30)[1] == "Segment"


def write_all(arrays: list[Any], value: float) -> int:
    for array in arrays:
        array[0] = value
    return len(arrays)


def test_writable_shares_stay_shared_past_one_message_worth() -> None:
    from workpool.sharing import MAX_FDS_PER_FRAME

    many = [workpool.share(np.zeros(4), writable=True) for _ in range(MAX_FDS_PER_FRAME + 10)]
    # Each task holds one: a chunk of them all would need too many descriptors at once.
    workpool.map(
        write_all,
        [[a] for a in many],
        itertools.repeat(7.0),
        backend="process",
        chunksize=len(many),
    )
    assert all(a[0] == 7.0 for a in many)
    # One task holding them all cannot be sent by reference: it fails, saying why.
    result = workpool.map(write_all, [many], [1.0], backend="process", return_exceptions=True)
    assert isinstance(result[0], workpool.WorkpoolError)  # the library's own error
    assert isinstance(result[0], ValueError)  # about what the task was given
    assert "shared-memory objects" in str(result[0])


def total_of(arrays: dict[str, Any]) -> float:
    return sum(float(array.sum()) for array in arrays.values())


def test_one_task_can_take_more_large_arrays_than_one_message_carries() -> None:
    # A model's 300 weight arrays, in one dict: pickle sends them all; shared memory
    # takes what one message can carry, and the rest go by value, not a failure.
    from workpool.sharing import MAX_FDS_PER_FRAME

    count = MAX_FDS_PER_FRAME + 50
    weights = {f"w{i}": np.ones(1024) for i in range(count)}  # 8 KB each
    shared = {name: workpool.share(array) for name, array in weights.items()}
    for arrays in (weights, shared):
        totals = workpool.map(total_of, [arrays, arrays], backend="process", share_threshold=4096)
        assert totals == [count * 1024.0] * 2
    with workpool.Pool(1) as pool:
        assert pool.submit(total_of, shared).result(timeout=30) == count * 1024.0


def many_made_in_shared_memory(count: int) -> list[Any]:
    made = [workpool.zeros(1024) for _ in range(count)]
    for value, array in enumerate(made):
        array[:] = value
    return made


def test_one_task_can_return_more_large_arrays_than_one_message_carries() -> None:
    from workpool.sharing import MAX_FDS_PER_FRAME

    count = MAX_FDS_PER_FRAME + 50
    made = workpool.map(
        many_made_in_shared_memory, [count], backend="process", share_threshold=4096
    )[0]
    assert [int(array[-1]) for array in made] == list(range(count))
    assert all(array.flags.writeable for array in made)


def test_sharing_survives_arguments_that_need_cloudpickle() -> None:
    out = workpool.share(np.zeros(8), writable=True)
    workpool.map(
        lambda pair: pair[0].__setitem__(pair[1], 8.0), [(out, 3), (out, 5)], backend="process"
    )
    assert out[3] == out[5] == 8.0
    big = np.ones(2 * MB // 8)
    with_closure = (big, lambda: None)  # the lambda makes plain pickle refuse the item
    assert workpool.map(lambda item: describe(item[0])[1], [with_closure], backend="process") == [
        "Segment"
    ]


def test_a_long_lived_pool_keeps_no_array_it_was_given() -> None:
    """A service keeps one pool and submits big arrays for ever: memory stays flat.

    Each submitted task's shared copy must go once its Future is done, not when the
    pool shuts down; else every call keeps 16 MB and two descriptors.
    """
    me = psutil.Process()
    size = 16 * MB

    def submit_one(pool: workpool.Pool, value: int) -> None:
        array = np.full(size // 8, value, dtype=np.float64)
        assert pool.submit(first_value, array).result(timeout=60) == value

    with workpool.Pool(2, backend="process") as pool:
        for value in range(4):  # workers started, allocator warmed up
            submit_one(pool, value)
        gc.collect()
        rss, fds = me.memory_info().rss, me.num_fds()
        for value in range(40):
            submit_one(pool, value)
        gc.collect()
        grown = me.memory_info().rss - rss
        assert grown < 4 * size, f"40 calls of 16 MB left {grown / MB:.0f} MB behind"
        assert me.num_fds() - fds <= 2, f"descriptors went from {fds} to {me.num_fds()}"


def wait_for_file(path: str) -> bool:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_cancelled_submissions_let_their_arrays_go(tmp_path: Path) -> None:
    me = psutil.Process()
    go = tmp_path / "go"
    with workpool.Pool(1, backend="process") as pool:
        assert pool.submit(first_value, np.zeros(4)).result(timeout=30) == 0
        gc.collect()
        fds = me.num_fds()
        blocker = pool.submit(wait_for_file, str(go))
        futures = [pool.submit(first_value, np.full(2 * MB // 8, i)) for i in range(6)]
        # The one worker holds the blocker and at most one more: the rest are pending.
        cancelled = [future for future in futures if future.cancel()]
        assert len(cancelled) >= 4
        go.touch()
        assert blocker.result(timeout=30)
        done, _ = concurrent.futures.wait(futures, timeout=30)
        assert len(done) == len(futures)
        # One more task after them: the engine has passed the cancelled ones by.
        assert pool.submit(first_value, np.ones(4)).result(timeout=30) == 1
        gc.collect()
        assert me.num_fds() - fds <= 2, f"descriptors went from {fds} to {me.num_fds()}"


# --- when shared memory cannot be made ----------------------------------------------------


@pytest.fixture
def no_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new segment fails as it does when the process is out of descriptors."""
    from workpool import segments

    def refuse(size: int, *, writable_in_workers: bool) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(segments, "new_segment", refuse)


def first_of_pair(pair: tuple[Any, Any]) -> float:
    return float(pair[0][0])


@pytest.mark.usefixtures("no_shared_memory")
def test_arrays_are_copied_with_one_warning_when_shared_memory_cannot_be_made() -> None:
    arrays = [np.full(2 * MB // 8, value) for value in range(3)]
    with pytest.warns(workpool.SharedMemoryWarning, match="Too many open files") as caught:
        assert workpool.map(first_value, arrays, backend="process", chunksize=1) == [0, 1, 2]
    warned = [w for w in caught if w.category is workpool.SharedMemoryWarning]
    assert len(warned) == 1
    assert warned[0].filename == __file__  # the line that called workpool, not its own
    pool = workpool.Pool(1, backend="process")
    with pool, pytest.warns(workpool.SharedMemoryWarning) as caught:
        assert pool.submit(first_value, arrays[2]).result(timeout=30) == 2
    assert caught[0].filename == __file__


@pytest.mark.usefixtures("no_shared_memory")
def test_a_worker_that_cannot_share_its_results_says_they_are_copied_to_the_caller() -> None:
    # Its warning reaches the program's stderr: it said the arrays went "to the workers".
    from workpool.sharing import SharingContext

    results = SharingContext(DEFAULT_THRESHOLD, writable=True)  # as a worker's results
    with pytest.warns(workpool.SharedMemoryWarning, match="copied back to the caller instead"):
        assert results.shared_copy(np.ones(2 * MB // 8)) is None


@pytest.mark.usefixtures("no_shared_memory")
def test_a_call_that_could_not_share_lets_its_arrays_go_without_waiting_for_gc() -> None:
    # Out of descriptors, the memory of a call's arrays (and the descriptors of those
    # it did share) must go when the call does: a reference cycle through the error it
    # kept would hold them until the cyclic collector happened to run, and the next
    # call would find no descriptor either.
    arrays = [np.full(2 * MB // 8, value) for value in range(2)]
    watched = [weakref.ref(array) for array in arrays]
    gc.disable()
    try:
        with pytest.warns(workpool.SharedMemoryWarning):
            assert workpool.map(first_value, arrays, backend="process") == [0, 1]
        del arrays
        assert wait_for(lambda: all(ref() is None for ref in watched), timeout=5)
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_shared_memory")
def test_a_task_that_can_be_neither_shared_nor_copied_fails_with_the_os_error() -> None:
    from helpers import Unpicklable

    big = np.ones(2 * MB // 8)
    pairs = [(big, 1), (big, Unpicklable())]
    with pytest.warns(workpool.SharedMemoryWarning):
        results = workpool.map(
            first_of_pair, pairs, backend="process", chunksize=2, return_exceptions=True
        )
    assert results[0] == 1.0
    assert isinstance(results[1], OSError)
    assert results[1].errno == errno.EMFILE
    assert "copying" in "".join(getattr(results[1], "__notes__", []))
    with workpool.Pool(1, backend="process") as pool, pytest.warns(workpool.SharedMemoryWarning):
        error = pool.submit(first_of_pair, pairs[1]).exception(timeout=30)
    assert isinstance(error, OSError)
    assert error.errno == errno.EMFILE


# A process whose descriptor table is full receives a message with shared memory:
# the system gives it what it has room for and closes the rest. The next message's
# descriptors, arriving once there is room again, must stay that message's.
CUT_SHORT_RECEIVE = textwrap.dedent(
    """
    import os, resource
    from workpool.backends.process.framing import FrameReader, send_frame
    from workpool.backends.process.unix_sockets import pair

    ours, theirs = pair()
    sent = [os.memfd_create(f"frame-{i}") for i in range(5)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(sent) + 40, hard))
    filler = []
    while True:
        try:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    os.close(filler.pop())  # room for one descriptor
    reader = FrameReader(theirs)
    send_frame(ours, b"first", fds=sent[:3])
    frames = reader.read(wait=True)
    for fd in filler[:10]:
        os.close(fd)
    send_frame(ours, b"second", fds=sent[3:])
    while len(frames) < 2:
        frames += reader.read(wait=True)
    first, second = reader.take_fds(3), reader.take_fds(2)
    inode = lambda fd: os.fstat(fd).st_ino
    print(len(first), [inode(fd) for fd in second] == [inode(fd) for fd in sent[3:]])
    """
)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd is Linux's")
def test_a_message_whose_descriptors_were_cut_short_does_not_take_the_next_ones() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CUT_SHORT_RECEIVE], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["1", "True"], done.stderr[-2000:]


# --- workers forked while the program imports -------------------------------------------

# Another thread of the program is in the middle of its first import of ``resource``
# (it holds that module's import lock) while a pool forks its workers. A worker
# inherits the lock held by a thread it does not have: were it to import ``resource``
# itself, it would wait for ever. Once in every twenty runs or so, the caller's own
# thread was that thread, importing it for the first segment it made.
FORKED_WHILE_IMPORTING = textwrap.dedent(
    """
    import os, sys, threading
    import numpy as np
    import workpool

    with workpool.Pool(1, start_method="fork") as pool:  # a program that has used one
        pool.submit(abs, -1).result(timeout=60)
    importing, imported = threading.Event(), threading.Event()

    class HoldTheImport:  # the import waits in the loader, holding the module's lock
        def find_spec(self, name, path=None, target=None):
            if name != "resource" or threading.current_thread().name != "importer":
                return None
            others = [finder for finder in sys.meta_path if finder is not self]
            spec = next(filter(None, (f.find_spec(name, path, target) for f in others)))
            spec.loader = HeldLoader(spec.loader)
            return spec

    class HeldLoader:
        def __init__(self, loader):
            self.loader = loader

        def create_module(self, spec):
            importing.set()
            imported.wait()
            return self.loader.create_module(spec)

        def exec_module(self, module):
            self.loader.exec_module(module)

    if "resource" not in sys.modules:  # else no first import of it can be under way
        sys.meta_path.insert(0, HoldTheImport())
        threading.Thread(target=__import__, args=("resource",), name="importer").start()
        importing.wait()
    with workpool.Pool(1, start_method="fork") as pool:
        try:
            pool.submit(abs, -1).result(timeout=20)  # its worker forked amid that import
            imported.set()
            print(pool.submit(np.sum, np.ones(1 << 18)).result(timeout=20))  # shared memory
        except TimeoutError:
            os._exit(3)  # the worker waits on the lock: so would the pool's shutdown
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_worker_forked_while_the_program_imports_does_not_wait_on_its_import_lock() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORKED_WHILE_IMPORTING],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, f"{float(1 << 18)}\n"), done.stderr[-3000:]


# Shares small arrays until the process runs out of descriptors, under a low limit.
SHARED_UNTIL_OUT_OF_DESCRIPTORS = textwrap.dedent(
    """
    import errno, resource
    import numpy as np
    import workpool

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    kept = []
    try:
        while True:
            kept.append(workpool.share(np.arange(10)))
    except OSError as error:
        assert error.errno == errno.EMFILE, error
        print(len(kept) > 10, error)
    """
)


def test_sharing_past_the_descriptor_limit_says_that_shared_memory_holds_them() -> None:
    # Thousands of small shared arrays end in the system's bare "Too many open files".
    done = subprocess.run(
        [sys.executable, "-c", SHARED_UNTIL_OUT_OF_DESCRIPTORS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("True [Errno 24] Too many open files: "), done.stdout
    assert "each object in shared memory that it holds" in done.stdout
