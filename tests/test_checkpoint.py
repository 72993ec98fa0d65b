"""checkpoint=: a call killed or stopped half-way continues where it stopped.

Every test counts how often each input position ran (``checkpoint_tasks`` leaves a
mark per call), so "runs only what is missing" is checked, not assumed. The journal
on its own is tested in ``test_journal``.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

import workpool
import workpool.progress
from checkpoint_tasks import (
    Parcel,
    Unprintable,
    calls,
    fails_while_flagged,
    held_square,
    interrupted_while_flagged,
    logged_add,
    logged_arguments,
    logged_cube,
    logged_square,
    mark_seen,
    mark_seen_fail_on_3,
    note_start,
    slow_logged_square,
    unprintable_on_3,
    wandering_square,
    worker_pids,
)
from conftest import BACKENDS, wait_for
from workpool.checkpoint import summary

TESTS = Path(__file__).resolve().parent


class Run:
    """One test's checkpoint file, mark directory and items."""

    def __init__(self, tmp_path: Path, count: int = 100) -> None:
        self.path = str(tmp_path / "run.ckpt")
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.items = [(x, str(self.marks)) for x in range(count)]
        self.expected = [x * x for x in range(count)]

    def calls(self) -> dict[int, int]:
        return dict(calls(self.marks))

    def journaled(self) -> set[int]:
        return {p for first, last in summary(self.path).ranges for p in range(first, last + 1)}


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def window_items(workers: int, chunksize: int) -> int:
    """The most items a call has in flight (run.py: two chunks per worker, plus two)."""
    return (2 * workers + 2) * chunksize


# --- every backend: map, imap, Pool ------------------------------------------------------


def test_a_finished_call_runs_nothing_again(backend: str, run: Run) -> None:
    assert workpool.map(logged_square, run.items, backend=backend, checkpoint=run.path) == (
        run.expected
    )
    assert run.calls() == dict.fromkeys(range(100), 1)
    assert workpool.map(logged_square, run.items, backend=backend, checkpoint=run.path) == (
        run.expected
    )
    unordered = workpool.imap(
        logged_square, run.items, backend=backend, ordered=False, checkpoint=run.path
    )
    assert sorted(unordered) == run.expected
    with workpool.Pool(2, backend=backend) as pool:
        assert list(pool.map(logged_square, run.items, checkpoint=run.path)) == run.expected
        assert list(pool.imap(logged_square, run.items, checkpoint=run.path)) == run.expected
    assert run.calls() == dict.fromkeys(range(100), 1)  # nothing ran a second time


def test_a_resume_with_nothing_left_starts_no_worker_process(run: Run, tmp_path: Path) -> None:
    # A finished run's results come from the file alone: no worker process starts
    # (each would run the initializer), which is what makes such a call cheap.
    starts = tmp_path / "starts"
    starts.mkdir()
    options: dict[str, Any] = {
        "backend": "process",
        "checkpoint": run.path,
        "initializer": note_start,
        "initargs": (str(starts),),
    }
    assert workpool.map(logged_square, run.items, **options) == run.expected
    assert os.listdir(starts)  # the first call prepared its workers
    for name in os.listdir(starts):
        os.unlink(starts / name)
    assert workpool.map(logged_square, run.items, **options) == run.expected
    assert list(workpool.imap(logged_square, run.items, **options)) == run.expected
    assert os.listdir(starts) == []
    assert run.calls() == dict.fromkeys(range(100), 1)


def test_pool_starmap_and_zipped_inputs_resume(backend: str, tmp_path: Path) -> None:
    marks = str(tmp_path / "marks")
    os.mkdir(marks)
    args = [(x, 1, marks) for x in range(30)]
    with workpool.Pool(2, backend=backend) as pool:
        path = str(tmp_path / "star.ckpt")
        assert pool.starmap(logged_add, args, checkpoint=path) == [x + 1 for x in range(30)]
        assert pool.starmap(logged_add, args, checkpoint=path) == [x + 1 for x in range(30)]
    zipped = str(tmp_path / "zip.ckpt")
    columns = (range(30), [1] * 30, [marks] * 30)
    assert workpool.map(logged_add, *columns, backend=backend, checkpoint=zipped) == [
        x + 1 for x in range(30)
    ]
    assert workpool.map(logged_add, *columns, backend=backend, checkpoint=zipped) == [
        x + 1 for x in range(30)
    ]
    assert calls(marks) == dict.fromkeys(range(30), 2)  # once per checkpoint file


def test_pool_map_with_a_buffersize_resumes(backend: str, run: Run, tmp_path: Path) -> None:
    # Such a map reads its first window of items when it is called, before anyone
    # iterates: those reads went around the checkpoint, which then disagreed with the
    # run (an AssertionError on a new file, a CheckpointMismatch at position 0 on resume).
    (tmp_path / "other").mkdir()
    other = Run(tmp_path / "other", 40)
    with workpool.Pool(2, backend=backend) as pool:
        first = pool.map(logged_square, other.items, checkpoint=other.path, buffersize=10)
        assert list(first) == other.expected
        results = pool.imap(logged_square, run.items, checkpoint=run.path, chunksize=4)
        assert list(itertools.islice(results, 30)) == run.expected[:30]
        results.close()
        done, before = run.journaled(), run.calls()
        again = pool.map(logged_square, run.items, checkpoint=run.path, buffersize=10)
        assert list(again) == run.expected
    assert other.journaled() == set(range(40))
    assert run.journaled() == set(range(len(run.items)))
    ran_again = {p for p, n in run.calls().items() if n > before.get(p, 0)}
    assert ran_again == set(range(len(run.items))) - done


