"""The checkpoint journal on its own: the file, its lock, its digests and its command.

Calls with ``checkpoint=`` are tested elsewhere; here the journal is driven directly,
as a call drives it: open, read what is done, verify, record, close.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import decimal
import enum
import functools
import gc
import operator
import os
import pickle
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import workpool
from conftest import wait_for
from workpool.checkpoint import Journal, accept, clear, summary
from workpool.checkpoint import journal as journal_module
from workpool.checkpoint import store as store_module
from workpool.checkpoint import writer as writer_module
from workpool.checkpoint.digest import chunk_digest, encode
from workpool.checkpoint.identity import function_identity
from workpool.checkpoint.store import LISTED_BYTES, SIDE_FILE_BYTES, network_filesystem
from workpool.cli import main


def square(x: int) -> int:
    return x * x


def cube(x: int) -> int:
    return x * x * x


def squares(start: int, count: int) -> list[int]:
    return [p * p for p in range(start, start + count)]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "run.ckpt")


def all_rows(journal: Journal) -> list[tuple[int, int, list[Any]]]:
    return [(row.start, row.size, journal.results(row)) for row in journal.rows()]


# --- the store: round trips, batching, reopening -----------------------------------------


@pytest.mark.parametrize("blob_handles", [True, False], ids=["streamed", "read-whole"])
def test_round_trip_of_chunks_in_position_order(
    path: str, blob_handles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Results are unpickled as SQLite hands them over, or read whole first (Python 3.10).
    monkeypatch.setattr(store_module, "_BLOB_HANDLES", blob_handles)
    big = b"x" * (SIDE_FILE_BYTES + 1)
    many = 20 * LISTED_BYTES // 8  # results too big to be listed with their row
    with Journal(path, square) as journal:
        assert journal.items_done == 0
        journal.record(10, range(10, 15), squares(10, 5))
        journal.record(0, range(0, 10), squares(0, 10))
        journal.record(15, ["a", "b"], [big, None])  # results too big for a row
        journal.record(17, range(17, 17 + many), squares(17, many))
    with Journal(path, square) as journal:
        assert journal.items_done == 17 + many
        assert all_rows(journal) == [
            (0, 10, squares(0, 10)),
            (10, 5, squares(10, 5)),
            (15, 2, [big, None]),
            (17, many, squares(17, many)),
        ]
    assert len(os.listdir(path + ".d")) == 1  # the big results' side file


def test_rows_are_read_in_pages_and_all_come_back(path: str) -> None:
    end = 3 * (2 * journal_module.PAGE_ROWS + 10)  # three pages of rows of 3
    with Journal(path, square) as journal:
        for start in range(0, end, 3):
            journal.record(start, range(start, start + 3), squares(start, 3))
    with Journal(path, square) as journal:
        rows = all_rows(journal)
        assert [start for start, _, _ in rows] == list(range(0, end, 3))
        assert all(values == squares(start, 3) for start, _, values in rows)
        assert [row.start for row in journal.rows(first=150)][:2] == [150, 153]


class HeldWriter:
    """The journal's writer, held inside its first write until ``busy`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.busy = threading.Event()  # set: the writer may go on
        self.writing = threading.Event()  # set by the writer once it is held
        put_done = store_module.JournalStore.put_done

        def slow_put_done(store: Any, *args: Any) -> list[str]:
            self.writing.set()
            self.busy.wait(timeout=60)  # the writer is held here while the chunks queue up
            return put_done(store, *args)

        monkeypatch.setattr(store_module.JournalStore, "put_done", slow_put_done)


@pytest.fixture
def held_writer(monkeypatch: pytest.MonkeyPatch) -> HeldWriter:
    return HeldWriter(monkeypatch)


def test_what_arrives_while_the_writer_is_busy_goes_into_one_commit(
    path: str, held_writer: HeldWriter
) -> None:
    busy, writing = held_writer.busy, held_writer.writing
    with Journal(path, square, commit_interval=3600) as journal:
        journal.record(0, range(5), squares(0, 5))
        assert writing.wait(timeout=60)
        for start in range(5, 200, 5):
            journal.record(start, range(start, start + 5), squares(start, 5))
        busy.set()
        journal.flush()
        assert journal.commits == 1  # forty chunks, one transaction
        assert summary(path).items_done == 200  # committed: another connection sees it


def test_large_results_waiting_for_a_busy_writer_are_bounded_in_bytes(
    path: str, monkeypatch: pytest.MonkeyPatch, held_writer: HeldWriter
) -> None:
    # Bounded by entries alone, the queue let 64 chunks of large results wait in
    # memory (64 results of 50 MB: 3 GB) while the disk caught up.
    monkeypatch.setattr(writer_module, "MAX_QUEUED_BYTES", 4 << 20)
    busy, writing = held_writer.busy, held_writer.writing
    result = bytes(1 << 20)  # each chunk's results pickle to just over 1 MiB
    recorded = []
    with Journal(path, square, commit_interval=3600) as journal:

        def record_all() -> None:
            for start in range(20):
                journal.record(start, [start], [result])
                recorded.append(start)

        recorder = threading.Thread(target=record_all)
        recorder.start()
        try:
            assert writing.wait(timeout=60)
            # With the bound, the recorder stays blocked for as long as the writer is
            # held, however long this waits; without it, all 20 got in at once.
            recorder.join(timeout=1)
            assert recorder.is_alive()
            assert len(recorded) <= 5  # one being written, at most 4 MiB waiting
        finally:
            busy.set()
            recorder.join(timeout=60)
        assert recorded == list(range(20))
        journal.flush()
        assert summary(path).items_done == 20
    with Journal(path, square) as journal:
        assert [journal.results(row) for row in journal.rows()] == [[result]] * 20


def test_commits_happen_without_close_or_flush(path: str) -> None:
    with Journal(path, square, commit_interval=0.05) as journal:
        journal.record(0, range(3), squares(0, 3))
        # Nothing but the interval passing makes the writer commit.
        assert wait_for(lambda: summary(path).items_done == 3, timeout=10)


# --- checksums: stored results that changed on disk are not trusted ----------------------


def flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1 :]


