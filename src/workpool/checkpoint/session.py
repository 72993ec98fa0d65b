"""One call's use of its checkpoint: the input read against the journal, results journaled.

::

    the call's input ─► take(size) ─► Piece(start, items, results, digest)
                          │  a journaled row starts here: read as many items as it
                          │  holds, check their digest (CheckpointMismatch names the
                          │  positions), hand back its results: nothing runs
                          └─ otherwise: up to ``size`` items, never past the next
                             journaled row; ``results`` is None: they are to run
    the run's batches ─► record(): each run of final successes becomes a journal
                         row; final failures are noted, never journaled as done

Every position is read once, in order, whether it runs or comes from the journal, so
the call hands back exactly what an uninterrupted run would. A journaled row the input
ends inside of cannot be checked (its digest covers items that are gone): its positions
run again. The session lives in the call's thread; only the journal's writer has a
thread of its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

from workpool.checkpoint.digest import digest_and_encodings, part_digest
from workpool.checkpoint.journal import Journal
from workpool.checkpoint.store import Row, check_usable
from workpool.clock import now_ns
from workpool.errors import is_cancelled, outside_workpool
from workpool.inputs import InputSource
from workpool.segments import holds_writable_share, writable_shares_exist

if TYPE_CHECKING:  # only a traced call has one
    from workpool.timeline import Recorder

__all__ = [
    "CheckpointSession",
    "Gap",
    "Piece",
    "check_call",
    "refuse_unordered_input",
    "refuse_writable_shares",
]

# Types whose values cannot hold shared memory: chunks of these are not searched.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


class Piece(NamedTuple):
    """Consecutive items from input position ``start``.

    ``results`` holds their journaled results, or is None when they are to run;
    ``digest`` is the items' ``chunk_digest`` (None when there are no items), and
    ``encodings`` each item's encoding when the items could be changed in place by
    the function (see ``digest_and_encodings``): parts of them are digested from those.
    """

    start: int
    items: Sequence[Any]
    results: list[Any] | None
    digest: bytes | None
    encodings: list[bytes] | None = None


def _writable_share_message(where: str) -> str:
    return (
        f"{where} holds memory shared with share(writable=True); a checkpoint cannot "
        "restore what workers write there, so such arguments cannot be checkpointed: "
        "share it read-only (and return what the workers compute), or leave out checkpoint="
    )


def refuse_writable_shares(fn: Callable[..., Any]) -> None:
    """Raise ``ValueError`` if ``fn`` carries ``share(writable=True)`` memory along.

    Looks where a callable keeps arguments: a partial's arguments and keywords, a
    function's defaults and closure, a bound method's object's attributes.
    """
    seen: set[int] = set()

    def carried(obj: Any) -> list[Any]:
        if id(obj) in seen:
            return []
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            return [obj.func, *obj.args, *obj.keywords.values()]
        if isinstance(obj, types.MethodType):
            return [obj.__func__, *getattr(obj.__self__, "__dict__", {}).values()]
        if isinstance(obj, types.FunctionType):
            cells = []
            for cell in obj.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    cells.append(cell.cell_contents)
            return [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values(), *cells]
        return []

    pending = [fn]
    while pending:
        obj = pending.pop()
        if holds_writable_share(obj):
            raise ValueError(
                _writable_share_message("the function's arguments (partial, defaults or closure)")
            )
        pending.extend(carried(obj))


# Values whose hashes, so whose order in a set, are the same in every run of a program.
_SEEDLESS = frozenset({int, float, bool, complex, type(None)})


def _seedless(value: Any) -> bool:
    kind = type(value)
    return kind in _SEEDLESS or (kind is tuple and all(map(_seedless, value)))


def check_call(path: str, fn: Callable[..., Any], inputs: InputSource) -> None:
    """Refuse a call's checkpoint when the call is made, as any other bad argument.

    Everything that can be refused before the journal is opened (and locked), which a
    lazy call does at its first ``next()``: the function, the input, the path.
    """
    refuse_writable_shares(fn)
    refuse_unordered_input(path, inputs)
    check_usable(os.path.abspath(path))


def refuse_unordered_input(path: str, inputs: InputSource) -> None:
    """Raise ``ValueError`` if the input is a set iterated in another order in each run.

    Strings and bytes hash under a seed drawn per process, objects by their address:
    a set of them lists its items in another order each time the program runs, so a
    checkpoint of it could never be resumed. Numbers (and tuples of them) hash alike
    in every run: a set of them, built alike, keeps its order.
    """
    for source in inputs.sources:
        if not isinstance(source, (set, frozenset)):
            continue
        kinds = set(map(type, source))
        if kinds <= _SEEDLESS or all(map(_seedless, source)):
            continue
        names = ", ".join(sorted(kind.__name__ for kind in kinds))
        raise ValueError(
            f"checkpoint {os.path.abspath(path)}: the input is a set (of {names}), which "
            "is iterated in another order in each run of a program, so a resumed call "
            "could not match the results to their items: pass a list in an order of your "
            "own, such as sorted(items)"
        )


class CheckpointSession:
    """A call's input, read against its checkpoint, and the journaling of its outcomes.

    Opening it opens the journal (``CheckpointBusy``, ``CheckpointMismatch``, bad-file
    errors) and refuses ``share(writable=True)`` arguments; nothing has run yet.
    Used from the call's thread only. ``close()`` commits and lets the file go.
    """

    def __init__(
        self,
        path: str,
        fn: Callable[..., Any],
        inputs: InputSource,
        *,
        star: bool,
        trace: Recorder | None = None,
    ) -> None:
        refuse_writable_shares(fn)
        refuse_unordered_input(path, inputs)
        # A traced call: each journaled row read back is a "checkpoint" span on a
        # caller track of its own (its positions ran in no chunk of this call).
        self._trace = trace
        self._trace_track = -1 if trace is None else trace.caller_track("checkpoint")
        # The writer thread waits for the call's workers to start (start_writing).
        # ``star``: each item is unpacked into the arguments (starmap), whose results
        # differ from those of the same items passed whole (map).
        call = "fn(*item)" if star else "fn(item)"
        self.journal = Journal(path, fn, call=call, hold_writer=True)
        self._inputs = inputs
        self.position = 0  # the input position of the next item to read
        self.items_done = self.journal.items_done  # journaled when the call started
        self._rows: Iterator[Row] = self.journal.rows()
        try:
            self._row: Row | None = next(self._rows, None)
        except BaseException:
            self.journal.close()
            raise
        self._ended = False
        self._back: Sequence[Any] | None = None  # items read, then put back (see _put_back)
        self._warned_unreadable = False
        self._warned_empty = False
        # What the input raised, if it did: the items read before it are handed out
        # (they run, as they would without a checkpoint), then the input counts as
        # ended; the call raises this after their results.
        self.input_failure: Exception | None = None

    def start_writing(self) -> None:
        """The call's workers are running: journaling may start its thread now."""
        self.journal.release_writer()

    # --- reading the input --------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """Whether a read has found the end of the input (without reading ahead)."""
        return self._ended and self._back is None

    def at_end(self) -> bool:
        """Whether the input has no item left (reads one item ahead to know)."""
        if self._back is not None:
            return False
        if not self._ended:
            self._ended = self._inputs.at_end()
            if self._ended:
                self._input_ended()
        return self._ended

    def take(self, size: int) -> Piece:
        """The next piece of input: a journaled row's worth, or up to ``size`` items to run.

        An empty piece means the input has ended. Raises ``CheckpointMismatch`` when a
        journaled row's positions now hold other items. An input that raises ends
        there: the piece holds the items read before, and ``input_failure`` the error.
        """
        row = self._next_row()
        start = self.position
        if row is not None and row.start == start:
            began = 0 if self._trace is None else now_ns()
            self._row = next(self._rows, None)
            results = self._results(row)
            if results is not None:
                items = self._read(row.size)
                self._refuse_shares(items)
                if len(items) == row.size:
                    self.journal.verify(row, items)
                    if self._trace is not None:
                        self._trace.span(
                            self._trace_track,
                            "from checkpoint",
                            "checkpoint",
                            began,
                            now_ns(),
                            {"start": start, "count": row.size},
                        )
                    return Piece(start, items, results, row.digest)
                # The input ends inside this row: the items it still has run again.
                return _to_run(start, items)
            row = self._next_row()  # an unreadable row counts as not done
        items = self._read(size if row is None else min(size, row.start - start))
        self._refuse_shares(items)
        return _to_run(start, items)

    def leading_done(self) -> Iterator[list[Any]]:
        """The results of the journaled rows at the head of the input, a row at a time.

        Stops at the first position that has to run, or at the end of the input.
        """
        while True:
            row = self._next_row()
            if row is None or row.start != self.position:
                return
            piece = self.take(row.size)
            results = piece.results
            if results is None:  # the input ended inside the row, or it is unreadable
                self._put_back(piece.items)
                return
            # Hold no reference while the next row is read: the memory of a list the
            # caller is done with is then there to be used again for the next one.
            del piece
            yield results
            del results

    def gap(self) -> Gap:
        """A source of the items up to the next journaled row (for ``backend="auto"``)."""
        return Gap(self)

    def _next_row(self) -> Row | None:
        # Rows that start before the position (one the input ended inside of, on an
        # earlier call, overlapped by what ran since) no longer count.
        while self._row is not None and self._row.start < self.position:
            self._row = next(self._rows, None)
        return self._row

    def _read(self, count: int) -> Sequence[Any]:
        back = self._back
        if back is not None:
            # Items put back were read when the input ended: nothing follows them.
            items, rest = back[:count], back[count:]
            self._back = rest if len(rest) else None
            if len(items) < count:
                self._ended = True
        elif self.input_failure is not None:
            items = []  # nothing more is read from an input that raised
            self._ended = True
        else:
            try:
                items = self._inputs.take(count)
            except Exception as exc:
                items = self._inputs.salvage()
                self.input_failure = exc
                self._ended = True
            if len(items) < count:
                self._ended = True
            self.position += len(items)
            if self._ended:
                self._input_ended()
            return items
        self.position += len(items)
        return items

    def _input_ended(self) -> None:
        """The input has just ended: say so if it had nothing for a journal of results."""
        if self.position or self.input_failure is not None or not self.items_done:
            return
        if self._warned_empty:
            return
        self._warned_empty = True
        warnings.warn(
            f"checkpoint {self.journal.path} holds the results of {self.items_done} items, "
            "but this call's input has none, so it returns none: was it an iterator or a "
            "generator that an earlier call used up? They can be read only once: pass a "
            "new one (the results the checkpoint holds are not computed again)",
            RuntimeWarning,
            stacklevel=outside_workpool(),
        )

    def _put_back(self, items: Sequence[Any]) -> None:
        """Undo the last read of ``items``: they will be read (and run) again."""
        self.position -= len(items)
        self._back = items if len(items) else None
        self._ended = not len(items)

    def _results(self, row: Row) -> list[Any] | None:
        try:
            return self.journal.results(row)
        except ValueError as exc:
            if not self._warned_unreadable:
                self._warned_unreadable = True
                warnings.warn(
                    f"{exc}; they run again", RuntimeWarning, stacklevel=outside_workpool()
                )
            return None

    def _refuse_shares(self, items: Sequence[Any]) -> None:
        if not writable_shares_exist() or type(items) is range:
            return
        kinds = set(map(type, items))
        if kinds <= _PLAIN or (
            kinds == {tuple} and set(map(type, chain.from_iterable(items))) <= _PLAIN
        ):
            return  # plain values, or tuples of them (starmap's arguments)
        for offset, item in enumerate(items):
            if holds_writable_share(item):
                position = self.position - len(items) + offset
                raise ValueError(_writable_share_message(f"the input at position {position}"))

    # --- journaling outcomes ------------------------------------------------------------

    def record(
        self,
        start: int,
        items: Sequence[Any],
        values: Sequence[Any],
        errors: Mapping[int, BaseException],
        retried: frozenset[int] = frozenset(),
        digest: bytes | None = None,
        pickled: bytes | memoryview | None = None,
        encodings: Sequence[bytes] | None = None,
    ) -> None:
        """Journal the final outcomes of ``items`` (input positions from ``start``).

        ``values[i]`` is the result of ``items[i]`` unless ``i`` is in ``errors``
        (a final failure, noted as such) or in ``retried`` (not final yet: it will come
        again). ``digest`` is that of all of ``items``, if known; ``pickled`` the
        pickle of ``(values, [])`` a process worker sent, if at hand; ``encodings``
        those of ``items`` made before they ran, if any (their ``Piece``'s).
        """
        if not errors and not retried:
            if digest is None and encodings is not None:
                digest = part_digest(items, encodings, 0, len(items))
            self.journal.record(start, items, values, digest, pickled)
            return
        first_ok: int | None = None
        for offset in range(len(items) + 1):
            final_success = offset < len(items) and offset not in errors and offset not in retried
            if final_success:
                if first_ok is None:
                    first_ok = offset
                continue
            if first_ok is not None:
                part = None
                if encodings is not None:
                    part = part_digest(items, encodings, first_ok, offset)
                self.journal.record(
                    start + first_ok, items[first_ok:offset], values[first_ok:offset], part
                )
                first_ok = None
            error = errors.get(offset)
            if error is not None and offset not in retried and not is_cancelled(error):
                self.journal.record_failure(start + offset, error)

    def stop_writing(self) -> None:
        """Nothing more will be recorded: the journal commits and closes, without waiting."""
        self.journal.stop_writing()

    def close(self) -> None:
        """Commit what is journaled and let the file go (idempotent)."""
        self.journal.close()