def test_pool_map_with_a_buffersize_yields_what_came_before_a_mismatch(
    backend: str, tmp_path: Path
) -> None:
    # Such a map reads on just before it hands a result over: a mismatch found in that
    # read is raised when the caller asks for the result at its position, not before.
    path = tmp_path / "run.ckpt"
    with workpool.Pool(2, backend=backend) as pool:
        assert list(pool.map(operator.neg, [1, 2, 3, 4], checkpoint=path, buffersize=1)) == [
            -1,
            -2,
            -3,
            -4,
        ]
        again = pool.map(operator.neg, [1, 2, 99, 4], checkpoint=path, buffersize=1)
        assert [next(again), next(again)] == [-1, -2]
        with pytest.raises(workpool.CheckpointMismatch, match="position 2"):
            next(again)


def test_a_starmap_checkpoint_is_refused_to_a_map_of_the_same_items(run: Run) -> None:
    # Same function, same items: map passes each item whole, starmap unpacks it,
    # so the results differ; the journal's must not stand for the other call's.
    items = run.items[:20]
    assert workpool.starmap(logged_arguments, items, backend="thread", checkpoint=run.path) == (
        items
    )
    before = run.calls()
    with pytest.raises(workpool.CheckpointMismatch, match="by starmap"):
        workpool.map(logged_arguments, items, backend="thread", checkpoint=run.path)
    with workpool.Pool(2, backend="thread") as pool, pytest.raises(workpool.CheckpointMismatch):
        pool.map(logged_arguments, items, checkpoint=run.path)
    assert run.calls() == before
    # Several iterables are zipped and unpacked, as starmap's items are: it resumes.
    columns = ([x for x, _ in items], [marks for _, marks in items])
    again = workpool.map(logged_arguments, *columns, backend="thread", checkpoint=run.path)
    assert again == items
    assert run.calls() == before


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_imap_closed_early_resumes_with_exact_results(
    backend: str, run: Run, ordered: bool
) -> None:
    workers, chunksize = 2, 4
    options: dict[str, Any] = {
        "backend": backend,
        "workers": workers,
        "chunksize": chunksize,
        "ordered": ordered,
        "checkpoint": run.path,
    }
    results = workpool.imap(logged_square, run.items, **options)
    first = list(itertools.islice(results, 30))
    results.close()
    assert run.journaled() >= {x for x in range(100) if x * x in first}  # handed out: kept

    resumed = list(workpool.imap(logged_square, run.items, **options))
    if ordered:
        assert first == run.expected[:30]
        assert resumed == run.expected
    else:
        assert sorted(resumed) == run.expected
    ran = run.calls()
    assert set(ran) == set(range(100))
    again = [x for x, n in ran.items() if n > 1]
    assert len(again) <= window_items(workers, chunksize)  # only what was in flight


def test_a_generator_input_resumes(run: Run) -> None:
    results = workpool.imap(
        logged_square, (item for item in run.items), backend="thread", checkpoint=run.path
    )
    assert list(itertools.islice(results, 10)) == run.expected[:10]
    results.close()
    again = workpool.imap(
        logged_square, (item for item in run.items), backend="thread", checkpoint=run.path
    )
    assert list(again) == run.expected


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_generator_used_up_by_an_earlier_call_is_pointed_out(
    backend: str, run: Run, tmp_path: Path
) -> None:
    # Calling again with the same generator object (a retry in the same program) reads
    # nothing: the call returns nothing, as without a checkpoint, but a journal full of
    # results met by an empty input is said to be probably that mistake.
    items = (item for item in run.items)
    assert workpool.map(logged_square, items, backend=backend, checkpoint=run.path) == (
        run.expected
    )
    for again in (
        lambda: workpool.map(logged_square, items, backend=backend, checkpoint=run.path),
        lambda: list(workpool.imap(logged_square, items, backend=backend, checkpoint=run.path)),
    ):
        with pytest.warns(RuntimeWarning, match="holds the results of 100 items") as caught:
            assert again() == []
        assert run.path in str(caught[0].message)
        assert "generator" in str(caught[0].message)
        assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an input that yields something: not a word
        assert workpool.map(logged_square, run.items[:5], checkpoint=run.path) == (run.expected[:5])
        assert workpool.map(logged_square, [], checkpoint=str(tmp_path / "new.ckpt")) == []
    assert run.calls() == dict.fromkeys(range(100), 1)


