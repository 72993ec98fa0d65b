"""The in-memory record of one call's timeline, cheap enough to keep on for real work.

Whoever takes part in a traced call reports to one ``Recorder``: a span is four
values appended to a list, a chunk is a tuple of ten integers and strings. Nothing is
converted, sorted or formatted while the call runs; ``timeline.finish`` hands
everything to the Chrome trace writer once. Reporting is safe from any thread
(``list.append`` is atomic; only creating a track takes a lock, once per track).

Every timestamp is ``workpool.clock.now_ns()``, the same clock in every process of
the machine; the engines put readings from elsewhere on it before reporting them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any

from workpool.clock import now_ns
from workpool.named_files import SQLITE_MAGIC, creation_error, no_directory, tilde_hint
from workpool.timeline.snapshots import FIRST_AFTER, Rewriter

__all__ = ["OUTCOMES", "Recorder", "TrackInfo", "checked_path"]

# How a chunk ended: every item returned, some item raised, its worker died, or a
# task ran past task_timeout (and its worker was stopped).
OUTCOMES = ("ok", "error", "crashed", "timeout")


class TrackInfo:
    """One row of the timeline: a worker, or one kind of work of the caller.

    ``group`` names the set of tracks shown together (a process, or a cluster node).
    """

    __slots__ = ("group", "name")

    def __init__(self, name: str, group: str) -> None:
        self.name = name
        self.group = group


# Records, as plain tuples (cheap to build in the hot path):
#   span:    (track, name, category, begin_ns, end_ns, args or None)
#   chunk:   (track, start, count, attempt, outcome, errors,
#             received_ns, run_ns, ran_ns, returned_ns, retried)
#            receiving is [received, run), running [run, ran), returning [ran, returned);
#            retried: offsets of items that raised and are tried again
#   instant: (track, name, category, at_ns, args)
SpanRecord = tuple[int, str, str, int, int, "dict[str, Any] | None"]
ChunkRecord = tuple[int, int, int, int, str, int, int, int, int, int, tuple[int, ...]]
InstantRecord = tuple[int, str, str, int, "dict[str, Any]"]


def checked_path(path: str | os.PathLike[str]) -> str:
    """``path`` as an absolute path, if a file can be created there; raise at once if not.

    Absolute, so the trace goes where the call began even if the program (or, on
    threads or the calling thread, the function) changes its working directory.
    """
    text = os.fspath(path)
    if os.path.isdir(text):
        raise IsADirectoryError(f"trace={text!r} is a directory; name the file to write")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        error, why = no_directory(directory)
        raise error(
            f"trace={text!r}: the directory {directory!r} {why}, "
            f"so the timeline could not be written{tilde_hint(text)}"
        )
    # The file is written under a temporary name in that directory, then renamed: make
    # one now, so that a directory nothing can be created in fails before the work.
    failure = creation_error(directory)
    if failure is not None:
        raise type(failure)(
            f"trace={text!r}: the directory {directory!r} cannot be written to "
            f"({failure.strerror or failure}), so the timeline could not be written"
        )
    if os.path.exists(text) and not os.path.isfile(text):  # a device, a FIFO...
        raise ValueError(
            f"trace={text!r} is not a regular file, which the timeline would replace; "
            "name a file to write"
        )
    if _is_sqlite_database(text):
        raise ValueError(
            f"trace={text!r} is an SQLite database (a checkpoint= file, say), which the "
            "timeline would replace; it was left as it is: name another file"
        )
    return os.path.abspath(text)


def _is_sqlite_database(path: str) -> bool:
    """Whether ``path`` is a file that begins as an SQLite database does."""
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:  # no such file (the usual case), or one that cannot be read
        return False


def _no_rewrite() -> None:
    """What a recorder rewrites with before the call's writer is given, and after it ends."""