def _to_run(start: int, items: Sequence[Any]) -> Piece:
    """A piece of items to run, digested now, before the function can change them."""
    if not len(items):
        return Piece(start, items, None, None)
    digest, encodings = digest_and_encodings(items)
    return Piece(start, items, None, digest, encodings)


class Gap:
    """The items up to the next journaled row: ``take`` returns nothing past it.

    ``pieces`` holds each take as a ``Piece``: the items are digested as they are read,
    before anything runs them (a function may change its input items in place, in
    threads or in the calling thread, and the journal must know them as the input
    holds them). ``record`` journals their outcomes by those pieces.
    """

    def __init__(self, session: CheckpointSession) -> None:
        self._session = session
        row = session._next_row()
        self._end = None if row is None else row.start
        self.pieces: list[Piece] = []

    def take(self, count: int) -> Sequence[Any]:
        session = self._session
        if self._end is not None:
            count = min(count, self._end - session.position)
        if count <= 0:
            return []
        items = session._read(count)
        session._refuse_shares(items)
        if len(items):
            self.pieces.append(_to_run(session.position - len(items), items))
        return items

    def record(
        self, first: int, items: Sequence[Any], values: Sequence[Any], errors: Mapping[int, Any]
    ) -> None:
        """Journal the outcomes of ``items``, taken from here, from position ``first``."""
        session = self._session
        end = first + len(items)
        if [p for p in self.pieces if first <= p.start < end] != self.pieces or (
            sum(len(p.items) for p in self.pieces) != len(items)
        ):  # not the items taken here, in order: digested as they are now
            session.record(first, items, values, errors)
            return
        for piece in self.pieces:
            low = piece.start - first
            high = low + len(piece.items)
            failed = {at - low: error for at, error in errors.items() if low <= at < high}
            session.record(
                piece.start,
                items[low:high],
                values[low:high],
                failed,
                digest=piece.digest,
                encodings=piece.encodings,
            )