def test_a_set_whose_order_changes_between_runs_is_refused_at_once(run: Run) -> None:
    # A set of strings is iterated in another order in each run of a program (their
    # hashes are seeded per process): a checkpoint of one could never be resumed, and
    # the first run would find that out only when it is too late.
    names = {f"file-{x}.txt" for x in range(50)}
    calls_ = [
        lambda: workpool.map(len, names, checkpoint=run.path),
        lambda: list(workpool.imap(len, frozenset(names), checkpoint=run.path)),
        lambda: workpool.map(operator.add, ["a"] * 50, names, checkpoint=run.path),
        lambda: workpool.starmap(operator.add, {("a", n) for n in names}, checkpoint=run.path),
    ]
    for call in calls_:
        with pytest.raises(ValueError, match=r"a set .* sorted\(") as info:
            call()
        assert run.path in str(info.value)
    assert not os.path.exists(run.path)
    # Numbers hash the same in every run: a set of them keeps its order, and resumes.
    numbers = set(range(0, 300, 3))
    assert workpool.map(abs, numbers, checkpoint=run.path) == list(numbers)
    assert workpool.map(abs, numbers, checkpoint=run.path) == list(numbers)


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_an_input_that_raises_ends_the_call_as_it_would_without_a_checkpoint(
    backend: str, ordered: bool, run: Run
) -> None:
    # Without a checkpoint, the items read before the input raised run and are yielded,
    # then its error is raised; with one, the error came as soon as it was read,
    # dropping results already computed and items already read.
    def items() -> Any:
        yield from run.items[:30]
        raise RuntimeError("the input broke")

    got = []
    results = workpool.imap(
        logged_square, items(), backend=backend, ordered=ordered, checkpoint=run.path
    )
    with pytest.raises(RuntimeError, match="the input broke") as info:
        got.extend(results)
    assert sorted(got) == run.expected[:30]
    assert "workpool: raised by the input, after its first 30 items" in info.value.__notes__
    assert run.journaled() == set(range(30))
    again = workpool.map(logged_square, run.items, backend=backend, checkpoint=run.path)
    assert again == run.expected
    assert run.calls() == dict.fromkeys(range(100), 1)


@pytest.mark.parametrize("backend", ["serial", "thread"])
def test_relative_paths_stay_where_the_call_began_when_the_function_changes_directory(
    run: Run, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The journal's writer opens the file once the first results are in, and the trace
    # is written at the end: both after the function had moved the process elsewhere.
    monkeypatch.chdir(tmp_path)
    options: dict[str, Any] = {"backend": backend, "chunksize": 5}
    got = workpool.map(
        wandering_square, run.items, checkpoint="run.ckpt", trace="run.json", **options
    )
    assert got == run.expected
    assert (tmp_path / "run.ckpt").is_file() and (tmp_path / "run.json").is_file()
    assert not {"run.ckpt", "run.json"} & set(os.listdir(run.marks))
    os.chdir(tmp_path)
    assert workpool.map(wandering_square, run.items, checkpoint="run.ckpt", **options) == (
        run.expected
    )
    assert run.calls() == dict.fromkeys(range(len(run.items)), 1)


# --- backend="auto" --------------------------------------------------------------------------


def test_auto_journals_the_items_it_measures(run: Run) -> None:
    assert workpool.map(logged_square, run.items, checkpoint=run.path) == run.expected
    assert run.journaled() == set(range(100))
    assert workpool.map(logged_square, run.items, checkpoint=run.path) == run.expected
    assert run.calls() == dict.fromkeys(range(100), 1)


def test_auto_closed_early_resumes(run: Run) -> None:
    results = workpool.imap(logged_square, run.items, checkpoint=run.path, chunksize=4)
    assert list(itertools.islice(results, 5)) == run.expected[:5]
    results.close()
    assert list(workpool.imap(logged_square, run.items, checkpoint=run.path)) == run.expected
    assert set(run.calls()) == set(range(100))


def test_auto_interrupted_while_it_measures_keeps_what_it_measured(run: Run) -> None:
    # Ctrl+C in item 40 of a tiny map, while auto still times the first items inline
    # (in groups of 1, 2, 4, ...): everything finished before it was lost, and ran again
    # on resume, where every engine loses only what is in flight (here, the group of
    # items that item 40 was in).
    flag = run.marks.parent / "interrupt"
    flag.touch()
    with pytest.raises(KeyboardInterrupt):
        workpool.map(interrupted_while_flagged, run.items, checkpoint=run.path)
    kept = len(run.journaled())
    assert 0 < kept <= 40 and run.journaled() == set(range(kept))
    ran_before = run.calls()
    flag.unlink()
    assert workpool.map(interrupted_while_flagged, run.items, checkpoint=run.path) == run.expected
    assert run.calls() == {x: 2 if x in ran_before and x >= kept else 1 for x in range(100)}
    assert kept > 1  # more than the first item, timed on its own, was kept


def test_a_function_that_changes_its_input_in_place_resumes(tmp_path: Path) -> None:
    # The journal knows each item as the input held it, not as the function left it.
    path = str(tmp_path / "run.ckpt")
    assert workpool.map(mark_seen, [{"x": x} for x in range(50)], checkpoint=path) == (
        list(range(50))
    )
    assert workpool.map(mark_seen, [{"x": x} for x in range(50)], checkpoint=path) == (
        list(range(50))
    )
    # A chunk with a failure is journaled in parts, around it (threads: items shared).
    for backend in ("serial", "thread"):
        path = str(tmp_path / f"{backend}.ckpt")
        options: dict[str, Any] = {"backend": backend, "chunksize": 5, "checkpoint": path}
        for _ in range(2):
            got = workpool.map(
                mark_seen_fail_on_3,
                [{"x": x} for x in range(10)],
                return_exceptions=True,
                **options,
            )
            assert [x for x in got if not isinstance(x, ValueError)] == [0, 1, 2, *range(4, 10)]


# --- what is refused -------------------------------------------------------------------------


def test_a_changed_function_is_refused_before_anything_runs(backend: str, run: Run) -> None:
    workpool.map(logged_square, run.items[:20], backend=backend, checkpoint=run.path)
    before = run.calls()
    with pytest.raises(workpool.CheckpointMismatch, match="logged_square"):
        workpool.map(logged_cube, run.items, backend=backend, checkpoint=run.path)
    results = workpool.imap(logged_cube, run.items, backend=backend, checkpoint=run.path)
    with pytest.raises(workpool.CheckpointMismatch):
        next(results)
    with workpool.Pool(2, backend=backend) as pool, pytest.raises(workpool.CheckpointMismatch):
        pool.map(logged_cube, run.items, checkpoint=run.path)  # at once: map submits now
    assert run.calls() == before


def test_a_read_only_checkpoint_is_refused_before_anything_runs(
    run: Run, make_read_only: Callable[[str], None]
) -> None:
    workpool.map(logged_square, run.items[:20], backend="thread", checkpoint=run.path)
    make_read_only(run.path)
    before = run.calls()
    with pytest.raises(PermissionError, match=f"checkpoint {run.path} cannot be written"):
        workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path)
    assert run.calls() == before