class Recorder:
    """Collects one call's timeline; ``workpool.timeline.finish`` writes it, once.

    ``path`` is checked now, so a typo fails before the work starts rather than after.
    ``facts`` (the backend, the number of workers, the function's name...) are stored
    in the file's metadata. All reporting methods may be called from any thread.
    """

    def __init__(self, path: str | os.PathLike[str], **facts: Any) -> None:
        self.path = self._checked_path(path)
        self.facts = facts
        self.begun_ns = now_ns()
        # The group of the caller's own tracks (and of worker threads, which live in it).
        self.caller_group = f"caller (pid {os.getpid()})"
        self.tracks: list[TrackInfo] = []
        self.spans: list[SpanRecord] = []
        self.chunks: list[ChunkRecord] = []
        self.instants: list[InstantRecord] = []
        self._track_ids: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._written = False
        # Held by whoever writes the file (chrome.write_trace): the final write and the
        # rewrites of a long call's file (snapshots.py) take turns.
        self.file_lock = threading.Lock()
        self._rewrite_at_ns: int | None = None  # when note_progress starts the rewriter
        self._rewrite: Callable[[], None] = _no_rewrite
        self._rewriter: Rewriter | None = None
        # The engine of the Pool the call runs on (timeline.calls.open_trace), if any.
        self.pool: Any = None

    @staticmethod
    def _checked_path(path: str | os.PathLike[str]) -> str:
        """``path`` as a string; raises if the trace could not be written there."""
        return checked_path(path)

    def track(self, key: Hashable, name: str, group: str) -> int:
        """The number of the track for ``key``, created (named ``name``) on first use.

        ``key`` identifies what the track follows, e.g. ``("process", pid)``; a later
        call with the same key returns the same track and ignores the other arguments.
        """
        number = self._track_ids.get(key)
        if number is not None:
            return number
        with self._lock:
            number = self._track_ids.get(key)
            if number is None:
                number = len(self.tracks)
                self.tracks.append(TrackInfo(name, group))
                self._track_ids[key] = number
        return number

    def caller_track(self, activity: str) -> int:
        """The caller's track for ``activity`` ("input", "results", "pool"...)."""
        return self.track(("caller", activity), f"caller: {activity}", self.caller_group)

    def worker_track(self, label: str, group: str | None = None) -> int:
        """The track of the worker ``label`` names, in ``group`` (default: the caller's)."""
        return self.track(("worker", label), label, group or self.caller_group)

    def span(
        self,
        track: int,
        name: str,
        category: str,
        begin_ns: int,
        end_ns: int,
        args: dict[str, Any] | None = None,
    ) -> None:
        """Something took ``[begin_ns, end_ns)`` on ``track``."""
        self.spans.append((track, name, category, begin_ns, end_ns, args))

    def chunk(
        self,
        track: int,
        start: int,
        count: int,
        attempt: int,
        outcome: str,
        times: tuple[int, int, int, int],
        errors: int = 0,
        retried: tuple[int, ...] = (),
    ) -> None:
        """A chunk's ``count`` items from input position ``start`` ran on ``track``.

        ``times`` are when the worker began receiving it, began and finished running
        it, and finished returning the results; ``outcome`` is one of ``OUTCOMES``,
        ``errors`` the number of items that raised, ``retried`` the offsets of those
        that are tried again (a later span decides them).
        """
        received, run, ran, returned = times
        self.chunks.append(
            (track, start, count, attempt, outcome, errors, received, run, ran, returned, retried)
        )

    def instant(
        self, track: int, name: str, category: str, at_ns: int, args: dict[str, Any]
    ) -> None:
        """Something happened at ``at_ns`` on ``track`` (a crash, a timeout, a retry)."""
        self.instants.append((track, name, category, at_ns, args))

    def fault(
        self,
        track: int,
        outcome: str,
        chunk: tuple[int, int, int],
        begin_ns: int,
        end_ns: int,
        position: int | None,
        reason: str,
    ) -> None:
        """A chunk's worker crashed (``outcome`` "crashed") or was stopped ("timeout").

        ``chunk`` is its (start, count, attempt); it ran on ``track`` from ``begin_ns``
        until the fault was noticed at ``end_ns``. The instant event ("crash" or
        "timeout") names the task at fault by its input ``position``, when known.
        """
        start, count, attempt = chunk
        self.chunks.append(
            (track, start, count, attempt, outcome, 0, begin_ns, begin_ns, end_ns, end_ns, ())
        )
        name = "crash" if outcome == "crashed" else "timeout"
        self.instants.append(
            (track, name, "fault", end_ns, {"position": position, "reason": reason})
        )

    def rewrite_while_running(self, write: Callable[[], None]) -> None:
        """Have ``write`` rewrite the file as the call goes, from ``FIRST_AFTER`` seconds on."""
        self._rewrite = write
        self._rewrite_at_ns = self.begun_ns + int(FIRST_AFTER * 1e9)

    def note_progress(self) -> None:
        """A result came in: the moment to start rewriting the file, if it is due."""
        due = self._rewrite_at_ns
        if due is None or now_ns() < due:
            return
        with self._lock:
            if self._rewrite_at_ns is None or self._written:
                return
            self._rewrite_at_ns = None
            self._rewriter = Rewriter(self._rewrite)

    def stop_rewriting(self) -> None:
        """No more rewrites (the call has ended); waits for one in progress."""
        with self._lock:
            self._rewrite_at_ns = None
            rewriter, self._rewriter = self._rewriter, None
            # The writer holds this recorder (a cycle): let the spans go with the call.
            self._rewrite = _no_rewrite
        if rewriter is not None:
            rewriter.stop()

    @property
    def written(self) -> bool:
        """Whether the final write has been claimed: no rewrite may follow it."""
        return self._written

    def claim_writing(self) -> bool:
        """True the first time it is called, False after: the trace is written once."""
        with self._lock:
            if self._written:
                return False
            self._written = True
            return True
