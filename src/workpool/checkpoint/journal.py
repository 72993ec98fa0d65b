"""A checkpoint file as one call uses it: open, check, read what is done, record the rest.

::

    Journal(path, fn)      check the path, take the lock, open the store and compare the
                           function's identity with the journal's (or make a new file
                           that records it); the writer starts with the first record
    rows() / results(row)  what is done, in position order: rows listed in pages, the
                           results of each read when asked for (the call's thread, with
                           its own connection)
    verify(row, items)     the input now at the row's positions has the row's digest,
                           or CheckpointMismatch names those positions
    record(start, items, values)
                           digest + pickle in the call's thread (the values cannot
                           change under us afterwards), written by the writer thread
    stop_writing()         the last record is in: commit it and close the writer's
                           connection meanwhile (the caller stops its workers)
    close()                wait for that, release the lock

The identity rule for functions is ``identity``'s; for input items, ``digest``'s.
``accept`` and ``clear`` are the two deliberate changes a user can make to a journal
(``workpool checkpoint accept`` / ``clear``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from workpool.checkpoint.digest import chunk_digest
from workpool.checkpoint.identity import FunctionIdentity, function_identity
from workpool.checkpoint.lock import JournalLock
from workpool.checkpoint.store import (
    JournalStore,
    Row,
    Summary,
    check_path,
    create_journal,
    positions,
    remove_leftovers,
    sqlite_errors,
    sync_new_journal,
    this_python,
)
from workpool.checkpoint.writer import COMMIT_INTERVAL, DoneEntry, FailedEntry, JournalWriter
from workpool.errors import CheckpointMismatch, outside_workpool
from workpool.int_lists import pack
from workpool.serialize import PROTOCOL, by_value

__all__ = ["Journal", "accept", "clear", "summary"]

PAGE_ROWS = 256  # rows listed at a time on resume (with at most LISTED_BYTES of results each)


class Journal:
    """A checkpoint file held by one call, until ``close()``.

    Opening raises ``CheckpointBusy`` if another call holds the file,
    ``CheckpointMismatch`` if it belongs to another function, or to another way of
    calling it (``call``: ``"fn(item)"`` for map, ``"fn(*item)"`` for starmap; None
    if unknown), unless a ``workpool checkpoint accept`` is pending, in which case
    ``fn`` and ``call`` become its own; and
    ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``...) / ``ValueError``
    for a path that cannot be a checkpoint; nothing is changed in a file that is
    refused.

    Used from one thread at a time (the call's); the writing happens on the writer's,
    which starts with the first record, or with ``release_writer()`` if
    ``hold_writer``.
    """

    def __init__(
        self,
        path: str,
        fn: Any,
        *,
        call: str | None = None,
        commit_interval: float = COMMIT_INTERVAL,
        hold_writer: bool = False,
    ) -> None:
        # Absolute: the writer thread opens the file later, and its side files go
        # beside it, after the program (or, on threads or the calling thread, the
        # function) may have changed the working directory.
        path = os.path.abspath(path)
        self.path = path
        self.function = function_identity(fn)
        check_path(path)
        self._lock = JournalLock(path)
        # The call's own connection, to read what is done; a new file has nothing to
        # read, and the writer alone opens it.
        self._store: JournalStore | None = None
        self.adopted = False
        self.items_done = 0
        try:
            meta = {"function": self.function.name, "function_digest": self.function.digest}
            if call is not None:
                meta["call"] = call
            created = not os.path.exists(path) and create_journal(path, meta)
            if not created:
                self._store = JournalStore.open(path)
                try:
                    with sqlite_errors(path):
                        self.adopted = _check_function(self._store, self.function, call)
                        remove_leftovers(path)  # killed after linking the file into place
                        self._store.sweep_side_files()
                        self.items_done = self._store.items_done()
                except BaseException:
                    self._store.close()
                    raise
        except BaseException:
            self._lock.release()
            raise

        def open_for_writing() -> JournalStore:
            if created:  # on the writer's thread, before its first commit
                sync_new_journal(path)
            return JournalStore.open(path, again=True, upgrade=True)

        self._writer = JournalWriter(open_for_writing, commit_interval, hold=hold_writer)
        self._warned_unpicklable = False
        self._closed = False

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def release_writer(self) -> None:
        """Let the writer thread start (a ``hold_writer`` journal; see ``JournalWriter``)."""
        self._writer.release()

    @property
    def commits(self) -> int:
        """Transactions the writer has committed so far."""
        return self._writer.commits

    # --- what is done -----------------------------------------------------------------

    def rows(self, first: int = 0) -> Iterator[Row]:
        """The journaled rows that start at or after position ``first``, in order.

        Read a page at a time, each page in a short transaction of its own, so that
        the writer is never held up by a long read.
        """
        if self._store is None:
            return
        position = first
        while True:
            with sqlite_errors(self.path):
                page = self._store.rows_from(position, PAGE_ROWS)
            yield from page
            if len(page) < PAGE_ROWS:
                return
            position = page[-1].start + 1

    def results(self, row: Row) -> list[Any]:
        """The results journaled in ``row`` (``ValueError`` if they cannot be read)."""
        assert self._store is not None, "a row of a file this journal made"
        return self._store.load(row)

    def verify(self, row: Row, items: Sequence[Any]) -> None:
        """Raise ``CheckpointMismatch`` unless ``items`` are those journaled in ``row``."""
        if len(items) != row.size or chunk_digest(items) != row.digest:
            raise CheckpointMismatch(
                f"the input at {positions(row.start, row.size)} differs from the input "
                f"whose results checkpoint {self.path} holds (compared by a digest of "
                "those items). Use another checkpoint file for other input, or start "
                f"this one over with `workpool checkpoint clear {self.path}`"
            )

    # --- recording --------------------------------------------------------------------

    def record(
        self,
        start: int,
        items: Sequence[Any],
        values: Sequence[Any],
        digest: bytes | None = None,
        pickled: bytes | memoryview | None = None,
    ) -> None:
        """Journal ``values`` as the results of ``items``, at positions from ``start``.

        ``digest`` is the items' ``chunk_digest`` if already known; ``pickled`` the
        pickle of the pair ``(values, [])`` if a process worker sent them so (then they
        are stored as they came, not pickled again). Results that the standard pickle
        cannot save by reference are not journaled (those items will run again on
        resume): those it cannot save at all, and those only pickling by value can (a
        lambda, an object of a class made inside a function), which a later program
        would get back as copies, not as its own. A warning says so once per call.
        """
        if pickled is None:
            try:
                payload: bytes | memoryview = pickle.dumps(pack(list(values)), PROTOCOL)
            except Exception as exc:
                self._warn_unsaved(start, len(values), f"{type(exc).__name__}: {exc}")
                return
        elif by_value(pickled):
            self._warn_unsaved(start, len(values), "a worker could pickle them by value only")
            return
        else:
            payload = pickled
        if digest is None:
            digest = chunk_digest(items)
        self._put(DoneEntry(start, len(values), digest, payload))

    def _warn_unsaved(self, start: int, count: int, why: str) -> None:
        if self._warned_unpicklable:
            return
        self._warned_unpicklable = True
        warnings.warn(
            f"checkpoint {self.path}: the results at {positions(start, count)} cannot be "
            f"saved ({why}); a checkpoint keeps results the standard pickle saves by "
            "reference, not those it cannot save, nor those that can be pickled only by "
            "value (a lambda, an object of a class made inside a function), which would "
            "come back as copies: they are not journaled, and their items will run again "
            "on resume",
            RuntimeWarning,
            stacklevel=outside_workpool(),
        )

    def record_failure(self, position: int, error: BaseException) -> None:
        """Note that the item at ``position`` failed for good; it is not done."""
        try:
            text = str(error)
        except Exception:  # the task's exception must reach the caller, not this one
            text = "(its str() failed)"
        self._put(FailedEntry(position, f"{type(error).__name__}: {text}"[:1000]))

    def _put(self, entry: DoneEntry | FailedEntry) -> None:
        try:
            self._writer.put(entry)
        except (OSError, sqlite3.Error) as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: BaseException) -> OSError:
        return OSError(f"checkpoint {self.path} cannot be written: {exc}")

    def flush(self) -> None:
        """Return once everything recorded so far is committed to disk."""
        try:
            self._writer.flush()
        except (OSError, sqlite3.Error) as exc:
            raise self._write_error(exc) from exc

    def stop_writing(self) -> None:
        """Nothing more will be recorded: let the writer commit and close, without waiting.

        Its last commit and its closing (which folds the WAL into the file and flushes
        it) then overlap with what the caller does next, such as stopping its workers;
        ``close()`` waits for them.
        """
        self._writer.stop()

    def close(self) -> None:
        """Commit what is recorded, stop writing and release the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        except (OSError, sqlite3.Error) as exc:
            raise self._write_error(exc) from exc
        finally:
            if self._store is not None:
                self._store.close()
            self._lock.release()


def _check_function(store: JournalStore, identity: FunctionIdentity, call: str | None) -> bool:
    """Make ``identity`` (called as ``call``) the journal's, or raise ``CheckpointMismatch``.

    A journal with no results takes any function. One with results takes another
    function, or another way of calling it, only when ``accept`` was run on it;
    returns True then (adopted). A journal written before the way of calling was
    recorded takes the call's.
    """
    recorded = store.meta("function_digest")
    recorded_call = store.meta("call")
    accepting = store.meta("accept_next") == "1"
    same_call = call is None or recorded_call is None or recorded_call == call
    if recorded == identity.digest and same_call:
        updates: dict[str, str | None] = {}
        if accepting:  # the next call came, with the same function: nothing to adopt
            updates["accept_next"] = None
        if call is not None and recorded_call is None:
            updates["call"] = call
        if updates:
            store.set_meta(updates)
        return False
    if recorded is not None and store.items_done() and not accepting:
        name = store.meta("function") or "another function"
        start_over = (
            f"to start over, run `workpool checkpoint clear {store.path}` or use another file"
        )
        if recorded == identity.digest:
            raise CheckpointMismatch(
                f"checkpoint {store.path} holds results of {name} called as "
                f"{recorded_call} (by {_CALLS.get(str(recorded_call), 'another call')}), "
                f"not as {call} (by {_CALLS.get(str(call), 'this call')}), which gives other "
                f"results. Resume it with the call that began it; {start_over}"
            )
        # The Python that compiled the journal's function: the one that adopted it,
        # else the one that made the file.
        written_under = store.meta("function_python") or store.meta("python")
        if name == identity.name and written_under not in (None, this_python()):
            what = (
                f"{name} as {written_under} compiled it; this is {this_python()}, which "
                "compiles functions differently (unless its code, defaults or closure "
                "changed too)"
            )
        elif name == identity.name:
            what = f"{name} as it was then; its code, defaults or closure have changed since"
        else:
            what = f"{name}, not of {identity.name}"
        raise CheckpointMismatch(
            f"checkpoint {store.path} holds results of {what}. If the results are still "
            f"right (say, after a fix that does not change them, or a Python upgrade), run "
            f"`workpool checkpoint accept {store.path}` and call again; {start_over}"
        )
    adopt: dict[str, str | None] = {
        "function": identity.name,
        "function_digest": identity.digest,
        "function_python": this_python(),
        "accept_next": None,
    }
    if call is not None:
        adopt["call"] = call
    store.set_meta(adopt)
    return recorded is not None and accepting


# How map and starmap call the function on an item (the journal's "call").
_CALLS = {"fn(item)": "map", "fn(*item)": "starmap, or map over several iterables"}


def summary(path: str) -> Summary:
    """What the checkpoint at ``path`` holds; reads only, even while a call writes it."""
    store = JournalStore.open(path, readonly=True)
    try:
        with sqlite_errors(path):
            return store.summary()
    finally:
        store.close()


def clear(path: str) -> None:
    """Empty the checkpoint at ``path`` (``CheckpointBusy`` while a call uses it)."""
    with _opened_for_change(path) as store:
        store.clear()


def accept(path: str) -> bool:
    """Let the next call's function become the journal's, keeping the results.

    Returns False when there was nothing to accept (no results, or no function yet).
    """
    with _opened_for_change(path) as store:
        if store.meta("function_digest") is None or not store.items_done():
            return False
        store.set_meta({"accept_next": "1"})
        return True


@contextlib.contextmanager
def _opened_for_change(path: str) -> Iterator[JournalStore]:
    """An existing checkpoint, open for a change, under its lock."""
    summary(path)  # refuses, read-only, a file that is missing or not a checkpoint
    lock = JournalLock(path)
    try:
        store = JournalStore.open(path)
        try:
            with sqlite_errors(path):
                yield store
        finally:
            store.close()
    finally:
        lock.release()
