"""One map/imap/starmap call: feeds chunks to a backend and turns batches into results.

A run lives in the thread that consumes its results. It reads the input lazily, a
chunk at a time, keeping a bounded window of chunks in flight; it puts results back in
input order (or yields them as they come), applies ``retries`` and
``return_exceptions``, and drives the progress bar. Backend threads only ever call
``claim`` and ``deliver``; everything else happens in the consumer's thread.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence

from workpool._options import RunOptions
from workpool.backends.base import Backend, ShutDown, call_items_timed
from workpool.chunking import ChunkSizer
from workpool.clock import capped_wait, now_ns
from workpool.errors import about_the_pool, call_timed_out, note_origin
from workpool.inputs import InputSource
from workpool.segments import numpy_if_array
from workpool.sharing import SharingContext
from workpool.tasks import CallMode, Chunk, ResultBatch, call_items

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:  # imported only by calls that have a checkpoint (it loads sqlite3)
    from workpool.checkpoint.session import CheckpointSession
    from workpool.timeline import Recorder  # imported only by traced calls

__all__ = [
    "MapRun",
    "RetryPolicy",
    "joined",
    "note_input_failure",
    "one_by_one",
    "run_inline",
    "start_progress_bar",
]

_NONE: frozenset[int] = frozenset()

# An ordered run reads at most this many windows of chunks ahead of the results it has
# yielded: finished chunks wait there for a slower one before them (memory), while the
# window itself bounds the chunks still running (workers kept busy).
HELD_WINDOWS = 4


def one_by_one(lists: Generator[list[Any], None, None]) -> Generator[Any, None, None]:
    """The items of ``lists``, one at a time; closing this closes ``lists``.

    Each item is dropped from its list as it is yielded, so a result the consumer
    lets go of is freed (as ``Executor.map`` promises) rather than kept by the list.
    """
    try:
        for values in lists:
            values.reverse()
            # list.pop() from the end, driven by map in C: no Python step per item.
            yield from map(values.pop, itertools.repeat(-1, len(values)))
    finally:
        lists.close()


def joined(lists: Generator[list[Any], None, None]) -> list[Any]:
    """The items of ``lists`` in one list, extended a list at a time."""
    collected: list[Any] = []
    for values in lists:
        collected.extend(values)
    return collected


def start_progress_bar(total: int | None, fn: Callable[..., Any], done: int = 0) -> Any:
    """A live progress bar named after the function (rich is imported only now).

    ``done`` items count as finished from the start (those a checkpoint holds).
    """
    from workpool.progress import ProgressBar

    if total is not None:
        done = min(done, total)
    return ProgressBar(total, getattr(fn, "__name__", "tasks"), done)


class RetryPolicy:
    """``retries``: the one place that decides which failed items run again.

    Every sink (a map run, a submitted task's Future, ``auto``'s measured items) hands
    its failed batches here. A failed item is submitted again, on its own and counted
    as one more attempt, while it has attempts left and trying again can help
    (``batch.retryable``). ``submit`` is where the items go: a backend, or for items
    run in the calling thread, a function that runs them there.
    """

    __slots__ = ("limit", "submit")

    def __init__(self, limit: int, submit: Callable[[Chunk], None]) -> None:
        self.limit = limit
        self.submit = submit

    def resubmit(self, batch: ResultBatch) -> frozenset[int]:
        """Submit again the failed items of ``batch`` that may be retried; their offsets."""
        chunk = batch.chunk
        if not batch.errors or not batch.retryable or chunk.attempt >= self.limit:
            return _NONE
        retried: set[int] = set()
        for offset in batch.errors:
            again = chunk.split(offset, offset + 1)
            again.attempt += 1
            try:
                self.submit(again)
            except Exception:
                continue  # the pool is stopping or broken: this failure stands
            retried.add(offset)
        return frozenset(retried)

    def describe(self, attempt: int) -> str:
        """How an error note names the attempt that failed ('' without retries)."""
        if not self.limit:
            return ""
        return f" (attempt {attempt + 1} of {self.limit + 1})"

    def annotate(self, error: BaseException, position: int, worker: str, attempt: int) -> None:
        """Note on a task's final error its input position, its worker and the attempt."""
        if about_the_pool(error):
            return  # the pool's own state, shared by many tasks: not this task's story
        where = f" in {worker}" if worker else ""
        note_origin(error, f"the task at input position {position}{where}" + self.describe(attempt))


