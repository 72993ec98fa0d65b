"""The one thread that writes a checkpoint file, committing in batches.

::

    the call's thread                       the journal writer thread
      record(): digest + pickle  ──queue──►  BEGIN; insert each entry as it comes
                                            (big results: side file first)
                                            COMMIT when it has caught up, but not
                                            within COMMIT_GAP of the last commit;
                                            COMMIT anyway once COMMIT_INTERVAL has
                                            passed since BEGIN or COMMIT_BYTES of
                                            results are in; at once for flush or stop

The writer commits when it has caught up with the call, at most once per
``COMMIT_GAP``: a commit costs far more than inserting a small chunk's results (it
writes the table's 64 KiB pages again), so chunks that come every millisecond share
a commit, while chunks that come slowly are each committed as soon as the gap since
the last commit allows. Committing by the MiB keeps the WAL folded into the file as
the call goes (``store``'s checkpoints follow the commits), so little of that work
is left for the end of the call, where it would delay the return. No transaction
stays open longer than ``COMMIT_INTERVAL``. A process killed at some instant loses
only the entries of the open transaction (finished within the last interval at
most, usually within the last ``COMMIT_GAP``) and the chunks still in flight in the
workers. The queue is bounded, by entries and by the bytes of results in it, so a
writer slower than the workers slows the call down instead of holding every pickled
result in memory (64 entries of 50 MB results would be 3 GB).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from workpool.checkpoint.store import JournalStore
from workpool.daemons import DAEMONS

__all__ = ["COMMIT_INTERVAL", "DoneEntry", "FailedEntry", "JournalWriter"]

COMMIT_INTERVAL = 0.2  # seconds from the first uncommitted entry to its commit
COMMIT_GAP = 0.02  # seconds from one commit to the next, unless one is due anyway
COMMIT_BYTES = 1 << 20  # results in a transaction beyond which it is committed
MAX_QUEUED = 64  # entries waiting for the writer; record() blocks beyond this
# Bytes of results waiting for the writer; record() blocks beyond this, except that an
# entry always gets in when nothing waits (one result may be larger than the bound).
MAX_QUEUED_BYTES = 64 << 20


class DoneEntry:
    """Positions ``[start, start + count)`` finished; their digest and pickled results."""

    __slots__ = ("count", "digest", "nbytes", "payload", "start")

    def __init__(self, start: int, count: int, digest: bytes, payload: bytes | memoryview) -> None:
        self.start = start
        self.count = count
        self.digest = digest
        self.payload = payload
        self.nbytes = memoryview(payload).nbytes  # counted against MAX_QUEUED_BYTES


class FailedEntry:
    """The item at ``position`` failed for good (it will run again on resume)."""

    __slots__ = ("error", "position")

    def __init__(self, position: int, error: str) -> None:
        self.position = position
        self.error = error

    nbytes = 0  # its text is bounded, and small


_STOP = object()


class JournalWriter:
    """Owns a store's writes, on a thread of its own. ``put`` from one thread at a time.

    The thread starts with the first entry, or, when ``hold`` is True, only once
    ``release()`` is called: entries put before that wait in a list. A call holds it
    until its workers have started, because a process pool started while the program
    runs another thread cannot fork its workers from a zygote (see the process
    backend) and starts them more slowly.

    A failure to write (a full disk, say) stops the writing; it is raised, once, by the
    next ``put``, ``flush`` or ``close``. Entries put after it are dropped.
    """

    def __init__(
        self,
        open_store: Callable[[], JournalStore],
        interval: float = COMMIT_INTERVAL,
        *,
        hold: bool = False,
    ) -> None:
        self._open_store = open_store
        self._interval = interval
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        # The bytes of results in the queue: added by _enqueue, taken off by the writer
        # once it has written (or discarded) an entry, which wakes a waiting _enqueue.
        self._queued_bytes = 0
        self._room = threading.Condition(threading.Lock())
        self._failure: BaseException | None = None
        self._failure_reported = False
        self.commits = 0  # how many transactions were committed (for tests and info)
        self._last_commit = -COMMIT_GAP  # time.monotonic() after the last commit
        # Cuts short the writer's wait while entries gather (a flush, a stop, a queue
        # filling up); only a hint: what to do is always read from the queue.
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workpool-journal", daemon=DAEMONS)
        self._held: list[DoneEntry | FailedEntry] | None = [] if hold else None
        self._stopped = False

    def put(self, entry: DoneEntry | FailedEntry) -> None:
        """Queue an entry; blocks while the queue is full."""
        self._raise_failure()
        if self._held is not None:
            self._held.append(entry)
            return
        self._start()
        self._enqueue(entry)

    def release(self) -> None:
        """Let the thread start (with the entries held so far, if any); idempotent."""
        held, self._held = self._held, None
        if held:
            self._start()
            for entry in held:
                self._enqueue(entry)

    def _enqueue(self, entry: DoneEntry | FailedEntry) -> None:
        with self._room:
            while self._queued_bytes and self._queued_bytes + entry.nbytes > MAX_QUEUED_BYTES:
                self._wake.set()  # the writer may be letting entries gather: take them now
                self._room.wait()
            self._queued_bytes += entry.nbytes
        self._queue.put(entry)
        if self._queue.qsize() >= MAX_QUEUED // 2:
            self._wake.set()  # the writer may be letting entries gather: take them now

    def flush(self) -> None:
        """Return once every entry put so far is committed."""
        self.release()
        if not self._thread.is_alive():
            self._raise_failure()
            return
        done = threading.Event()
        self._queue.put(done)
        self._wake.set()
        done.wait()
        self._raise_failure()

    def stop(self) -> None:
        """No more entries: the thread commits what is queued and ends; returns at once."""
        if not self._stopped:
            self.release()
            self._stopped = True
            if self._thread.is_alive():
                self._queue.put(_STOP)
                self._wake.set()

    def close(self) -> None:
        """Commit what is queued and stop the thread, waiting for it (idempotent)."""
        self.stop()
        if self._thread.ident is not None:
            self._thread.join()
        self._raise_failure()

    def _start(self) -> None:
        if self._thread.ident is None and not self._stopped:
            self._thread.start()

    def _raise_failure(self) -> None:
        if self._failure is not None and not self._failure_reported:
            self._failure_reported = True
            raise self._failure

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        store: JournalStore | None = None
        try:
            store = self._open_store()
            while self._commit_a_batch(store):
                pass
        except BaseException as exc:  # kept for the caller; the thread must not die loudly
            self._failure = exc
            if store is not None:
                store.rollback()
            self._drain()
        finally:
            if store is not None:
                store.close()

    def _commit_a_batch(self, store: JournalStore) -> bool:
        """Wait for an entry; write entries while more come, then commit.

        The transaction is committed once the queue is empty and ``COMMIT_GAP`` has
        passed since the last commit (entries that come meanwhile join it); in any
        case once ``interval`` has passed since it began, so a busy queue cannot keep
        results uncommitted for longer, or once it holds ``COMMIT_BYTES`` of results;
        a flush or a stop commits at once. Returns False when told to stop.
        """
        entry = self._queue.get()
        if entry is _STOP:
            return False
        if isinstance(entry, threading.Event):
            entry.set()
            return True
        flushed: list[threading.Event] = []
        stale: list[str] = []
        keep_going = True
        store.begin()
        written = self._write(store, entry, stale)
        deadline = time.monotonic() + self._interval
        not_before = self._last_commit + COMMIT_GAP
        while written < COMMIT_BYTES and time.monotonic() < deadline:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                if now >= not_before or now >= deadline:
                    break  # caught up: commit
                # Too soon to commit again: let entries gather until the gap's end,
                # woken once then rather than by each of them.
                self._wake.wait(min(not_before, deadline) - now)
                self._wake.clear()  # before looking at the queue again: no wake-up lost
                continue
            if entry is _STOP:
                keep_going = False
                break
            if isinstance(entry, threading.Event):
                flushed.append(entry)
                break
            written += self._write(store, entry, stale)
        store.sync_side_directory()
        store.commit()
        self._last_commit = time.monotonic()
        self.commits += 1
        store.remove_side_files(stale)
        for event in flushed:
            event.set()
        return keep_going

    def _write(self, store: JournalStore, entry: DoneEntry | FailedEntry, stale: list[str]) -> int:
        """Write one entry (inside a transaction); returns the bytes of results it held."""
        try:
            if isinstance(entry, DoneEntry):
                stale += store.put_done(entry.start, entry.count, entry.digest, entry.payload)
            else:
                store.put_failed(entry.position, entry.error)
        finally:
            self._taken(entry)
        return entry.nbytes

    def _taken(self, entry: DoneEntry | FailedEntry) -> None:
        """The entry is out of the queue for good: its bytes no longer count."""
        if entry.nbytes:
            with self._room:
                self._queued_bytes -= entry.nbytes
                self._room.notify_all()

    def _drain(self) -> None:
        """After a failure: discard entries, answer flushes, until told to stop."""
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            if isinstance(entry, threading.Event):
                entry.set()
            elif isinstance(entry, (DoneEntry, FailedEntry)):
                self._taken(entry)