def test_a_damaged_checkpoint_is_refused_before_anything_runs(run: Run) -> None:
    workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path, chunksize=1)
    db = sqlite3.connect(run.path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'done'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(run.path, "r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * 64)
    before = run.calls()
    with pytest.raises(ValueError, match=f"checkpoint {run.path} is damaged"):
        workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path)
    assert run.calls() == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut", [100, 10_000], ids=["last-bytes", "last-10k"])
def test_a_checkpoint_cut_short_is_refused_before_anything_runs(tmp_path: Path, cut: int) -> None:
    # A copy that ran out of room, a file system that lost the file's tail: SQLite
    # reads the cut page as zeros, so rows come back with their values missing and
    # their positions out of order. The next call once raised a TypeError, or read
    # the journal in a loop that never ended.
    run = Run(tmp_path, 3000)
    workpool.map(logged_square, run.items, backend="thread", chunksize=1, checkpoint=run.path)
    with open(run.path, "r+b") as file:
        file.truncate(os.path.getsize(run.path) - cut)
    before = run.calls()
    with pytest.raises(ValueError, match=f"checkpoint {run.path} is damaged"):
        workpool.map(logged_square, run.items, backend="thread", chunksize=1, checkpoint=run.path)
    assert run.calls() == before


def test_results_changed_on_disk_run_again_with_a_warning(run: Run) -> None:
    workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path, chunksize=10)
    db = sqlite3.connect(run.path)
    with db:  # one byte of the results of positions 30..39, as a bad sector changes it
        (results,) = db.execute("SELECT results FROM done WHERE start = 30").fetchone()
        at = len(results) // 2
        changed = results[:at] + bytes([results[at] ^ 1]) + results[at + 1 :]
        db.execute("UPDATE done SET results = ? WHERE start = 30", (changed,))
    db.close()
    with pytest.warns(RuntimeWarning, match=r"positions 30\.\.39 are damaged") as caught:
        got = workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path)
    assert got == run.expected
    assert run.path in str(caught[0].message) and "run again" in str(caught[0].message)
    assert caught[0].filename == __file__  # where the user called, not inside workpool
    assert run.calls() == {x: 2 if 30 <= x < 40 else 1 for x in range(100)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mended: the next resume reads it all
        assert workpool.map(logged_square, run.items, checkpoint=run.path) == run.expected
    assert run.calls() == {x: 2 if 30 <= x < 40 else 1 for x in range(100)}


def test_accept_lets_a_changed_function_keep_the_results(run: Run) -> None:
    workpool.map(logged_square, run.items[:20], backend="thread", checkpoint=run.path)
    workpool.checkpoint.accept(run.path)
    # The journal now belongs to logged_cube, whose results for 0..19 are taken as kept.
    got = workpool.map(logged_cube, run.items[:30], backend="thread", checkpoint=run.path)
    assert got == run.expected[:20] + [x**3 for x in range(20, 30)]


def test_changed_input_is_refused_naming_its_positions(backend: str, run: Run) -> None:
    chunksize = 5
    results = workpool.imap(
        logged_square, run.items, backend=backend, chunksize=chunksize, checkpoint=run.path
    )
    list(itertools.islice(results, 40))
    results.close()
    before = sum(run.calls().values())
    changed = list(run.items)
    changed[12] = (1000, str(run.marks))
    with pytest.raises(workpool.CheckpointMismatch, match=r"positions 10\.\.14"):
        workpool.map(
            logged_square, changed, backend=backend, chunksize=chunksize, checkpoint=run.path
        )
    with workpool.Pool(2, backend=backend) as pool:
        rerun = pool.imap(logged_square, changed, chunksize=chunksize, checkpoint=run.path)
        with pytest.raises(workpool.CheckpointMismatch, match=r"positions 10\.\.14"):
            list(rerun)
    assert sum(run.calls().values()) - before <= window_items(2, chunksize)


def test_paths_and_other_objects_are_compared_by_value(tmp_path: Path) -> None:
    # A directory listing that gained a file: every path after it moved one place.
    path = str(tmp_path / "files.ckpt")
    files = [Path(f"/data/{name}.csv") for name in "acde"]
    assert workpool.map(os.path.basename, files, checkpoint=path) == [
        f"{name}.csv" for name in "acde"
    ]
    with pytest.raises(workpool.CheckpointMismatch, match=r"at positions? [01]\b"):
        workpool.map(os.path.basename, sorted([*files, Path("/data/b.csv")]), checkpoint=path)
    # The same objects, made again, resume: a dataclass is compared by its fields.
    again = str(tmp_path / "objects.ckpt")
    items = [Parcel(i, {f"tag{j}" for j in range(i)}) for i in range(6)]
    assert workpool.map(Parcel.size, items, checkpoint=again) == list(range(6))
    same = [Parcel(i, set(p.tags)) for i, p in enumerate(items)]  # made again
    assert workpool.map(Parcel.size, same, checkpoint=again) == list(range(6))
    items[4] = Parcel(4, {"another"})
    with pytest.raises(workpool.CheckpointMismatch, match=r"at positions? 4"):
        workpool.map(Parcel.size, items, checkpoint=again)


def test_a_shorter_input_is_not_a_mismatch_and_a_longer_one_continues(run: Run) -> None:
    workpool.map(logged_square, run.items[:50], backend="thread", chunksize=10, checkpoint=run.path)
    got = workpool.map(logged_square, run.items[:45], backend="thread", checkpoint=run.path)
    assert got == run.expected[:45]
    got = workpool.map(logged_square, run.items, backend="thread", checkpoint=run.path)
    assert got == run.expected
    ran = run.calls()
    assert all(ran[x] == 1 for x in range(40))  # the rows the short input covered whole
    assert all(ran[x] == 1 for x in range(50, 100))


def test_a_file_in_use_is_busy(run: Run) -> None:
    first = workpool.imap(logged_square, run.items, backend="thread", checkpoint=run.path)
    next(first)
    with pytest.raises(workpool.CheckpointBusy):
        workpool.map(logged_square, run.items, backend="serial", checkpoint=run.path)
    with workpool.Pool(1, backend="serial") as pool, pytest.raises(workpool.CheckpointBusy):
        pool.map(logged_square, run.items, checkpoint=run.path)
    first.close()
    assert workpool.map(logged_square, run.items, backend="serial", checkpoint=run.path) == (
        run.expected
    )


def fill(array: Any, x: int) -> int:
    array[x] = x
    return x


def test_writable_shared_arguments_are_refused_at_once(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = str(tmp_path / "run.ckpt")
    target = workpool.share(np.zeros(4), writable=True)
    with pytest.raises(ValueError, match=r"share\(writable=True\)"):
        workpool.imap(functools.partial(fill, target), range(4), checkpoint=path)
    with workpool.Pool(1, backend="serial") as pool, pytest.raises(ValueError, match="writable"):
        pool.imap(functools.partial(fill, target), range(4), checkpoint=path)
    with pytest.raises(ValueError, match="input at position 0"):
        workpool.starmap(fill, [(target, x) for x in range(4)], checkpoint=path)
    assert not target.any()  # nothing ran
    read_only = workpool.share(np.zeros(4))
    assert workpool.map(np.sum, [read_only], backend="serial", checkpoint=path) == [0.0]


def test_a_checkpoint_and_a_trace_in_one_file_are_refused(run: Run) -> None:
    with pytest.raises(ValueError, match="one file"):
        workpool.map(logged_square, run.items, checkpoint=run.path, trace=run.path)
    with workpool.Pool(1, backend="serial") as pool, pytest.raises(ValueError, match="one file"):
        pool.imap(logged_square, run.items, checkpoint=run.path, trace=run.path)
    assert run.calls() == {}


def test_checkpoint_must_be_a_path() -> None:
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        workpool.map(abs, [1], checkpoint=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint"):
        workpool.map(abs, [1], checkpoint="")


# --- failures are not journaled as done ------------------------------------------------------


def test_failed_items_run_again_on_resume(backend: str, run: Run, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    got = workpool.map(
        fails_while_flagged, run.items, backend=backend, return_exceptions=True, checkpoint=run.path
    )
    failing = [x for x in range(100) if x % 7 == 0]
    assert all(isinstance(got[x], ValueError) for x in failing)
    found = summary(run.path)
    assert (found.items_done, found.failed) == (100 - len(failing), len(failing))

    (tmp_path / "broken").unlink()  # what made them fail is fixed
    assert (
        workpool.map(fails_while_flagged, run.items, backend=backend, checkpoint=run.path)
        == run.expected
    )
    ran = run.calls()
    assert {x for x, n in ran.items() if n == 2} == set(failing)
    assert summary(run.path).failed == 0


def test_a_failure_whose_text_cannot_be_made_still_reaches_the_caller(
    backend: str, tmp_path: Path
) -> None:
    # Noting the failure in the journal called str() on it, and the RuntimeError of a
    # broken __str__ came out of the call in place of the task's own exception.
    path = str(tmp_path / "run.ckpt")
    got = workpool.map(
        unprintable_on_3, range(6), backend=backend, return_exceptions=True, checkpoint=path
    )
    assert isinstance(got[3], Unprintable)
    assert [got[x] for x in (0, 1, 2, 4, 5)] == [0, 1, 4, 16, 25]
    assert (summary(path).items_done, summary(path).failed) == (5, 1)
    with pytest.raises(Unprintable):
        workpool.map(unprintable_on_3, range(6), backend=backend, checkpoint=path)


def test_a_raised_failure_keeps_what_finished(run: Run, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    with pytest.raises(ValueError, match="broken at 14"):
        workpool.map(
            fails_while_flagged, run.items[8:], backend="serial", chunksize=2, checkpoint=run.path
        )
    # Items 8..13 and 15 (positions 0..5 and 7) finished; 14 (position 6) failed; the
    # chunks the serial backend ran after it, before the failure was raised, finished too.
    ran = {x - 8 for x in run.calls()}
    assert {0, 1, 2, 3, 4, 5, 7} < ran
    failed = {p for p in ran if (p + 8) % 7 == 0}
    assert run.journaled() == ran - failed
    assert summary(run.path).failed == len(failed)


def test_results_are_kept_while_the_consumer_is_busy_elsewhere(run: Run) -> None:
    results = workpool.imap(
        logged_square, run.items, backend="thread", workers=2, chunksize=4, checkpoint=run.path
    )
    assert next(results) == 0
    # The consumer does something else now; the window of chunks it was given finishes.
    # A SIGKILL now would lose what is not journaled: all of it must be, consumed or not.
    assert wait_for(lambda: len(run.calls()) >= 20 and run.journaled() == set(run.calls()))
    results.close()


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_pool_map_dropped_unread_still_runs_everything_and_lets_its_files_go(
    run: Run, tmp_path: Path, backend: str
) -> None:
    trace = tmp_path / "t.json"
    with workpool.Pool(2, backend=backend) as pool:
        # Never read, as Executor.map's results often are; slow enough that most items
        # have not started when the iterator is collected.
        pool.map(slow_logged_square, run.items, checkpoint=run.path, trace=trace, chunksize=2)
    assert run.calls() == dict.fromkeys(range(len(run.items)), 1)  # all ran, once
    assert run.journaled() == set(range(len(run.items)))
    assert not json.loads(trace.read_text())["otherData"]["partial"]
    got = workpool.map(slow_logged_square, run.items, backend="serial", checkpoint=run.path)
    assert got == run.expected  # resumed from the file, which was let go: not CheckpointBusy
    assert run.calls() == dict.fromkeys(range(len(run.items)), 1)  # nothing ran again


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_pool_map_dropped_after_its_first_result_ends_and_lets_its_files_go(
    run: Run, tmp_path: Path, backend: str
) -> None:
    # Started, then dropped: the iterator is closed, as Executor.map's is (the chunks
    # not started yet are cancelled); shutdown() and the program's exit must not wait
    # for results nobody takes any more.
    trace = tmp_path / "t.json"
    pool = workpool.Pool(2, backend=backend)
    results = pool.map(slow_logged_square, run.items, checkpoint=run.path, trace=trace, chunksize=2)
    assert next(results) == 0
    del results
    shutting_down = threading.Thread(target=pool.shutdown, daemon=True)
    shutting_down.start()
    shutting_down.join(timeout=30)
    assert not shutting_down.is_alive(), "shutdown() waits for the dropped results for ever"
    assert json.loads(trace.read_text())["otherData"]["partial"]
    assert {0, 1} <= run.journaled() <= set(run.calls())
    got = workpool.map(slow_logged_square, run.items, backend="serial", checkpoint=run.path)
    assert got == run.expected  # resumed from the file, which was let go: not CheckpointBusy


UNREAD_AT_EXIT = """
import sys
sys.path.insert(0, {tests!r})
import workpool
from checkpoint_tasks import slow_logged_square

if __name__ == "__main__":
    items = [(x, sys.argv[2]) for x in range(40)]
    pool = workpool.Pool(2, backend=sys.argv[3])  # never shut down
    pool.map(slow_logged_square, items, checkpoint=sys.argv[1], chunksize=2)  # never read
"""


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_program_that_drops_a_pool_map_unread_waits_for_it_at_exit(
    tmp_path: Path, backend: str
) -> None:
    run = Run(tmp_path, 40)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            UNREAD_AT_EXIT.format(tests=str(TESTS)),
            run.path,
            str(run.marks),
            backend,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert run.journaled() == set(range(40))
    assert run.calls() == dict.fromkeys(range(40), 1)


IMAP_LEFT_OPEN_AT_EXIT = """
import sys
sys.path.insert(0, {tests!r})
import workpool
from checkpoint_tasks import slow_logged_square

path, marks, trace, backend, pooled = sys.argv[1:]
items = [(x, marks) for x in range(40)]
options = dict(checkpoint=path, trace=trace, chunksize=2)
if pooled == "pool":
    pool = workpool.Pool(2, backend=backend)
    results = pool.imap(slow_logged_square, items, **options)
else:
    results = workpool.imap(slow_logged_square, items, backend=backend, **options)
assert [next(results) for _ in range(3)] == [0, 1, 4]
# The program ends here, its results neither all read nor closed.
"""


@pytest.mark.parametrize("pooled", ["pool", "one-shot"])
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_an_imap_left_open_at_exit_commits_its_journal_and_writes_its_trace(
    tmp_path: Path, backend: str, pooled: str
) -> None:
    # Its iterator was closed by the interpreter's teardown, where nothing can be
    # imported any more: the trace was lost ("Exception ignored ... ImportError") and
    # the journal was not closed (results not committed, its -wal left beside it).
    run = Run(tmp_path, 40)
    trace = tmp_path / "t.json"
    script = IMAP_LEFT_OPEN_AT_EXIT.format(tests=str(TESTS))
    args = [run.path, str(run.marks), str(trace), backend, pooled]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr
    data = json.loads(trace.read_text())
    assert data["otherData"]["partial"]
    assert set(range(3)) <= run.journaled()
    assert sorted(os.listdir(tmp_path)) == ["marks", "run.ckpt", "t.json"]


LOCAL_CLASS_RESULTS = """
import sys, warnings
import workpool

def point_class():
    class Point:  # pickle cannot name it: only a copy of it travels, by value
        def __init__(self, x):
            self.x = x
    return Point

Point = point_class()

def to_point(x):
    return Point(x)

if __name__ == "__main__":
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = workpool.map(to_point, range(6), checkpoint=sys.argv[1], backend=sys.argv[2])
    print([type(r) is Point and r.x == x for x, r in enumerate(results)])
    print(*(str(w.message) for w in caught), sep="\\n")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_only_a_copy_of_could_come_back_are_not_journaled(
    backend: str, tmp_path: Path
) -> None:
    # Results pickled by value (an object of a class made inside a function) came back
    # on resume as objects of a copy of that class: not the program's own, unequal to
    # an uninterrupted run's results, and nothing said so.
    path = str(tmp_path / "run.ckpt")
    for _ in range(2):  # the second run is a resume, in a program of its own
        done = subprocess.run(
            [sys.executable, "-c", LOCAL_CLASS_RESULTS, path, backend],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        exact, warning = done.stdout.split("\n", 1)
        assert exact == str([True] * 6)
        assert "pickled only by value" in warning
        assert "will run again on resume" in warning
    assert summary(path).items_done == 0


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_what_finished_before_an_imap_was_closed_is_kept(run: Run, ordered: bool) -> None:
    # On the serial backend a chunk has finished once it is submitted: nothing is in
    # flight when the consumer stops, so every item that ran is kept.
    results = workpool.imap(
        logged_square,
        run.items,
        backend="serial",
        chunksize=4,
        ordered=ordered,
        checkpoint=run.path,
    )
    list(itertools.islice(results, 10))
    results.close()
    assert len(run.calls()) > 12  # the window ran ahead of what was taken
    assert run.journaled() == set(run.calls())


# --- the progress bar ------------------------------------------------------------------------


class RecordedBar:
    bars: ClassVar[list[RecordedBar]] = []

    def __init__(self, total: int | None, description: str, done: int = 0) -> None:
        self.total, self.done, self.advanced = total, done, 0
        RecordedBar.bars.append(self)

    def advance(self, done: int, failed: int = 0) -> None:
        self.advanced += done

    def close(self) -> None:
        pass


@pytest.mark.parametrize("where", ["map", "pool"])
def test_a_resumed_progress_bar_starts_at_what_was_done(
    run: Run, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(workpool.progress, "ProgressBar", RecordedBar)
    results = workpool.imap(
        logged_square, run.items, backend="thread", chunksize=10, checkpoint=run.path
    )
    list(itertools.islice(results, 35))
    results.close()
    done = summary(run.path).items_done
    RecordedBar.bars.clear()
    if where == "map":
        workpool.map(logged_square, run.items, backend="thread", progress=True, checkpoint=run.path)
    else:
        with workpool.Pool(2, backend="thread") as pool:
            list(pool.imap(logged_square, run.items, progress=True, checkpoint=run.path))
    (bar,) = RecordedBar.bars
    assert (bar.total, bar.done, bar.done + bar.advanced) == (100, done, 100)


# --- SIGKILL of the parent -------------------------------------------------------------------

PARENT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import workpool
    from checkpoint_tasks import {function}

    if __name__ == "__main__":
        path, marks, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
        workpool.map({function}, [(x, marks) for x in range(count)], backend="process",
                     workers=2, chunksize=2, checkpoint=path)
        print("finished", flush=True)
    """
)


def start_parent(tmp_path: Path, function: str, count: int) -> tuple[subprocess.Popen[str], Run]:
    run = Run(tmp_path, count)
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=str(TESTS), function=function))
    parent = subprocess.Popen(
        [sys.executable, str(script), run.path, str(run.marks), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return parent, run


def committed(path: str) -> int:
    try:
        return summary(path).items_done
    except (FileNotFoundError, ValueError):  # not created yet, or being created
        return 0


def kill_and_check(parent: subprocess.Popen[str], run: Run) -> set[int]:
    """SIGKILL the parent; check its workers go and the file is sound; the pids seen."""
    workers = {p.pid for p in psutil.Process(parent.pid).children(recursive=True)}
    parent.send_signal(signal.SIGKILL)
    parent.communicate()
    workers |= worker_pids(run.marks)

    def gone() -> bool:
        for pid in workers:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    assert wait_for(gone, timeout=15), "workers outlived their killed parent"
    db = sqlite3.connect(run.path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    return workers


def test_sigkill_of_the_parent_loses_only_what_was_in_flight(tmp_path: Path) -> None:
    (tmp_path / "hold").touch()  # items from 61 on wait while it exists
    parent, run = start_parent(tmp_path, "held_square", 120)
    try:
        # Positions before 60 all finish and are committed; the workers then hold.
        assert wait_for(lambda: committed(run.path) >= 60, timeout=60), parent.stderr
    finally:
        kill_and_check(parent, run)
    (tmp_path / "hold").unlink()
    assert run.journaled() == set(range(60))
    first_run = run.calls()

    got = workpool.map(
        held_square, run.items, backend="process", workers=2, chunksize=2, checkpoint=run.path
    )
    assert got == run.expected
    ran = run.calls()
    assert all(ran[x] == 1 for x in range(60))
    redone = {x for x, n in ran.items() if n > 1}
    # Only item 60 can have finished unjournaled: its chunk (60, 61) was held at 61.
    assert redone <= {60} & set(first_run)


def test_sigterm_turned_into_an_exit_keeps_the_journal_and_writes_the_trace(
    tmp_path: Path,
) -> None:
    # A batch scheduler ends a job at its time limit with SIGTERM, which by default
    # ends Python at once: no trace. The README's one-line handler makes it an exit,
    # which commits the journal and writes the trace, marked partial.
    (tmp_path / "hold").touch()  # items from 61 on wait while it exists
    run = Run(tmp_path, 120)
    trace = tmp_path / "run.json"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal, sys
            sys.path.insert(0, {str(TESTS)!r})
            import workpool
            from checkpoint_tasks import held_square

            if __name__ == "__main__":
                signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
                workpool.map(held_square, [(x, {str(run.marks)!r}) for x in range(120)],
                             backend="process", workers=2, chunksize=2,
                             checkpoint={run.path!r}, trace={str(trace)!r})
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: committed(run.path) >= 60, timeout=60)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    assert parent.returncode == 128 + signal.SIGTERM, err
    data = json.loads(trace.read_text())
    assert data["otherData"]["partial"] is True
    assert "SystemExit" in data["otherData"]["reason"]
    assert run.journaled() == set(range(60))
    (tmp_path / "hold").unlink()
    got = workpool.map(held_square, run.items, backend="thread", checkpoint=run.path)
    assert got == run.expected
    assert all(n == 1 for x, n in run.calls().items() if x < 60)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_moment_resumes_exactly(tmp_path: Path, trial: int) -> None:
    parent, run = start_parent(tmp_path, "slow_logged_square", 200)
    try:
        assert wait_for(lambda: committed(run.path) > 0, timeout=60), parent.stderr
        # Not a wait for something: the kill's moment, random after the first commit.
        time.sleep(random.Random(trial).uniform(0, 0.5))
    finally:
        kill_and_check(parent, run)
    journaled = run.journaled()
    assert journaled  # the kill came after the first commit
    got = workpool.map(
        slow_logged_square,
        run.items,
        backend="process",
        workers=2,
        chunksize=2,
        checkpoint=run.path,
    )
    assert got == run.expected
    ran = run.calls()
    assert all(ran[x] == 1 for x in journaled)  # a journaled result never runs again
    assert set(ran) == set(range(200))


# --- no thread of ours while the workers start --------------------------------------------


def journal_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "workpool-journal"]


def test_the_writer_thread_waits_for_the_workers(run: Run) -> None:
    from workpool.checkpoint.session import CheckpointSession
    from workpool.inputs import InputSource

    session = CheckpointSession(run.path, logged_square, InputSource(run.items), star=False)
    piece = session.take(5)
    session.record(piece.start, piece.items, run.expected[:5], {}, digest=piece.digest)
    assert journal_threads() == []  # held: a process pool may still fork from a zygote
    session.start_writing()
    assert journal_threads() == ["workpool-journal"]
    session.close()
    assert summary(run.path).items_done == 5


ZYGOTE_PROBE = """
import sys
sys.path.insert(0, {tests!r})
import workpool
from workpool.backends.process import zygote
from checkpoint_tasks import logged_square

if __name__ == "__main__":
    items = [(x, sys.argv[2]) for x in range(50)]
    workpool.map(logged_square, items, backend="process", workers=2, checkpoint=sys.argv[1])
    print("zygote" if zygote._zygote is not None else "no zygote")
"""


def test_a_checkpointed_call_still_forks_its_workers_from_the_zygote(run: Run) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE_PROBE.format(tests=str(TESTS)), run.path, str(run.marks)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "zygote", done.stderr