# Where a task runs whose arguments could not be sent to the backend ``auto`` chose.
HERE = "this process (its arguments cannot be pickled to go elsewhere)"


def note_input_failure(error: BaseException, read: int) -> None:
    """Say on ``error`` that the input raised it, after its first ``read`` items."""
    note_origin(error, f"the input, after its first {read} items")


def run_inline(chunk: Chunk, where: str, *, timed: bool) -> ResultBatch:
    """Run ``chunk`` in this thread, as the serial backend would; ``where`` names it,
    and ``timed`` gives the batch its clock readings (for a timeline)."""
    began = now_ns() if timed else 0
    if chunk.task_timeout is None:
        values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
    else:  # as the serial backend keeps to it
        values, errors, elapsed = call_items_timed(chunk, "this process")
    batch = ResultBatch(chunk, values, errors, elapsed, worker=where)
    if timed:
        ended = now_ns()
        batch.times = (began, began, ended, ended)
    return batch


class _ChunkState:
    """The consumer's record of one chunk of input: its results as they arrive."""

    __slots__ = ("digest", "encodings", "failure", "journaled", "left", "size", "start", "values")

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self.values: list[Any] | None = None
        self.left = size  # items without a final outcome yet (retries pending count)
        self.failure: tuple[int, BaseException] | None = None  # (offset, error) to raise
        self.digest: bytes | None = None  # of the chunk's items, with a checkpoint
        self.encodings: list[bytes] | None = None  # theirs, if they could change (Piece)
        self.journaled = False  # its results came from the checkpoint: nothing ran