def offsets(size: int, sample: int) -> list[int]:
    """Every offset of a small value; of a large one its ends and an even spread."""
    if size <= 3 * sample:
        return list(range(size))
    return sorted({*range(8), *range(size - 8, size), *range(0, size, size // sample)})


def stored_results(path: str, start: int) -> tuple[bytes | None, str | None]:
    db = sqlite3.connect(path)
    try:
        found = db.execute("SELECT results, side FROM done WHERE start = ?", (start,)).fetchone()
        return found[0], found[1]
    finally:
        db.close()


def set_column(path: str, start: int, column: str, value: Any) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(f"UPDATE done SET {column} = ? WHERE start = ?", (value, start))
    db.close()


def load_row(path: str, start: int) -> list[Any]:
    store = store_module.JournalStore.open(path, readonly=True)
    try:
        (row,) = [row for row in store.rows_from(0, 10) if row.start == start]
        return store.load(row)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("where", "blob_handles"),
    [("listed", True), ("in-the-file", True), ("in-the-file", False), ("side-file", True)],
    ids=["listed", "in-the-file-streamed", "in-the-file-read-whole", "side-file"],
)
def test_every_byte_changed_in_stored_results_is_caught(
    path: str, where: str, blob_handles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A byte flipped on disk inside a row's pickled results unpickles, more often than
    # not, as other values: the row's checksum must refuse them, wherever they are kept.
    monkeypatch.setattr(store_module, "_BLOB_HANDLES", blob_handles)
    count = {"listed": 10, "in-the-file": 4 * LISTED_BYTES // 8, "side-file": 1}[where]
    values: list[Any] = squares(0, count)
    if where == "side-file":
        values = [b"s" * SIDE_FILE_BYTES]
    with Journal(path, square) as journal:
        journal.record(0, range(count), values)
    results, side = stored_results(path, 0)
    assert (side is not None) == (where == "side-file")
    store = store_module.JournalStore.open(path, readonly=True)
    (row,) = store.rows_from(0, 1)
    assert store.load(row) == values
    if side is None:
        assert results is not None
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA synchronous = OFF")
        for offset in offsets(len(results), 48):
            db.execute("UPDATE done SET results = ?", (flipped(results, offset),))
            (row,) = store.rows_from(0, 1)
            with pytest.raises(ValueError, match=r"positions 0\.\.\d+ are damaged") as info:
                store.load(row)
            assert path in str(info.value)
        db.execute("UPDATE done SET results = ?", (results,))
        db.close()
    else:
        side_path = Path(path + ".d", side)
        original = side_path.read_bytes()
        for offset in offsets(len(original), 12):
            side_path.write_bytes(flipped(original, offset))
            with pytest.raises(ValueError, match="are damaged"):
                store.load(row)
        side_path.write_bytes(original + b"\0")  # a byte more than was written
        with pytest.raises(ValueError, match="are damaged"):
            store.load(row)
        side_path.write_bytes(original)
    (row,) = store.rows_from(0, 1)
    assert store.load(row) == values
    store.close()


def test_a_changed_digest_or_count_is_damage_not_other_input(path: str) -> None:
    # The checksum covers the row's positions and input digest too: a flipped byte
    # there is a damaged row (run again), not a CheckpointMismatch about the input.
    with Journal(path, square) as journal:
        journal.record(0, range(10), squares(0, 10))
    with contextlib.closing(store_module.JournalStore.open(path)) as store:
        (digest,) = [row.digest for row in store.rows_from(0, 1)]
    set_column(path, 0, "digest", flipped(digest, 3))
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 0)
    set_column(path, 0, "digest", digest)
    set_column(path, 0, "count", 9)
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 0)
    set_column(path, 0, "count", 10)
    set_column(path, 0, "checksum", None)  # what a flipped type byte reads as
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 0)


def test_a_damaged_row_of_one_item_names_its_position_as_one(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(5, [5], [25])
    set_column(path, 5, "checksum", 0)
    with pytest.raises(ValueError, match="the results of position 5 are damaged"):
        load_row(path, 5)
    set_column(path, 5, "results", b"not a pickle")
    with pytest.raises(ValueError, match=r"the results of position 5 (are damaged|cannot be)"):
        load_row(path, 5)


def test_random_bytes_flipped_in_the_file_never_give_wrong_results(path: str) -> None:
    # The whole file, as a bad sector would change it: SQLite reports what breaks its
    # structure (a damaged file, refused), the checksums what it stores.
    texts = [f"result-{x:05d}" for x in range(600)]
    with Journal(path, square) as journal:
        for start in range(0, 600, 30):
            journal.record(start, range(start, start + 30), texts[start : start + 30])
    original = Path(path).read_bytes()
    rng = random.Random(15)
    refusals: list[str] = []
    for _ in range(40):
        start = rng.randrange(0, 600, 30)  # a byte of that row's results, or just before
        first = original.find(texts[start].encode())
        last = original.find(texts[start + 29].encode()) + 12
        assert 0 < first < last
        Path(path).write_bytes(flipped(original, rng.randrange(first - 16, last)))
        try:
            with Journal(path, square) as journal:
                for row in journal.rows():
                    try:
                        got = journal.results(row)
                    except ValueError as exc:  # this row's results: run again
                        refusals.append(str(exc))
                        continue
                    assert got == texts[row.start : row.start + row.size]
        except ValueError as exc:  # SQLite found its own structure broken: the file
            refusals.append(str(exc))
    assert any("are damaged" in refusal for refusal in refusals)
    for refusal in refusals:
        assert path in refusal
        assert re.search(r"are damaged|cannot be read|checkpoint \S+ is damaged", refusal)


def zero_the_last_starts(path: str) -> None:
    """Change the starts of the last half of the rows on the journal's last leaf page
    to 0 on disk, as a bad sector could.

    The rows' values stay as they were; the table's b-tree now lists zeros after the
    other starts, out of order, which SQLite itself notices only in an integrity check.
    """
    db = sqlite3.connect(path)
    (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'done'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    data = bytearray(Path(path).read_bytes())
    while True:  # down the right-most children to the right-most leaf
        base = (page - 1) * page_size
        header = base + (100 if page == 1 else 0)
        if data[header] == 0x0D:  # a leaf of a table's b-tree
            break
        assert data[header] == 0x05, "an interior page of a table's b-tree"
        page = int.from_bytes(data[header + 8 : header + 12], "big")
    cells = int.from_bytes(data[header + 3 : header + 5], "big")
    for number in range(cells // 2, cells):
        pointer = header + 8 + 2 * number
        cell = base + int.from_bytes(data[pointer : pointer + 2], "big")
        while data[cell] & 0x80:  # past the varint of the payload's size
            cell += 1
        cell += 1
        length = 1
        while data[cell + length - 1] & 0x80:  # the rowid's varint: its bytes
            length += 1
        data[cell : cell + length] = b"\x80" * (length - 1) + b"\x00"  # 0, as many bytes
    Path(path).write_bytes(bytes(data))


@pytest.mark.timeout(60)
def test_rows_listed_out_of_order_are_damage_not_an_endless_read(path: str) -> None:
    # Rows are listed a page at a time, each from the last start listed: a damaged
    # b-tree listing a smaller start last once made that loop start over forever.
    with Journal(path, square) as journal:
        for start in range(3000):  # rows on several leaf pages
            journal.record(start, [start], [start * start])
    zero_the_last_starts(path)
    with (
        Journal(path, square) as journal,
        pytest.raises(ValueError, match=f"checkpoint {path} is damaged"),
    ):
        for _ in journal.rows():
            pass
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged"):
        summary(path)


def test_rows_whose_values_read_back_missing_are_refused_at_once(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # What SQLite reads from a page the file was cut inside of: zeros, so rows whose
    # count and digest are NULL (which the schema forbids: no call wrote them).
    with Journal(path, square) as journal:
        for start in range(3000):  # rows on several leaf pages, the last one last
            journal.record(start, [start], [start * start])
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) - 100)
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged"):
        Journal(path, square)
    assert main(["checkpoint", "info", path]) == 2  # returned: no exception
    stderr = capsys.readouterr().err
    assert stderr.startswith("workpool checkpoint: ") and "is damaged" in stderr


def as_format_1(path: str) -> None:
    """Make a journal look as workpool wrote it before rows had checksums."""
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE done DROP COLUMN checksum")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_a_journal_of_the_format_before_checksums_resumes(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(5), squares(0, 5))
    as_format_1(path)
    before = Path(path).read_bytes()
    with pytest.raises(workpool.CheckpointMismatch):
        Journal(path, cube)
    assert Path(path).read_bytes() == before  # refused: left as it was
    with Journal(path, square) as journal:  # reading alone changes nothing either
        assert all_rows(journal) == [(0, 5, squares(0, 5))]
    assert summary(path).format_version == 1
    with Journal(path, square) as journal:
        journal.record(5, range(5, 8), squares(5, 8)[:3])
    assert summary(path).format_version == store_module.FORMAT_VERSION
    with Journal(path, square) as journal:
        # The old row is read as before (it has no checksum); the new one is checked.
        assert all_rows(journal) == [(0, 5, squares(0, 5)), (5, 3, squares(5, 3))]
    set_column(path, 5, "results", flipped(stored_results(path, 5)[0] or b"", 20))
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 5)
    clear(path)
    with Journal(path, square) as journal:
        journal.record(0, range(2), [0, 1])
    set_column(path, 0, "checksum", None)  # no row of this file may lack one now
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 0)
    # A format-1 file without results: after the upgrade, every row must have a sum.
    clear(path)
    as_format_1(path)
    with Journal(path, square) as journal:
        journal.record(0, range(2), [0, 1])
    set_column(path, 0, "checksum", None)
    with pytest.raises(ValueError, match="are damaged"):
        load_row(path, 0)


def test_verify_accepts_the_same_items_and_names_changed_positions(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, list(range(10)), squares(0, 10))
        journal.record(10, ["a", "b", "c"], [1, 2, 3])
    with Journal(path, square) as journal:
        first, second = journal.rows()
        journal.verify(first, range(10))  # a range and a list of the same ints agree
        journal.verify(second, ["a", "b", "c"])
        with pytest.raises(workpool.CheckpointMismatch, match=r"positions 10\.\.12") as info:
            journal.verify(second, ["a", "B", "c"])
        assert path in str(info.value)
        assert isinstance(info.value, ValueError)
        with pytest.raises(workpool.CheckpointMismatch, match=r"positions 10\.\.12"):
            journal.verify(second, ["a", "b"])  # fewer items than the row holds


def test_a_failure_is_noted_until_the_position_is_done(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(3), squares(0, 3))
        journal.record_failure(3, ValueError("bad input 3"))
        journal.flush()
        assert (summary(path).items_done, summary(path).failed) == (3, 1)
        journal.record(3, range(3, 4), [9])
        journal.flush()
        assert (summary(path).items_done, summary(path).failed) == (4, 0)
        journal.record_failure(5, ValueError("bad input 5"))
    with Journal(path, square) as journal:  # a failure a call before this one noted
        journal.record(4, range(4, 6), [16, 25])
    assert (summary(path).items_done, summary(path).failed) == (6, 0)


def test_rows_never_overlap_a_rewritten_range_replaces_them(path: str) -> None:
    big = b"y" * (SIDE_FILE_BYTES + 1)
    with Journal(path, square) as journal:
        journal.record(0, range(10), squares(0, 10))
        journal.record(20, range(20, 30), [big] * 10)
        journal.record(0, range(5), squares(0, 5))  # inside [0, 10): replaces it
        journal.record(25, range(25, 26), [625])  # inside [20, 30): replaces it
    with Journal(path, square) as journal:
        assert all_rows(journal) == [(0, 5, squares(0, 5)), (25, 1, [625])]
    assert not os.path.exists(path + ".d")  # the replaced row's side file is gone


def test_unpicklable_results_are_left_out_with_one_warning(path: str) -> None:
    with Journal(path, square) as journal:
        with pytest.warns(RuntimeWarning, match=r"positions 0\.\.1 cannot be saved"):
            journal.record(0, range(2), [threading.Lock(), 1])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            journal.record(2, range(2, 3), [threading.Lock()])  # no second warning
        journal.record(3, range(3, 4), [9])
    assert summary(path).ranges == [(3, 3)]


def test_a_write_failure_is_raised_by_the_next_call_naming_the_file(path: str) -> None:
    with Journal(path, square) as journal:
        Path(path + ".d").write_text("a file where the side directory should be")
        journal.record(0, range(1), [b"z" * (SIDE_FILE_BYTES + 1)])
        with pytest.raises(OSError, match="cannot be written") as info:
            journal.flush()
        assert path in str(info.value)
    os.unlink(path + ".d")
    assert summary(path).items_done == 0


def test_leftover_side_files_are_swept_when_the_file_is_opened(path: str) -> None:
    big = b"z" * (SIDE_FILE_BYTES + 1)
    with Journal(path, square) as journal:
        journal.record(0, range(1), [big])
    kept = os.listdir(path + ".d")
    Path(path + ".d", ".tmp-7-1.0000.pickle").write_bytes(b"half written")
    Path(path + ".d", "7-1.0000.pickle").write_bytes(b"renamed, never committed")
    with Journal(path, square) as journal:
        assert os.listdir(path + ".d") == kept
        assert all_rows(journal) == [(0, 1, [big])]


# --- the function a journal belongs to ---------------------------------------------------


def test_another_function_is_refused_before_anything_changes(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(4), squares(0, 4))
    before = summary(path)
    with pytest.raises(workpool.CheckpointMismatch) as info:
        Journal(path, cube)
    message = str(info.value)
    assert f"{__name__}.square" in message and f"{__name__}.cube" in message
    assert f"workpool checkpoint accept {path}" in message
    assert summary(path) == before
    assert not os.path.exists(path + ".lock")  # the refused call let the file go


def test_a_function_refused_after_a_python_upgrade_says_so(path: str) -> None:
    first = make_function(BASE)
    with Journal(path, first) as journal:
        journal.record(0, range(4), squares(0, 4))
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 'cpython 3.9.0' WHERE key = 'python'")
    db.commit()
    db.close()
    # The same source compiled again stands for what a newer Python compiles.
    recompiled = make_function(BASE.replace("x + 1", "1 + x"))
    with pytest.raises(workpool.CheckpointMismatch, match=r"as cpython 3\.9\.0 compiled it"):
        Journal(path, recompiled)
    assert accept(path)
    Journal(path, recompiled).close()
    first_again = make_function(BASE)  # refused now as this Python's, not 3.9's
    with pytest.raises(workpool.CheckpointMismatch, match="as it was then"):
        Journal(path, first_again)


def test_accept_makes_the_next_function_the_journals_and_keeps_results(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(4), squares(0, 4))
    assert accept(path)
    assert summary(path).accept_next
    with Journal(path, cube) as journal:
        assert journal.adopted
        assert all_rows(journal) == [(0, 4, squares(0, 4))]
    found = summary(path)
    assert (found.function, found.accept_next) == (f"{__name__}.cube", False)
    with pytest.raises(workpool.CheckpointMismatch):
        Journal(path, square)  # it belongs to cube now


def test_the_way_of_calling_is_part_of_the_journals_identity(path: str) -> None:
    with Journal(path, square, call="fn(*item)") as journal:
        journal.record(0, range(3), squares(0, 3))
    with pytest.raises(workpool.CheckpointMismatch, match=r"called as fn\(\*item\)"):
        Journal(path, square, call="fn(item)")
    Journal(path, square).close()  # a caller that does not say is not checked
    # A journal written before the way of calling was recorded takes the next call's.
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'call'")
    db.commit()
    db.close()
    Journal(path, square, call="fn(item)").close()
    with pytest.raises(workpool.CheckpointMismatch):
        Journal(path, square, call="fn(*item)")
    assert accept(path)  # a deliberate change keeps the results
    with Journal(path, square, call="fn(*item)") as journal:
        assert all_rows(journal) == [(0, 3, squares(0, 3))]
    Journal(path, square, call="fn(*item)").close()


def test_accept_with_nothing_to_accept_says_so(path: str) -> None:
    Journal(path, square).close()
    assert not accept(path)


def test_a_journal_without_results_takes_any_function(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record_failure(0, ValueError("no results, only a failure"))
    with Journal(path, cube) as journal:
        assert not journal.adopted
    assert summary(path).function == f"{__name__}.cube"


def test_clear_empties_the_journal_and_frees_its_function(path: str) -> None:
    big = b"z" * (SIDE_FILE_BYTES + 1)
    with Journal(path, square) as journal:
        journal.record(0, range(4), squares(0, 4))
        journal.record(4, range(4, 5), [big])
        journal.record_failure(5, ValueError("x"))
    clear(path)
    found = summary(path)
    assert (found.items_done, found.failed, found.function) == (0, 0, None)
    assert not os.path.exists(path + ".d")
    with Journal(path, cube) as journal:
        assert list(journal.rows()) == []


# --- one call at a time --------------------------------------------------------------------

HOLDER = """
import sys, time
from workpool.checkpoint import Journal
journal = Journal(sys.argv[1], print)
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin, or kills us
"""


@contextlib.contextmanager
def held_by_another_process(path: str) -> Iterator[int]:
    """Another process holds the checkpoint at ``path`` until the block ends (killed)."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:  # its exit closes the pipes
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"
            yield holder.pid
        finally:
            holder.kill()


def test_a_file_in_use_is_busy_and_freed_when_its_holder_is_killed(path: str) -> None:
    Path(path + ".lock").write_text("99999999999\n")  # left by a holder killed before
    with held_by_another_process(path) as pid:
        with pytest.raises(workpool.CheckpointBusy, match=f"in use by process {pid}"):
            Journal(path, square)
        for edit in (clear, accept):
            with pytest.raises(workpool.CheckpointBusy):
                edit(path)
    with Journal(path, square) as journal:  # the kernel released the dead holder's lock
        assert journal.items_done == 0


def test_a_file_in_use_is_busy_under_another_name_too(path: str) -> None:
    link = path + ".link"
    os.symlink(path, link)
    with Journal(path, square), pytest.raises(workpool.CheckpointBusy):
        Journal(link, square)
    with (
        held_by_another_process(link) as pid,
        pytest.raises(workpool.CheckpointBusy, match=f"in use by process {pid}"),
    ):
        Journal(path, square)


def test_a_file_with_another_hard_link_is_refused_whichever_name_is_used(
    tmp_path: Path,
) -> None:
    # SQLite keeps a file's WAL beside the name it is opened by: through two names, two
    # calls would each take the other's writes for none (and the lock beside each name
    # would let them run at once). A file with several names is refused, unchanged.
    path = str(tmp_path / "run.ckpt")
    with Journal(path, square) as journal:
        journal.record(0, range(3), squares(0, 3))
    os.mkdir(tmp_path / "elsewhere")
    other = str(tmp_path / "elsewhere" / "copy.ckpt")
    os.link(path, other)
    before = Path(path).read_bytes()
    for name in (path, other):
        with pytest.raises(ValueError, match="2 names") as info:
            Journal(name, square)
        assert f"checkpoint {name}" in str(info.value)
        assert "hard link" in str(info.value)
        for edit in (clear, accept):
            with pytest.raises(ValueError, match="2 names"):
                edit(name)
    assert Path(path).read_bytes() == before
    assert summary(other).items_done == 3  # reading it is harmless
    with pytest.raises(ValueError, match="2 names"):
        workpool.map(square, range(3), checkpoint=other, backend="serial")
    os.unlink(other)
    with Journal(path, square) as journal:
        assert journal.items_done == 3


def test_a_hard_link_made_while_a_call_holds_the_file_cannot_be_used(path: str) -> None:
    with held_by_another_process(path):
        os.link(path, path + ".other")
        with pytest.raises(ValueError, match="2 names"):
            Journal(path + ".other", square)


def test_a_file_in_use_is_busy_in_this_process_under_a_name_it_got_since(
    tmp_path: Path,
) -> None:
    # The lock file is one file, whatever its path says now: the holder's directory was
    # renamed, so the same journal (and lock file) has another path.
    os.mkdir(tmp_path / "before")
    first = Journal(str(tmp_path / "before" / "run.ckpt"), square)
    os.rename(tmp_path / "before", tmp_path / "after")
    now = str(tmp_path / "after" / "run.ckpt")
    with pytest.raises(workpool.CheckpointBusy, match="another call in this process"):
        Journal(now, square)
    other_process = subprocess.run(
        [sys.executable, "-c", HOLDER, now], input="", capture_output=True, text=True
    )
    assert "CheckpointBusy" in other_process.stderr  # the kernel's lock is held still
    first.close()
    Journal(now, square).close()


def test_two_calls_in_one_process_cannot_share_a_file(path: str) -> None:
    first = Journal(path, square)
    with pytest.raises(workpool.CheckpointBusy, match="another call in this process"):
        Journal(path, square)
    first.close()
    Journal(path, square).close()  # released by the first one's close


def test_an_unfinished_imap_holding_a_file_is_named_as_what_to_close(path: str) -> None:
    # The refusal said only "in use by another call in this process", which leaves a
    # notebook user hunting for the call: it is an iterator not read to its end.
    first = workpool.imap(square, range(1000), backend="serial", checkpoint=path)
    try:
        assert next(first) == 0
        with pytest.raises(workpool.CheckpointBusy, match=r"iterator .* close\(\)"):
            workpool.map(square, range(1000), backend="serial", checkpoint=path)
    finally:
        first.close()
    assert workpool.map(square, range(5), backend="serial", checkpoint=path) == squares(0, 5)


def test_a_busy_error_is_a_workpool_error_and_public() -> None:
    assert issubclass(workpool.CheckpointBusy, workpool.WorkpoolError)
    assert issubclass(workpool.CheckpointMismatch, workpool.WorkpoolError)
    assert issubclass(workpool.CheckpointMismatch, ValueError)
    assert workpool.CheckpointBusy.__module__ == "workpool"


# --- bad paths and files: refused, named, left alone ---------------------------------------


def test_a_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "run.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        Journal(missing, square)
    assert missing in str(info.value)
    assert not os.path.exists(tmp_path / "nowhere")


def test_a_path_under_a_file_is_refused_as_such(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    under = str(tmp_path / "notes.txt" / "run.ckpt")
    with pytest.raises(NotADirectoryError, match="is not a directory") as info:
        Journal(under, square)
    assert under in str(info.value)


def test_a_path_starting_with_a_tilde_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python does not expand "~" (a shell does): the path names a directory "~" here.
    monkeypatch.chdir(tmp_path)
    for attempt in (
        lambda: workpool.map(square, range(3), checkpoint="~/run.ckpt"),
        lambda: workpool.map(square, range(3), trace="~/run.json"),
    ):
        with pytest.raises(FileNotFoundError, match=r"expanduser") as info:
            attempt()
        assert "~" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        Journal(str(tmp_path), square)


def test_a_side_directory_that_is_not_a_directory_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    # Before, a new file ran the whole call and failed at its first large result (the
    # results after it were lost); an existing one failed with a bare NotADirectoryError.
    path = str(tmp_path / "run.ckpt")
    ran: list[int] = []

    def large(x: int) -> bytes:
        ran.append(x)
        return bytes(SIDE_FILE_BYTES + 1)

    (tmp_path / "run.ckpt.d").write_text("not ours")
    message = re.escape(f"{path}.d") + ".* not a directory: move it away"
    with pytest.raises(NotADirectoryError, match=message):
        workpool.map(large, range(3), checkpoint=path, backend="serial")
    assert ran == []
    os.unlink(tmp_path / "run.ckpt.d")
    workpool.map(abs, range(3), checkpoint=path, backend="serial")  # the file exists now
    (tmp_path / "run.ckpt.d").write_text("not ours")
    with pytest.raises(NotADirectoryError, match=message):
        workpool.map(abs, range(3), checkpoint=path, backend="serial")
    with pytest.raises(NotADirectoryError, match=message):
        summary(path)
    assert (tmp_path / "run.ckpt.d").read_text() == "not ours"


REFUSE_SPECIAL_FILE = """
import sys, workpool
from workpool.checkpoint import summary
try:
    workpool.map(abs, range(3), checkpoint=sys.argv[1], backend="serial")
except OSError as exc:
    print(type(exc).__name__, exc)
try:
    summary(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_path_that_is_no_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    # Opening a FIFO to read its first bytes waited for a writer forever; SQLite made a
    # -journal beside a device and failed with a bare "disk I/O error". In a process
    # of its own: the old code hangs.
    fifo = str(tmp_path / "fifo.ckpt")
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_SPECIAL_FILE, fifo],
        capture_output=True,
        text=True,
        timeout=30,
    )
    expected = f"checkpoint {fifo} is not a regular file (a FIFO); give the path of a file"
    assert done.stdout.splitlines() == [f"OSError {expected}"] * 2, done.stderr
    assert os.listdir(tmp_path) == ["fifo.ckpt"]


def test_a_lock_file_that_cannot_be_made_is_explained(path: str) -> None:
    # As on a read-only file system (EROFS), which a test cannot count on making: the
    # lock file's path is taken by a directory, so opening it fails whoever we are.
    os.mkdir(path + ".lock")
    with pytest.raises(IsADirectoryError) as info:
        Journal(path, square)
    message = str(info.value)
    assert f"checkpoint {path} cannot be used" in message
    assert "a checkpoint needs a directory it can write in" in message
    assert not os.path.exists(path)


@contextlib.contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """A full disk, as far as this process can tell: writes past ``size`` bytes fail."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_journal_the_disk_has_no_room_for_is_refused_naming_it(path: str) -> None:
    with files_limited_to(4096), pytest.raises(OSError) as info:
        Journal(path, square)
    assert f"checkpoint {path} cannot be created" in str(info.value)
    assert os.listdir(os.path.dirname(path)) == []  # nothing half made is left


def test_a_file_half_made_by_a_killed_call_is_made_again(path: str) -> None:
    # A call killed while making its journal leaves it under the temporary name only.
    Path(path + ".creating").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    Path(path + ".creating-journal").write_bytes(b"half")
    with Journal(path, square) as journal:
        assert journal.items_done == 0
        journal.record(0, range(3), squares(0, 3))
    assert sorted(os.listdir(os.path.dirname(path))) == ["run.ckpt"]
    assert summary(path).items_done == 3
    # Killed after the file got its name, before the temporary one went: it is removed.
    os.link(path, path + ".creating")
    with Journal(path, square) as journal:
        assert all_rows(journal) == [(0, 3, squares(0, 3))]
    assert sorted(os.listdir(os.path.dirname(path))) == ["run.ckpt"]


def test_making_a_journal_never_replaces_a_file_that_appeared_meanwhile(path: str) -> None:
    Path(path).write_text("someone else's file, written after the call looked")
    assert not store_module.create_journal(path, {})
    assert Path(path).read_text() == "someone else's file, written after the call looked"
    assert os.listdir(os.path.dirname(path)) == ["run.ckpt"]


def sqlite_database_of_something_else(path: str) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.execute("INSERT INTO customers VALUES ('ada')")
    db.commit()
    db.close()


def newer_journal(path: str) -> None:
    Journal(path, square).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {store_module.FORMAT_VERSION + 1}")
    db.commit()
    db.close()


def damaged_table(table: str) -> Any:
    """A maker of a journal with results whose ``table`` has a page of garbage."""

    def damage(path: str) -> None:
        with Journal(path, square) as journal:
            for start in range(0, 400, 10):
                journal.record(start, range(start, start + 10), squares(start, 10))
        db = sqlite3.connect(path)
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        db.close()
        with open(path, "r+b") as file:  # the page's header: SQLite reads it first
            file.seek((root - 1) * page_size)
            file.write(b"\xff" * 64)

    return damage


@contextlib.contextmanager
def no_connection_left_open(path: str) -> Iterator[None]:
    """The block leaves no file descriptor open on ``path`` and no connection to close.

    A file refused must be let go at once (the message says to remove it, which
    Windows refuses while it is open): an SQLite connection dropped unclosed holds it
    until the garbage collector comes (its statement cache refers back to it).
    """
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        held = [file for file in psutil.Process().open_files() if file.path == path]
        gc.collect()
    assert held == []
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: Path(p).write_text("name,size\nada,3\n"), "not an SQLite database"),
        (lambda p: Path(p).write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), "damaged"),
        (sqlite_database_of_something_else, "SQLite database of something else"),
        (newer_journal, "newer workpool"),
        (damaged_table("meta"), "damaged"),
        (damaged_table("done"), "damaged"),
    ],
    ids=["text", "garbage", "other-sqlite", "newer-format", "damaged-meta", "damaged-results"],
)
def test_a_file_that_is_not_a_journal_we_read_is_refused_untouched(
    path: str, make: Any, message: str
) -> None:
    make(path)
    before = Path(path).read_bytes()
    for attempt in (lambda: Journal(path, square), lambda: summary(path), lambda: clear(path)):
        with no_connection_left_open(path), pytest.raises(ValueError, match=message) as info:
            attempt()
        assert path in str(info.value)
    assert Path(path).read_bytes() == before
    assert not os.path.exists(path + ".lock")


# --- where WAL is refused: a rollback journal, said once -----------------------------------


def test_a_read_only_file_is_refused_before_anything_changes(
    path: str, make_read_only: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(5), squares(0, 5))
    make_read_only(path)
    before = Path(path).read_bytes()
    for attempt in (lambda: Journal(path, square), lambda: clear(path), lambda: accept(path)):
        with pytest.raises(PermissionError, match="cannot be written: it is read-only") as info:
            attempt()
        assert path in str(info.value)
    for action in ("clear", "accept"):
        assert main(["checkpoint", action, path]) == 2
        assert "it is read-only" in capsys.readouterr().err
    assert summary(path).items_done == 5  # reading it is fine
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(os.path.dirname(path))) == ["run.ckpt"]  # no -wal, no -shm


def test_where_wal_is_refused_a_rollback_journal_is_used_and_said_once(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_VFS", "unix-none")  # a VFS without shared memory: no WAL
    with pytest.warns(RuntimeWarning, match="rollback journal") as caught:
        journal = Journal(path, square)
    assert len([w for w in caught if "rollback" in str(w.message)]) == 1
    with journal:
        journal.record(0, range(3), squares(0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file again: no second warning
        with Journal(path, square) as journal:
            assert all_rows(journal) == [(0, 3, squares(0, 3))]
    assert summary(path).journal_mode == "delete"


MOUNTINFO = textwrap.dedent(
    """\
    22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
    40 22 0:40 / /home/ada/cluster rw,relatime shared:20 - nfs4 srv:/export rw,vers=4.2
    41 22 0:41 / /home/ada/my\\040files rw,relatime shared:21 - cifs //srv/files rw
    """
)


def test_network_file_systems_are_recognized_from_the_mount_table() -> None:
    assert network_filesystem("/home/ada/cluster/runs/a.ckpt", MOUNTINFO) == "nfs4"
    assert network_filesystem("/home/ada/my files/a.ckpt", MOUNTINFO) == "cifs"
    assert network_filesystem("/home/ada/clusterx/a.ckpt", MOUNTINFO) is None
    assert network_filesystem("/tmp/a.ckpt", MOUNTINFO) is None


# --- a SIGKILL at any moment leaves a sound file -------------------------------------------

WRITER = """
import sys
from workpool.checkpoint import Journal
from workpool.checkpoint.store import SIDE_FILE_BYTES

def results(start, size):
    if start % 7 == 3:  # now and then, results that go to a side file
        return [str(p).encode() * (SIDE_FILE_BYTES // len(str(p)) + 1) for p in
                range(start, start + size)]
    return [p * p for p in range(start, start + size)]

journal = Journal(sys.argv[1], results)
start = 0
while True:  # until killed
    size = 1 + start % 5
    journal.record(start, range(start, start + size), results(start, size))
    start += size
"""


def expected_results(start: int, size: int) -> list[Any]:
    if start % 7 == 3:
        return [
            str(p).encode() * (SIDE_FILE_BYTES // len(str(p)) + 1)
            for p in range(start, start + size)
        ]
    return squares(start, size)


def committed_rows(path: str) -> int:
    try:
        return summary(path).rows
    except (FileNotFoundError, ValueError):  # not created yet, or being created
        return 0


AS_IF_ON_NFS = """
import workpool.checkpoint.store as store
store.network_filesystem = lambda path, mountinfo=None: "nfs"
"""


@pytest.mark.parametrize("mode", ["wal", "rollback"])
def test_sigkill_while_writing_leaves_a_sound_file(
    path: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = WRITER
    if mode == "rollback":  # as on a network file system: a rollback journal, POSIX locks
        script = AS_IF_ON_NFS + script
        monkeypatch.setattr(store_module, "network_filesystem", lambda path: "nfs")
    writer = subprocess.Popen([sys.executable, "-W", "ignore", "-c", script, path])
    try:
        # Kill it mid-stream: once several batches are committed, while it writes more.
        assert wait_for(lambda: committed_rows(path) >= 40, timeout=60), "nothing committed"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert summary(path).journal_mode == ("wal" if mode == "wal" else "delete")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rollback case says so again in this process
        assert accept(path)  # the writer's function was its own copy of expected_results
        journal = Journal(path, expected_results)  # the dead writer's lock is gone
    with journal:
        rows = list(journal.rows())
        assert len(rows) >= 40
        assert rows[0].start == 0
        position = 0
        for row in rows:  # every committed row: contiguous, verifiable, readable
            assert row.start == position
            journal.verify(row, range(row.start, row.start + row.size))
            assert journal.results(row) == expected_results(row.start, row.size)
            position += row.size
        named = {row.side for row in rows if row.side}
        present = set(os.listdir(path + ".d")) if os.path.exists(path + ".d") else set()
        assert present == named  # nothing half-written or uncommitted is left over


# --- digests: a function of the values alone ----------------------------------------------


class Color(enum.Enum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


class Opaque:
    def __init__(self, value: object) -> None:
        self.value = value


@dataclasses.dataclass
class Tagged:
    value: int
    tags: set[str]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, True),
        (1, 1.0),
        (0.0, -0.0),
        ("a", b"a"),
        (b"a", bytearray(b"a")),
        ((1, 2), [1, 2]),
        ({1: 2}, {2: 1}),
        ({"a"}, frozenset({"a"})),
        ([[1], 2], [1, [2]]),
        (("ab", "c"), ("a", "bc")),
        (2**64, 2**64 + 1),
        (Point(1, 2), (1, 2)),
        (Color.RED, 1),
        (None, "None"),
        (1 + 2j, 1 - 2j),
        # Objects without an encoding of their own: by what their pickling is made of.
        (Opaque(1), Opaque(2)),
        (Path("/data/a.csv"), Path("/data/b.csv")),
        ((Path("a"), 1), ("a", 1)),
        (datetime.date(2026, 1, 1), datetime.date(2026, 1, 2)),
        (decimal.Decimal("1.5"), decimal.Decimal("1.50")),
        (uuid.UUID(int=1), uuid.UUID(int=2)),
        (Tagged(1, {"x"}), Tagged(1, {"y"})),
        (Tagged(1, {"x"}), Opaque(1)),
        (len, abs),
    ],
)
def test_different_values_have_different_encodings(a: Any, b: Any) -> None:
    assert encode(a) != encode(b)
    assert chunk_digest([a]) != chunk_digest([b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1, "y": 2}, {"y": 2, "x": 1}),
        ({3, 1, 2}, {2, 3, 1}),
        (Path("/data/a.csv"), Path("/data/a.csv")),
        (Tagged(1, {"x", "y", "z"}), Tagged(1, {"z", "y", "x"})),
        # What cannot be pickled has no encoding: only the position counts.
        (threading.Lock(), threading.Lock()),
        (Opaque(threading.Lock()), Opaque(threading.Lock())),
    ],
)
def test_equal_values_have_equal_encodings(a: Any, b: Any) -> None:
    assert encode(a) == encode(b)
    assert chunk_digest([a]) == chunk_digest([b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (range(3, 30, 3), list(range(3, 30, 3))),
        (range(7, 8), [7]),
        (range(10, 0, -1), list(range(10, 0, -1))),
        (range(2**70, 2**70 + 3), [2**70, 2**70 + 1, 2**70 + 2]),
    ],
)
def test_a_range_and_a_list_of_the_same_numbers_have_one_digest(a: range, b: list[int]) -> None:
    assert chunk_digest(a) == chunk_digest(b)


@pytest.mark.parametrize(
    "chunk",
    [
        [1, 2, 4],
        [5, 5, 5],
        [2**70, 1],
        [1.5, 2.5],
        ["a", "bc", ""],
        ["a", 1],
        [],
    ],
)
def test_chunk_digests_follow_their_items(chunk: list[Any]) -> None:
    assert chunk_digest(chunk) == chunk_digest(list(chunk))
    assert chunk_digest(chunk) != chunk_digest([*chunk, 0])
    assert chunk_digest(chunk) != chunk_digest([None, *chunk])


# Digests a journal written by an earlier release holds: they must never change, or its
# resume would refuse its own input. (Computed by the first release of format 1.)
FORMAT_1_DIGESTS: list[tuple[Any, str]] = [
    (
        [
            None,
            True,
            False,
            0,
            -1,
            2**63 - 1,
            -(2**63),
            2**64,
            -(2**70),
            1.5,
            -0.0,
            float("inf"),
            1 + 2j,
        ],
        "4940833ef39a4102930b7e104292a1e4",
    ),
    (["", "é", "a\udc80", b"", b"\x00", bytearray(b"xy")], "73dfce1284d3eccc891af5e5ffe2c4df"),
    (
        [(1, 2), [1, [2, 3]], {"b": 1, "a": (2.5, None)}, {3, 1, 2}, frozenset({"x"}), ()],
        "305b0a819ba988bdea8950cb2a75f27f",
    ),
    (
        [collections.OrderedDict([("b", 1), ("a", 2)]), {"id": 7, "tags": ["a", "b"]}],
        "3fc0374b2b96347385998d4552787945",
    ),
    ([(1, "k1"), (2, "k2")], "97d9c9e4dbecf4a06aa31cacb186d37f"),
    ([(1, 2.5), (3, 4.5)], "d424da943f38bc16c254c3f210bcc003"),
    ([3, 1, 2], "7fd9d7b32059975993dc5e5caec46dca"),
    (range(10, 100, 3), "f2667749d005f6ae5051012a4248db65"),
    ([0.5, 0.25], "32cb9e6bcdaa0d4f1334644ffe0a2664"),
    (["a", "bc"], "a0299d8005182c198ae81a3bff1fd2e8"),
]


@pytest.mark.parametrize(("chunk", "expected"), FORMAT_1_DIGESTS)
def test_digests_are_those_earlier_releases_wrote(chunk: Any, expected: str) -> None:
    assert chunk_digest(chunk).hex() == expected


def _digest_item_by_item(items: list[Any]) -> bytes:
    """What ``chunk_digest`` gives a chunk it encodes one value at a time (format 1)."""
    from workpool.checkpoint.digest import CanonicalEncoder, blake2b

    encoder = CanonicalEncoder()
    encoder.parts.append(b"G" + len(items).to_bytes(8, "little"))
    for item in items:
        encoder.encode(item)
    return blake2b(b"".join(encoder.parts), digest_size=16, person=b"workpool.items.1").digest()


@pytest.mark.parametrize(
    "chunk",
    [
        [(x, x + 1) for x in range(300)],
        [(x, x * 0.5, -x) for x in range(300)],
        [(2**63 - 1, -(2**63), -0.0, float("inf"), float("nan"))] * 3,
        [(7,)],
        [(), ()],
        [(1, 2), (1, 2, 3)],
        [(1, True)],
        [(1, 2**64)],
        [(1, "a")],
        [(1.0, 2), (1, 2)],
        [(1, (2, 3))],
    ],
)
def test_tuples_have_one_digest_however_it_is_computed(chunk: list[Any]) -> None:
    # Chunks of numeric tuples (starmap's arguments) are digested a column at a time;
    # the digest must be the one the item-by-item encoding gives, or journals written
    # before that would no longer match their own input.
    assert chunk_digest(chunk) == _digest_item_by_item(chunk)
    changed = [*chunk[:-1], (*chunk[-1][:-1], "x")] if chunk[-1] else [*chunk[:-1], (0,)]
    assert chunk_digest(changed) != chunk_digest(chunk)


def test_numpy_arrays_are_compared_by_dtype_shape_and_bytes() -> None:
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert encode(a) == encode(np.asfortranarray(a))  # memory layout does not matter
    assert encode(a) == encode(a.copy())
    assert encode(a) != encode(a.astype(np.int32))
    assert encode(a) != encode(a.reshape(4, 3))
    changed = a.copy()
    changed[2, 3] = -1
    assert encode(a) != encode(changed)
    assert encode(np.float64(1.5)) != encode(np.float32(1.5))
    assert encode(np.array(["a", None], dtype=object)) != encode(np.array(["a", 1], dtype=object))


def test_a_container_holding_itself_is_encoded() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert encode(loop) == encode(loop)


HASHSEED_PROBE = """
import pickle, sys
from workpool.checkpoint.digest import chunk_digest
from workpool.checkpoint.identity import function_identity

words = {f"word{i}" for i in range(40)}
class Tagged:  # an object whose pickled state holds a set
    def __init__(self, tags):
        self.tags = tags

items = [words, frozenset(words), {w: len(w) for w in sorted(words, key=hash)},
         (words, [frozenset({"a", "b", "c"})]), Tagged(words)]

def classify(word, known=frozenset(words)):
    return word in {"alpha", "beta", "gamma", "delta"} or word in known

print(chunk_digest(items).hex(), function_identity(classify).digest, pickle.dumps(words).hex())
"""


def test_digests_are_the_same_under_every_hash_seed() -> None:
    outputs = []
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run(
            [sys.executable, "-c", HASHSEED_PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        outputs.append(done.stdout.split())
    item_digests, function_digests, pickles = zip(*outputs)
    assert len(set(pickles)) > 1  # the seeds do reorder the sets: a pickle would differ
    assert len(set(item_digests)) == 1
    assert len(set(function_digests)) == 1


# --- function identity ---------------------------------------------------------------------


def make_function(source: str, name: str = "f", module: str = "user_tasks") -> Any:
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(textwrap.dedent(source), "<tasks>", "exec"), namespace)
    return namespace[name]


BASE = """
def helper(x):
    return x + 1

def f(x, scale=2, *, offset=0):
    return [helper(v) * scale + offset for v in range(x)]
"""


def identity(source: str, name: str = "f") -> str:
    return function_identity(make_function(source, name)).digest


def test_the_same_source_has_the_same_identity_wherever_it_sits() -> None:
    assert identity(BASE) == identity(BASE)
    assert identity(BASE) == identity("\n\n\n# moved down\n" + BASE)
    assert identity(BASE) == identity(BASE.replace("(v)", "(  v  )"))


@pytest.mark.parametrize(
    "changed",
    [
        BASE.replace("* scale", "* scale * 1"),  # the code
        BASE.replace("scale=2", "scale=3"),  # a default
        BASE.replace("offset=0", "offset=1"),  # a keyword-only default
        BASE.replace("return x + 1", "return x + 2"),  # a helper of the same module
        BASE.replace("for v in range(x)", "for v in range(x) if v"),  # nested code
        BASE.replace("def f(x, scale=2", "def f(x, y=0, scale=2"),  # the signature
    ],
    ids=["code", "default", "kwdefault", "helper", "nested-code", "signature"],
)
def test_a_changed_function_has_another_identity(changed: str) -> None:
    assert identity(changed) != identity(BASE)


def test_the_module_and_name_are_part_of_the_identity() -> None:
    assert function_identity(make_function(BASE, module="a")).digest != (
        function_identity(make_function(BASE, module="b")).digest
    )
    renamed = BASE.replace("def f(", "def g(")
    assert identity(renamed, "g") != identity(BASE)


CLOSURE = """
def make(bad):
    def check(x):
        return x != bad
    return check
"""


def test_closures_partials_and_methods_are_known_by_their_parts() -> None:
    make = make_function(CLOSURE, "make")
    assert function_identity(make(3)).digest == function_identity(make(3)).digest
    assert function_identity(make(3)).digest != function_identity(make(5)).digest

    assert function_identity(functools.partial(square, 2)).digest == (
        function_identity(functools.partial(square, 2)).digest
    )
    assert function_identity(functools.partial(square, 2)).digest != (
        function_identity(functools.partial(square, 3)).digest
    )
    assert function_identity(functools.partial(square, x=2)).digest != (
        function_identity(functools.partial(cube, x=2)).digest
    )

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def apply(self, x: int) -> int:
            return x * self.factor

    class OtherScaler(Scaler):
        pass

    assert function_identity(Scaler(2).apply).digest == function_identity(Scaler(3).apply).digest
    assert function_identity(Scaler(2).apply).digest != (
        function_identity(OtherScaler(2).apply).digest
    )
    assert function_identity(Scaler(2).apply).name.endswith("Scaler.apply")
    assert function_identity(",".join).digest != function_identity(";".join).digest
    assert function_identity(functools.partial(square)).name == (
        f"functools.partial({__name__}.square)"
    )


class Scale:
    """A callable object whose state is in slots: it has no ``__dict__``."""

    __slots__ = ("factor",)

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


def test_callable_objects_without_a_dict_are_known_by_their_state(tmp_path: Path) -> None:
    def digest(fn: Any) -> str:
        return function_identity(fn).digest

    assert digest(operator.itemgetter(0)) == digest(operator.itemgetter(0))
    assert digest(operator.itemgetter(0)) != digest(operator.itemgetter(1))
    assert digest(operator.attrgetter("real")) != digest(operator.attrgetter("imag"))
    assert digest(operator.methodcaller("upper")) != digest(operator.methodcaller("lower"))
    assert digest(Scale(2)) == digest(Scale(2))
    assert digest(Scale(2)) != digest(Scale(3))

    path = str(tmp_path / "run.ckpt")
    rows = [(x, -x) for x in range(5)]
    workpool.map(operator.itemgetter(0), rows, backend="serial", checkpoint=path)
    with pytest.raises(workpool.CheckpointMismatch):
        workpool.map(operator.itemgetter(1), rows, backend="serial", checkpoint=path)


def test_recursive_functions_have_an_identity() -> None:
    source = """
    def f(n):
        return 1 if n < 2 else n * f(n - 1)
    """
    assert identity(source) == identity(source)


# --- import cost and the command ----------------------------------------------------------


def test_importing_workpool_does_not_import_sqlite() -> None:
    code = "import sys, workpool; print(sorted(m for m in sys.modules if 'sqlite' in m))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workpool.cli", "checkpoint", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="200"),
    )


def test_cli_info_clear_and_accept(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(5), squares(0, 5))
        journal.record(8, range(8, 10), squares(8, 2))
        journal.record_failure(5, ValueError("bad"))
    info = run_cli("info", path)
    assert info.returncode == 0, info.stderr
    assert f"{__name__}.square" in info.stdout
    assert "7 items in 2 chunks" in info.stdout
    assert "0..4, 8..9" in info.stdout
    assert "1 items" in info.stdout or "1 item" in info.stdout
    assert "size on disk" in info.stdout

    accepted = run_cli("accept", path)
    assert accepted.returncode == 0, accepted.stderr
    assert "next call" in accepted.stdout
    assert "the next call's function" in run_cli("info", path).stdout
    with Journal(path, cube) as journal:
        assert journal.adopted

    cleared = run_cli("clear", path)
    assert cleared.returncode == 0, cleared.stderr
    assert "7 results removed" in cleared.stdout
    assert summary(path).items_done == 0


@pytest.mark.parametrize(("runs", "tail"), [(5, "and 1 more range"), (6, "and 2 more ranges")])
def test_cli_info_counts_the_ranges_it_does_not_show(path: str, runs: int, tail: str) -> None:
    with Journal(path, square) as journal:
        for start in range(0, 2 * runs, 2):  # every other position: a range each
            journal.record(start, range(start, start + 1), squares(start, 1))
    done = run_cli("info", path)
    assert done.returncode == 0
    assert tail + " " in done.stdout.replace("│", " ")


def test_cli_errors_name_the_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint")
    damaged = str(tmp_path / "damaged.ckpt")
    damaged_table("done")(damaged)
    cases = {
        str(tmp_path / "missing.ckpt"): "does not exist",
        str(tmp_path / "no" / "dir.ckpt"): "does not exist",
        str(tmp_path): "is a directory",
        str(text_file): "not a workpool checkpoint",
        damaged: "is damaged",
    }
    for action in ("info", "clear", "accept"):
        for target, message in cases.items():
            assert main(["checkpoint", action, target]) == 2  # returned: no exception
            stderr = capsys.readouterr().err
            assert stderr.startswith("workpool checkpoint: ")
            assert message in stderr and target in stderr
    assert text_file.read_text() == "not a checkpoint"
    for target in (str(text_file), damaged):  # and as a command
        done = run_cli("info", target)
        assert done.returncode == 2 and "Traceback" not in done.stderr


def test_info_leaves_nothing_beside_the_file(path: str) -> None:
    with Journal(path, square) as journal:
        journal.record(0, range(5), squares(0, 5))
    assert run_cli("info", path).returncode == 0
    assert summary(path).items_done == 5
    assert sorted(os.listdir(os.path.dirname(path))) == ["run.ckpt"]  # no -wal, no -shm


def test_info_reads_a_file_where_sqlite_can_make_nothing_beside_it(path: str) -> None:
    # As on a read-only file system: SQLite can make neither the -wal nor the -shm file
    # a reader of a WAL file needs (here directories hold their names, which stops root too).
    with Journal(path, square) as journal:
        journal.record(0, range(5), squares(0, 5))
    os.mkdir(path + "-wal")
    os.mkdir(path + "-shm")
    assert summary(path).items_done == 5
    shown = run_cli("info", path).stdout
    assert "5 items in 1 chunks" in shown
    # Opened immutable, SQLite reports any file's journal mode as "delete".
    assert "wal journal" in shown


def test_cli_refuses_to_change_a_file_in_use(path: str) -> None:
    with Journal(path, square):
        for action in ("clear", "accept"):
            done = run_cli(action, path)
            assert done.returncode == 1  # not a bad argument: it works once the call ends
            assert "in use by process" in done.stderr and "Traceback" not in done.stderr
        assert run_cli("info", path).returncode == 0  # reading is fine meanwhile


def test_journal_results_pickle_round_trip_shared_arrays_as_plain_data(path: str) -> None:
    np = pytest.importorskip("numpy")
    shared = workpool.share(np.arange(10.0))
    with Journal(path, square) as journal:
        journal.record(0, range(1), [shared])
    db = sqlite3.connect(path)
    try:
        (stored,) = db.execute("SELECT results FROM done").fetchone()
    finally:
        db.close()
    assert b"workpool" not in stored  # plain NumPy data, no segment
    with Journal(path, square) as journal:
        (row,) = journal.rows()
        (value,) = journal.results(row)
        assert type(value) is np.ndarray and value.tolist() == list(range(10))
    assert pickle.loads(pickle.dumps(value)).tolist() == value.tolist()