class MapRun:
    """Drives one call. Iterate ``results()`` once, from one thread.

    ``eager`` submits the whole input at once (``Executor.map`` semantics: the work
    proceeds whether or not anyone iterates). Otherwise a window of chunks is kept in
    flight, and with ``options.buffersize`` at most that many items ahead of the
    results the consumer has taken. ``raise_in_order`` (ordered runs only)
    delays a failure until the results before it have been yielded; otherwise the first
    failure is raised as soon as it is seen. ``first_position`` is the input position
    of the first item of ``inputs`` (when earlier items were run elsewhere), and
    ``progress_bar`` an already running bar to continue, and ``sharing`` the arrays
    earlier items put in shared memory (released with the run). ``owner`` (a ``Pool``) is kept
    alive as long as the run is: a pool the caller dropped while reading its results
    would otherwise shut down under them.

    With ``options.checkpoint``, the input is read through a ``CheckpointSession``
    (``checkpoint``, or one opened when the results are first asked for): journaled
    positions come back from the journal, in place, without running, and finished
    chunks are journaled as their batches are delivered.

    With ``options.trace``, the run records its timeline (``timeline.calls``): into
    ``trace`` if its caller keeps one for the whole call (and writes it), else into a
    recorder of its own, written when the results end, however they end.
    """

    def __init__(
        self,
        backend: Backend,
        fn: Callable[..., Any],
        mode: CallMode,
        inputs: InputSource,
        total: int | None,
        options: RunOptions,
        *,
        eager: bool = False,
        raise_in_order: bool = True,
        first_position: int = 0,
        progress_bar: Any = None,
        checkpoint: CheckpointSession | None = None,
        trace: Recorder | None = None,
        owner: object = None,
        run_unsent_here: bool = False,
        sharing: SharingContext | None = None,
    ) -> None:
        self._owner = owner
        self._backend = backend
        # backend="auto" chose this backend: a task whose arguments cannot be sent to it
        # runs in this process instead, as it would had auto chosen no other.
        self._run_unsent_here = run_unsent_here
        self._fn = fn
        self._mode = mode
        self._inputs = inputs
        self._total = total
        self._options = options
        self._eager = eager
        self._raise_in_order = raise_in_order and options.ordered
        self._sizer = ChunkSizer(
            fixed=options.chunksize,
            workers=backend.workers,
            total=total,
            target_seconds=backend.target_chunk_seconds,
            max_items=backend.max_chunk_items,
        )
        self._retries = RetryPolicy(options.retries, backend.submit)
        self._buffersize = options.buffersize
        # Whether the input took longer to give the last chunk than a chunk should take
        # to run: see _feed().
        self._slow_input = False
        self._items_ahead = 0  # read from the input, not yet handed to the consumer
        self._feed_failure: Exception | None = None  # see _read_on()
        self._deadline = None if options.timeout is None else time.monotonic() + options.timeout
        # Filled by backend threads, emptied by the consumer.
        self._batches: queue.SimpleQueue[tuple[ResultBatch, frozenset[int]]] = queue.SimpleQueue()
        # Read by backend threads in claim(); written by the consumer.
        self._cancelled = False
        self._closed = False  # close() has run
        self._unread_taker: threading.Thread | None = None  # see _dropped()
        self._reading = False  # result_lists() has begun: its own end closes the run
        # Batches are journaled as they are delivered (any thread), until close().
        self._journal_lock = threading.Lock()
        self._journaling = True
        self._journal_failure: BaseException | None = None  # raised by the consumer
        self._cutoff: int | None = None  # chunks after this input position are not started
        # Consumer only.
        self._states: deque[_ChunkState] = deque()  # ordered: not yet yielded
        self._unfinished = 0  # chunks with items still to come
        self._next_start = first_position
        self._exhausted = False
        # The input's own exception (or the pool's refusal), raised after the items before it.
        self._input_failure: Exception | None = None
        # Large NumPy arguments of this call travel once, in shared memory (processes):
        # ``sharing``, if items of the call went before (auto's early pool), else a new one.
        self._sharing = SharingContext(options.share_threshold) if sharing is None else sharing
        self._progress: Any = progress_bar
        # Opened before any input is read; a bar of a run with a checkpoint starts at
        # what the journal holds.
        self._checkpoint = checkpoint
        self._owns_checkpoint = False  # opened here (then closed here), or the caller's
        if options.checkpoint is not None and checkpoint is None:
            from workpool.checkpoint.session import check_call

            check_call(options.checkpoint, fn, inputs)  # at once, not at the first next()
        elif options.progress and progress_bar is None:
            self._progress = start_progress_bar(total, fn)
        # The call's timeline: None (not traced) is all the hot path ever checks.
        self._trace = trace
        self._owns_trace = False
        if options.trace is not None and trace is None:
            from workpool.timeline.calls import open_trace

            self._trace = open_trace(
                options.trace,
                fn,
                pool=backend,
                backend=backend.name,
                workers=backend.workers,
                ordered=options.ordered,
                chunksize=options.chunksize,
            )
            self._owns_trace = True
        self._ended_by: BaseException | None = None  # what ended the results early
        if self._trace is not None:
            from workpool.timeline.calls import record_batch

            self._record_batch = record_batch
            self._input_track = self._trace.caller_track("input")
            self._results_track = self._trace.caller_track("results")

    # --- called by backend threads ----------------------------------------------------

    def claim(self, chunk: Chunk) -> bool:
        if self._cancelled:
            return False
        cutoff = self._cutoff
        return cutoff is None or chunk.tag.start <= cutoff

    def deliver(self, batch: ResultBatch) -> None:
        if self._cancelled:
            return
        if batch.unsent and self._run_unsent_here:
            batch = run_inline(batch.chunk, HERE, timed=batch.chunk.trace is not None)
        retried = self._retries.resubmit(batch)
        if self._trace is not None:
            self._record_batch(self._trace, batch, retried, self._backend.trace_group)
        if self._checkpoint is not None:
            self._journal(batch, retried)
        self._batches.put((batch, retried))

    def _journal(self, batch: ResultBatch, retried: frozenset[int]) -> None:
        """Journal a batch as it arrives, whatever the consumer is doing meanwhile.

        Results a slow consumer has not taken yet are kept all the same; a failure
        to journal is raised by the consumer (see ``_absorb``).
        """
        with self._journal_lock:
            if not self._journaling:
                return
            try:
                self._record(batch, retried)
            except Exception as exc:
                self._journaling = False
                self._journal_failure = exc

    # --- the consumer -----------------------------------------------------------------

    def start(self) -> None:
        """Submit work now, before anyone iterates: all of it (eager), or a first window."""
        if self._eager:
            self.submit_all()
        else:
            try:
                # Before the first item is read: with a checkpoint, every item is read
                # through it (journaled positions are not run again, the others are
                # checked against the journal).
                self._open_checkpoint()
                self._feed()
            except BaseException as exc:
                self._ended_by = exc
                self.close()
                raise

    def submit_all(self) -> None:
        """Submit the whole input now (eager runs); results are read later."""
        try:
            self._open_checkpoint()
            # Read it all first, as Executor.map does: chunks are then cut to its real
            # length (an iterator has none to say). If it raises, what it gave before
            # still runs, and the call fails at once.
            failure: Exception | None = None
            try:
                count = self._inputs.read_all()
            except Exception as exc:
                failure = exc
                count = self._inputs.read_all()
                note_input_failure(exc, self._next_start + count)
            for size in self._sizer.upfront_sizes(count):
                if self._exhausted:
                    break
                self._take_and_submit(size)
            if failure is not None:
                raise failure
        except BaseException as exc:
            self._ended_by = exc
            self.close()
            raise

    def _open_checkpoint(self) -> None:
        """Open the call's checkpoint, unless the caller did or there is none."""
        if self._options.checkpoint is None:
            return
        if self._checkpoint is None:
            from workpool.checkpoint.session import CheckpointSession

            self._checkpoint = CheckpointSession(
                self._options.checkpoint,
                self._fn,
                self._inputs,
                star=self._mode is CallMode.STAR,
                trace=self._trace,
            )
            self._owns_checkpoint = True
            if self._options.progress:
                done = self._checkpoint.items_done
                self._progress = start_progress_bar(self._total, self._fn, done)
        self._checkpoint.start_writing()  # the backend exists: its workers are started

    def _take_and_submit(self, size: int) -> None:
        """Read up to ``size`` items and submit them (or deliver them from the journal)."""
        if self._trace is None:
            self._take_and_submit_untraced(size)
            return
        began = now_ns()
        self._take_and_submit_untraced(size)
        self._trace.span(self._input_track, "feed", "caller", began, now_ns())

    def _take_and_submit_untraced(self, size: int) -> None:
        checkpoint = self._checkpoint
        if checkpoint is None:
            began = now_ns()
            try:
                items = self._inputs.take(size)
            except Exception as exc:
                if self._eager:
                    raise  # Executor.map reads its whole input at once: it fails at once
                items = self._inputs.salvage()
                self._input_failed(exc, self._next_start + len(items))
            self._observe_reading(len(items), began)
            if len(items) < size:
                self._exhausted = True
            if items:
                self._submit(self._new_chunk(items))
            return
        began = now_ns()
        piece = checkpoint.take(size)
        self._observe_reading(len(piece.items), began)
        self._exhausted = checkpoint.ended
        failure = checkpoint.input_failure
        if failure is not None and failure is not self._input_failure:
            if self._eager:
                raise failure
            self._input_failed(failure, checkpoint.position)
        if not piece.items:
            return
        assert piece.start == self._next_start, "the run and its checkpoint disagree"
        chunk = self._new_chunk(piece.items)
        state: _ChunkState = chunk.tag
        state.digest = piece.digest
        state.encodings = piece.encodings
        if piece.results is None:
            self._submit(chunk)
        else:  # done before: its results take the way a worker's would, in place
            state.journaled = True
            self._batches.put((ResultBatch(chunk, piece.results, {}), frozenset()))

    def _observe_reading(self, count: int, began: int) -> None:
        """``count`` items were read from the input since ``began`` (``now_ns``)."""
        seconds = (now_ns() - began) / 1e9
        self._sizer.observe_reading(count, seconds)
        self._slow_input = seconds > self._backend.target_chunk_seconds

    def _input_failed(self, error: Exception, read: int) -> None:
        """The input raised ``error`` after its first ``read`` items.

        Lazily read, the input fails at its position in the results: what was read
        before it still runs and is yielded first, then ``error`` is raised.
        """
        self._input_failure = error
        self._exhausted = True
        note_input_failure(error, read)

    def results(self) -> Iterator[Any]:
        """Yield results; raise the first failure unless ``return_exceptions``.

        The run is closed when the iterator ends, however it ends. An eager run's
        iterator may also be dropped before it is ever started, which no code of a
        generator sees: if the run holds what must be let go (a checkpoint and its
        lock, a trace to write), the results are then taken by a thread of its own.
        """
        results = one_by_one(self.result_lists())
        if self._eager and (self._checkpoint is not None or self._owns_trace):
            weakref.finalize(results, self._dropped)
        elif self._options.checkpoint is not None or self._owns_trace:
            from workpool.open_calls import close_at_exit

            close_at_exit(results)
        return results

    def _dropped(self) -> None:
        """The results' iterator was collected unread: the call runs to its end all the same.

        As ``Executor.map``'s work does: a thread takes the results (journaled, traced)
        and closes the run when the last is in; ``join_unread()`` waits for it.
        """
        if self._closed or self._reading:
            return  # it was read from: closing it ends the run, as it ends Executor.map's
        # Not a daemon (whichever thread collected the iterator): the exit waits for it.
        taker = threading.Thread(target=self._take_unread, name="workpool-unread-map", daemon=False)
        try:
            taker.start()
        except RuntimeError:  # the interpreter is exiting: stop as if closed early
            self._ended_by = GeneratorExit()
            self.close()
            return
        self._unread_taker = taker

    def _take_unread(self) -> None:
        # A failure ends the call as it would a reader's, and is journaled; nobody asked.
        with contextlib.suppress(BaseException):
            for _ in self.result_lists():
                pass

    def join_unread(self) -> None:
        """Wait until the results of an iterator dropped unread are all taken (if any)."""
        if self._unread_taker is not None:
            self._unread_taker.join()

    def collect(self) -> list[Any]:
        """All results as one list (faster than ``list(results())``)."""
        return joined(self.result_lists())

    def result_lists(self) -> Generator[list[Any], None, None]:
        """Yield results a list at a time, as chunks complete (the engine of ``results``)."""
        self._reading = True
        try:
            self._open_checkpoint()
            if self._eager and not self._exhausted:
                self.submit_all()
            while True:
                if not self._eager:
                    self._feed()
                if self._options.ordered:
                    yield from self._pop_finished()
                    if not self._eager:
                        self._feed()  # popping made room in the window
                    in_flight = len(self._states)
                else:
                    in_flight = self._unfinished
                if self._feed_failure is not None:  # met reading on, before a yield
                    raise self._feed_failure
                if not in_flight:  # the feeding above found the input exhausted
                    if self._input_failure is not None:
                        raise self._input_failure
                    return
                # No local holds the batch: the exception's traceback keeps this frame,
                # and a batch that holds the exception would make a cycle.
                if self._trace is None:
                    ready = self._absorb(*self._next_batch())
                else:
                    began = now_ns()
                    ready = self._absorb(*self._next_batch())
                    self._trace.span(self._results_track, "deliver", "caller", began, now_ns())
                if ready:
                    self._read_on(held=len(ready) - 1)
                    yield ready
        except BaseException as exc:  # GeneratorExit too: the consumer stopped early
            self._ended_by = exc
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop: chunks not yet started are dropped; late results are ignored.

        With a checkpoint, what came back was journaled as it came: the results not
        taken yet (the call stopped early) are kept all the same.
        """
        if self._closed:
            return
        self._closed = True
        self._cancelled = True
        if self._checkpoint is not None:
            with self._journal_lock:  # waits for a batch being journaled
                self._journaling = False
        self._backend.forget(self)
        # Batches nobody will take hold their chunks, and a chunk holds this run (its
        # sink): a cycle that would keep them, and the pool a one-shot call made, until
        # the next collection of cycles.
        with contextlib.suppress(queue.Empty):
            while True:
                self._batches.get_nowait()
        self._sharing.release()
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._owns_checkpoint:
            assert self._checkpoint is not None
            self._checkpoint.close()  # commits what was journaled, lets the file go
        elif self._checkpoint is not None:
            # The caller closes it once its workers are stopped; the last commit and the
            # closing of the file go on meanwhile.
            self._checkpoint.stop_writing()
        if self._owns_trace:
            assert self._trace is not None
            self._owns_trace = False
            from workpool.timeline.calls import close_trace

            close_trace(self._trace, self._ended_by)
        # Its traceback holds frames that hold this run (a cycle), and through them the
        # caller's frames and locals: let it go now, not at the next collection of cycles.
        # So for the failures kept to be raised: this run raises none of them again.
        self._ended_by = None
        self._feed_failure = self._input_failure = self._journal_failure = None

    def _record(self, batch: ResultBatch, retried: frozenset[int]) -> None:
        """Journal the outcomes of a batch of a chunk that ran (with a checkpoint)."""
        assert self._checkpoint is not None
        chunk = batch.chunk
        state: _ChunkState = chunk.tag
        offset = chunk.start - state.start
        count = len(chunk.items)
        whole = offset == 0 and count == state.size
        encodings = state.encodings
        if encodings is not None and not whole:
            encodings = encodings[offset : offset + count]
        self._checkpoint.record(
            chunk.start,
            chunk.items,
            batch.values,
            batch.errors,
            retried,
            state.digest if whole else None,
            batch.pickled,
            encodings,
        )

    def _submit(self, chunk: Chunk) -> None:
        """Submit the chunk ``_new_chunk`` just made; if the pool has shut down meanwhile
        (from another thread), a lazy run ends there, as an input that raised does."""
        try:
            self._backend.submit(chunk)
        except ShutDown as exc:
            if self._eager:
                raise
            # What went before is still run by the pool, and yielded before this raises.
            count = len(chunk.items)
            self._next_start -= count
            self._items_ahead -= count
            self._unfinished -= 1
            if self._options.ordered:
                self._states.pop()
            self._input_failure = exc
            self._exhausted = True

    def _new_chunk(self, items: Sequence[Any]) -> Chunk:
        self._sizer.observe_item_bytes(_array_bytes(items[0], self._mode))
        state = _ChunkState(self._next_start, len(items))
        self._next_start += len(items)
        self._items_ahead += len(items)
        self._unfinished += 1
        if self._options.ordered:
            self._states.append(state)
        return Chunk(
            sink=self,
            fn=self._fn,
            mode=self._mode,
            start=state.start,
            items=items,
            task_timeout=self._options.task_timeout,
            tag=state,
            sharing=self._sharing,
            trace=self._trace,
        )

    def _feed(self) -> None:
        """Submit chunks while the window has room and the input has items.

        The window counts unfinished chunks only. In input order, chunks that finished
        behind a slower one wait for it; they do not hold the workers up, but they hold
        memory, so at most ``HELD_WINDOWS`` windows' worth of chunks are read ahead of
        the results yielded. An input slow to give its items (a stream) is not waited
        on while results wait: they are handed over first, each about when it is ready
        rather than a window's worth of the input's waits later.
        """
        while not self._exhausted and self._cutoff is None and self._feed_failure is None:
            window = self._backend.max_chunks_in_flight
            if self._unfinished >= window:
                return
            if self._options.ordered and len(self._states) >= HELD_WINDOWS * window:
                return
            size = self._sizer.next_size()
            if self._buffersize is not None:
                room = self._buffersize - self._items_ahead
                if room <= 0:
                    return
                size = min(size, room)
            if self._slow_input and self._results_waiting():
                return
            self._take_and_submit(size)

    def _results_waiting(self) -> bool:
        """Whether results have come that the consumer could be handed now."""
        states = self._states  # ordered: the head's results go first
        if states and states[0].left == 0:
            return True
        # Only a batch of a chunk still unfinished is one the run will wait for.
        return self._unfinished > 0 and not self._batches.empty()

    def _read_on(self, held: int) -> None:
        """With ``buffersize``: submit more just before results are handed over.

        The caller takes the first of them at once and ``held`` more later: counting
        that first one as taken, the input is read on now, as ``Executor.map`` submits
        the next task before it yields a result, so the pool works while the caller
        works on it. A failure to feed is raised when the caller comes back for more,
        after the results it has.
        """
        if self._buffersize is None:
            return
        self._items_ahead += held
        try:
            self._feed()
        except Exception as exc:
            self._feed_failure = exc
        finally:
            self._items_ahead -= held

    def _next_batch(self) -> tuple[ResultBatch, frozenset[int]]:
        if self._deadline is None:
            return self._batches.get()
        while True:
            remaining = self._deadline - time.monotonic()
            try:
                if remaining <= 0:
                    return self._batches.get_nowait()
                return self._batches.get(timeout=capped_wait(remaining))
            except queue.Empty:
                if remaining > capped_wait(remaining):
                    continue  # a deadline beyond one wait: not reached yet
                assert self._options.timeout is not None  # a deadline is set from it
                raise call_timed_out(self._options.timeout) from None

    def _absorb(self, batch: ResultBatch, retried: frozenset[int]) -> list[Any] | None:
        """Record a batch; return the values to yield now (unordered runs)."""
        chunk = batch.chunk
        state: _ChunkState = chunk.tag
        count = len(chunk.items)
        if batch.elapsed > 0:
            self._sizer.observe(count, batch.elapsed)
        offset = chunk.start - state.start
        if offset == 0 and count == state.size and state.values is None:
            state.values = batch.values
        else:
            if state.values is None:
                state.values = [None] * state.size
            if retried:  # their new attempts' results may be in already: keep them
                for i, value in enumerate(batch.values):
                    if i not in retried:
                        state.values[offset + i] = value
            else:
                state.values[offset : offset + count] = batch.values

        if self._journal_failure is not None:  # journaled when delivered (_journal)
            raise self._journal_failure

        failed = 0
        annotated: set[int] = set()  # one exception object may stand for several items
        for position, error in batch.errors.items():
            if position in retried:
                continue
            failed += 1
            if id(error) not in annotated:
                annotated.add(id(error))
                self._retries.annotate(error, chunk.start + position, batch.worker, chunk.attempt)
            if self._options.return_exceptions:
                state.values[offset + position] = error
            elif self._raise_in_order:
                if state.failure is None or offset + position < state.failure[0]:
                    state.failure = (offset + position, error)
                if self._cutoff is None or state.start < self._cutoff:
                    self._cutoff = state.start  # later chunks need not run
            else:
                if self._progress is not None and not state.journaled:
                    self._progress.advance(count - len(retried), failed)  # left above the error
                try:
                    raise error
                finally:  # this frame stays in its traceback: it must not hold it
                    del error, batch
        finished = count - len(retried)
        state.left -= finished
        if not self._options.ordered:
            self._items_ahead -= finished  # handed over below (or raised)
        if self._progress is not None and not state.journaled:  # the bar began with those
            self._progress.advance(finished, failed)
        # A batch whose items were all retried finishes none: the retries' batches, which
        # may have come first (serial runs a retry while its first attempt is delivered),
        # finish the chunk, once.
        if finished and state.left == 0:
            self._unfinished -= 1
        if self._options.ordered:
            return None
        if not batch.errors:
            return batch.values
        return [
            state.values[offset + i]
            for i in range(count)
            if i not in retried and (i not in batch.errors or self._options.return_exceptions)
        ]

    def _pop_finished(self) -> Iterator[list[Any]]:
        """Yield the values of the chunks at the head of the input that are all final."""
        states = self._states
        while states and states[0].left == 0:
            state = states.popleft()
            self._items_ahead -= state.size
            assert state.values is not None
            if state.failure is not None:
                offset, error = state.failure
                state.failure = None
                yield state.values[:offset]
                try:
                    raise error
                finally:  # this frame stays in its traceback: it must not hold it
                    del error
            self._read_on(held=state.size - 1)
            yield state.values
        if states and self._cutoff is not None and states[0].start > self._cutoff:
            states.clear()  # defensive: nothing after a failure is awaited


def _array_bytes(item: Any, mode: CallMode) -> int:
    """The bytes of the NumPy arrays among an item's arguments (the chunk sizer's bound)."""
    if mode is CallMode.ONE:
        arguments: Any = (item,)
    elif mode is CallMode.STAR:
        arguments = item
    else:
        arguments = (*item[0], *item[1].values())
    if not isinstance(arguments, (tuple, list)):  # looking into it might use it up
        return 0
    return sum(arg.nbytes for arg in arguments if numpy_if_array(arg) is not None)
