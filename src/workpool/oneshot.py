"""``workpool.map``, ``imap`` and ``starmap``: a pool for one call, gone when it returns."""

from __future__ import annotations

import builtins
import collections
import itertools
import operator
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence

from workpool._cpus import usable_cpus
from workpool._options import (
    PoolSpec,
    RunOptions,
    check_function,
    default_workers,
    pool_spec,
    refuses_unknown_options,
    resolve_auto,
    run_options,
)
from workpool.backends import create_backend
from workpool.backends.base import initialize_here
from workpool.clock import now_ns
from workpool.errors import note_origin
from workpool.inputs import InputSource, prepare_inputs
from workpool.run import (
    MapRun,
    RetryPolicy,
    note_input_failure,
    one_by_one,
    run_inline,
    start_progress_bar,
)
from workpool.sharing import DEFAULT_SHARE_THRESHOLD, SharingContext
from workpool.tasks import (
    CallMode,
    Chunk,
    ResultBatch,
    call_items,
    extend_calls,
    stop_iteration_failure,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

    from workpool.advise import Sample
    from workpool.inputs import ItemSource

if TYPE_CHECKING:  # imported only by calls that have a checkpoint (it loads sqlite3)
    from workpool.backends.base import Backend
    from workpool.checkpoint.session import CheckpointSession, Gap
    from workpool.early_items import EarlyItems
    from workpool.timeline import Recorder  # imported only by traced calls

__all__ = ["imap", "map", "starmap"]

# Where backend="auto" runs the items it measures, as timelines name it: the serial
# backend's name for the same place, so that both share one track.
INLINE = "the calling thread"


# Nobody will read the call's results: running tasks that cannot be stopped (threads)
# are not waited for either.
_ENDS_THE_PROGRAM = (KeyboardInterrupt, SystemExit)


class _OneShotCall:
    """Everything one call needs, validated before any worker starts."""

    def __init__(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        *,
        star: bool,
        given: Mapping[str, Any],
    ) -> None:
        check_function(fn)
        self.fn = fn
        self.spec: PoolSpec = pool_spec(given)
        self.workers_given = given["workers"] is not None
        self.options: RunOptions = run_options(given, backend=self.spec.backend)
        self.inputs, self.mode, self.total = prepare_inputs(iterables, star=star)
        # The files too are refused now, not at the first next() of an imap.
        if self.options.trace is not None:
            from workpool.timeline.recorder import checked_path

            checked_path(self.options.trace)
        if self.options.checkpoint is not None:
            from workpool.checkpoint.session import check_call

            check_call(self.options.checkpoint, fn, self.inputs)

    def results(self, *, raise_in_order: bool) -> Iterator[Any]:
        """Yield the results one by one."""
        results = one_by_one(self.result_lists(raise_in_order=raise_in_order))
        if self.options.checkpoint is not None or self.options.trace is not None:
            from workpool.open_calls import close_at_exit

            close_at_exit(results)
        return results

    def collect(self) -> list[Any]:
        """All the results as a list; the first failure raises at once."""
        # Like run.joined, but a lone list (the straight loop's) is the result as it is:
        # a copy of a fresh list of 200,000 costs milliseconds of page faults. A list
        # yielded is never changed: the first is copied when a second comes.
        collected: list[Any] = []
        own = False  # whether collected is a list made here
        for values in self.result_lists(raise_in_order=False, all_at_once=True):
            if own:
                collected.extend(values)
            elif not collected:
                collected = values
            else:
                collected = collected + values
                own = True
            del values  # freed before the next list is made: its memory can serve that one
        return collected

    def result_lists(
        self, *, raise_in_order: bool, all_at_once: bool = False
    ) -> Generator[list[Any], None, None]:
        """Start the pool, yield the results a list at a time, and leave no worker behind.

        With a checkpoint, the journal is opened first (a busy file or another function
        is refused before anything runs), the results it holds for the head of the
        input are yielded, and no worker starts if that was all of it. Whatever ends the
        call (its end, a failure, the consumer closing it early, even while ``auto``
        still measures), the progress bar is closed and the pool stopped.
        """
        checkpoint: CheckpointSession | None = None
        progress_bar = None
        trace: Recorder | None = None
        ended_by: BaseException | None = None
        try:
            if self.options.trace is not None:
                from workpool.timeline.calls import open_trace

                trace = open_trace(
                    self.options.trace,
                    self.fn,
                    requested=self.spec.backend,
                    ordered=self.options.ordered,
                    chunksize=self.options.chunksize,
                )
            if self.options.checkpoint is not None:
                from workpool.checkpoint.session import CheckpointSession

                checkpoint = CheckpointSession(
                    self.options.checkpoint,
                    self.fn,
                    self.inputs,
                    star=self.mode is CallMode.STAR,
                    trace=trace,
                )
                if self.options.progress:
                    progress_bar = start_progress_bar(self.total, self.fn, checkpoint.items_done)
                yield from checkpoint.leading_done()
                if checkpoint.at_end():
                    return
            elif self.options.progress and self.spec.backend == "auto":
                progress_bar = start_progress_bar(self.total, self.fn)
            yield from self._run_the_rest(
                raise_in_order, checkpoint, progress_bar, trace, all_at_once
            )
        except BaseException as exc:  # GeneratorExit too: the consumer stopped early
            ended_by = exc
            raise
        finally:
            if progress_bar is not None:
                progress_bar.close()
            if checkpoint is not None:
                checkpoint.close()
            if trace is not None:  # last: the pool has stopped, the timeline is complete
                from workpool.timeline.calls import close_trace

                close_trace(trace, ended_by)
            # The exception's traceback holds this frame, and so the caller's frames and
            # their locals (another call's iterator, say): let it go now, not at the next
            # collection of cycles.
            ended_by = None

    def _nothing_per_chunk(self, spec: PoolSpec) -> bool:
        """Whether no option of the call needs the engine to handle chunks one by one."""
        options = self.options
        return (
            self.mode is not CallMode.CALL
            and spec.initializer is None
            and not options.progress
            and options.retries == 0
            and options.task_timeout is None
            and options.timeout is None
        )

    def _run_the_rest(
        self,
        raise_in_order: bool,
        checkpoint: CheckpointSession | None,
        progress_bar: Any,
        trace: Recorder | None,
        all_at_once: bool,
    ) -> Generator[list[Any], None, None]:
        spec = self.spec
        first_position = 0 if checkpoint is None else checkpoint.position
        started: Backend | None = None
        sharing: SharingContext | None = None  # the call's, if its early pool began it
        # The measured items' results, when the caller wants everything at once: the
        # straight loop then adds the rest to the same list rather than to a new one
        # that would be copied after it (a fresh list of 200,000 is milliseconds of
        # page faults).
        held: list[Any] = []
        if spec.backend == "auto":
            prefix = _MeasuredPrefix(self, progress_bar, checkpoint, trace)
            try:
                for values in prefix.result_lists(raise_in_order):
                    if not all_at_once:
                        yield values
                    elif held:
                        held.extend(values)
                    else:
                        held = values  # the prefix's own list, not kept by anyone else
            except BaseException as exc:
                if isinstance(exc, _ENDS_THE_PROGRAM) and prefix.started_backend is not None:
                    prefix.started_backend.abandon()
                elif prefix.started_backend is not None:
                    prefix.started_backend.terminate()
                prefix.stop_unused_processes()
                if prefix.sharing is not None:
                    prefix.sharing.release()
                raise
            spec = prefix.chosen_spec
            first_position += prefix.count
            started = prefix.started_backend
            sharing = prefix.sharing
        if (
            spec.backend == "serial"
            and all_at_once
            and self._nothing_per_chunk(spec)
            and checkpoint is None
            and progress_bar is None
            and trace is None
        ):
            yield _run_straight(
                self.fn,
                self.mode,
                self.inputs,
                held,
                first_position,
                return_exceptions=self.options.return_exceptions,
            )
            return
        if held:
            yield held
        if self.spec.backend != "auto" and checkpoint is None and self.inputs.at_end():
            # No input: no pool is started for it (a Dask cluster takes a second). The
            # bar is drawn all the same, as on every other path: it says 0 of 0.
            if self.options.progress:
                start_progress_bar(self.total, self.fn).close()
            return
        began = now_ns() if trace is not None else 0
        backend = started if started is not None else create_backend(spec, self.fn, trace)
        if trace is not None:
            trace.span(trace.caller_track("pool"), "pool start", "startup", began, now_ns())
            trace.facts.update(backend=spec.backend, workers=backend.workers)
        finished = interrupted = False
        try:
            run = MapRun(
                backend,
                self.fn,
                self.mode,
                self.inputs,
                None if self.total is None else self.total - first_position,
                self.options,
                raise_in_order=raise_in_order,
                first_position=first_position,
                progress_bar=progress_bar,
                checkpoint=checkpoint,
                trace=trace,
                run_unsent_here=self.spec.backend == "auto",
                sharing=sharing,
            )
            yield from run.result_lists()
            finished = True
        except _ENDS_THE_PROGRAM:
            interrupted = True
            raise
        finally:
            began = now_ns() if trace is not None else 0
            if finished:
                backend.shutdown(wait=True, cancel_pending=False)
            elif interrupted:
                backend.abandon()
            else:  # a failure, or the consumer stopped early: stop what still runs
                backend.terminate()
            if trace is not None:
                track = trace.caller_track("pool")
                trace.span(track, "pool shutdown", "shutdown", began, now_ns())


class _MeasuredPrefix:
    """``backend="auto"``: run the first items inline while timing them, then choose.

    The items timed are real tasks of the call; their results are yielded first and
    never recomputed. The measurement is remembered for the function, so later calls
    choose at once (for their own number of items) without running anything inline.
    """

    def __init__(
        self,
        call: _OneShotCall,
        progress_bar: Any,
        checkpoint: CheckpointSession | None,
        trace: Recorder | None,
    ) -> None:
        self._call = call
        self._progress = progress_bar
        self._checkpoint = checkpoint  # its items are read up to the next journaled row
        self._trace = trace  # the items measured are traced like any chunk
        self.count = 0
        self.chosen_spec: PoolSpec = call.spec
        # The interpreter pool timed while measuring, when the call goes on with it, or
        # the process pool started while measuring, when processes were chosen.
        self.started_backend: Backend | None = None
        self._processes: Backend | None = None  # started early, not chosen yet
        self._early: EarlyItems | None = None  # items run on it while measuring
        # The large arrays the early pool's items took into shared memory, when the call
        # goes on with that pool: its chunks send them again without another copy.
        self.sharing: SharingContext | None = None
        self._gap: Gap | None = None  # with a checkpoint: where the measured items came from
        self._counted: _Counted | None = None  # without one: the input, as measured

    def _start_processes(self) -> None:
        """Start the process pool the call would most likely go on with, now.

        Called by ``measure`` once the items prove slow and busy on the CPU: the pool
        then starts on the other CPUs while threads (and subinterpreters) are timed,
        instead of after the choice. Not chosen after all, it is stopped unused.
        """
        call = self._call
        if call.total is not None and call.total < 4:
            return  # a handful of items: a pool would hardly pay for its own start
        workers = call.spec.workers if call.workers_given else default_workers("process")
        try:
            self._processes = create_backend(resolve_auto(call.spec, "process", workers), call.fn)
        except Exception:  # cannot be pickled, say: measuring will tell, as without it
            self._processes = None

    def _run_beside(self, inputs: ItemSource) -> None:
        """Hand the early process pool the next items, to run while threads are timed.

        Two per worker (see ``early_items``), for no more workers than there are CPUs,
        so that they are soon done whatever is chosen. Called by ``measure`` once it
        has taken every item it times: these follow them.
        """
        processes = self._processes
        if processes is None:
            return
        items = inputs.take(2 * min(processes.workers, usable_cpus()))
        if not items:
            return
        from workpool.early_items import EarlyItems

        if self._checkpoint is not None:
            start = self._checkpoint.position - len(items)
        else:
            assert isinstance(inputs, _Counted)
            start = inputs.taken - len(items)
        options = self._call.options
        self._early = EarlyItems(
            processes,
            self._call.fn,
            self._call.mode,
            items,
            start,
            retries=options.retries,
            sharing=SharingContext(options.share_threshold),
        )

    def stop_unused_processes(self) -> None:
        """Stop the pool ``_start_processes`` started, if the call did not go on with it."""
        if self._processes is not None:
            self._processes.terminate()
            self._processes = None

    def result_lists(self, raise_in_order: bool) -> Iterator[list[Any]]:
        # Only here: a call that names its backend never loads the measurement.
        from workpool.advise import Sample, can_ship, decide_for, measure, remember, remembered

        call = self._call
        options = call.options
        found = remembered(call.fn)
        items: list[Any] = []
        values: list[Any] = []
        errors: dict[int, BaseException] = {}
        measured = (0, 0)  # when the items were measured, if any were
        places: dict[int, str] = {}  # where failed items ran, if not in the calling thread
        spec = call.spec
        initializer = () if spec.initializer is None else (spec.initializer, spec.initargs)
        if call.options.task_timeout is not None:
            # Only processes can stop a hung task; measuring inline could hang. What
            # cannot be pickled goes to threads, which report a hung task on time.
            advice_backend = "process" if can_ship(call.fn, initializer) else "thread"
            advice_workers = default_workers(advice_backend)
        else:
            if found is None:
                if call.spec.initializer is not None:  # inline, we are the worker
                    initialize_here(call.spec)
                source: ItemSource
                if self._checkpoint is None:
                    source = self._counted = _Counted(call.inputs)
                else:
                    source = self._gap = self._checkpoint.gap()
                # Subinterpreters are timed on a pool the call may go on with; not when
                # traced, where every item measured must be on the calling thread's track.
                trial_spec = None
                if self._trace is None:
                    trial_workers = call.spec.workers if call.workers_given else usable_cpus()
                    trial_spec = resolve_auto(call.spec, "interpreter", trial_workers)
                kept: list[Backend] = []
                began = now_ns()
                sample = Sample()
                stops_at_failure = not options.return_exceptions and options.retries == 0
                try:
                    found, items, values, errors = measure(
                        call.fn,
                        call.mode,
                        source,
                        interpreters=trial_spec,
                        keep=kept,
                        on_slow_cpu=None if self._trace is not None else self._start_processes,
                        beside=self._run_beside,
                        # With retries, what failed on a timing thread is tried again
                        # here as a retry (and traced as one); without, it runs here
                        # once more.
                        rerun_failures=options.retries == 0,
                        sample=sample,
                        # A failure that will be raised ends the call: no item after it
                        # is run for the measuring's sake, as no engine would run it.
                        stop_at_failure=stops_at_failure,
                    )
                except BaseException:
                    # A task's KeyboardInterrupt, say: what finished before it is kept
                    # like any chunk's, only the items in flight are lost.
                    self._keep_interrupted(sample, (began, now_ns()))
                    raise
                measured = (began, now_ns())
                # Kept for later calls only if it timed the work: not a measurement cut
                # short by a failure, nor one of no item (an empty input) or of nothing
                # but failures, which would make every later call of the function serial.
                if len(errors) < len(values) and not (stops_at_failure and errors):
                    remember(call.fn, found)
                places = sample.places
                self.started_backend = kept[0] if kept else None
            self.count = len(values) + (len(self._early.items) if self._early else 0)
            remaining = None if call.total is None else call.total - self.count
            advice = decide_for(
                call.fn,
                found,
                remaining,
                interpreters_started=self.started_backend is not None,
                initializer=initializer,
            )
            advice_backend, advice_workers = advice.backend, advice.workers
        workers = call.spec.workers if call.workers_given else advice_workers
        self.chosen_spec = resolve_auto(call.spec, advice_backend, workers)
        if self.started_backend is not None and advice_backend != "interpreter":
            self.started_backend.shutdown(wait=True, cancel_pending=True)
            self.started_backend = None
        early = self._early
        settled = self._early_outcomes(items, values, errors)
        if self._processes is not None and self.chosen_spec == self._processes.spec:
            self.started_backend, self._processes = self._processes, None
            self.sharing = early.sharing if early is not None else None
        elif early is not None:
            early.sharing.release()
        self.stop_unused_processes()

        first = 0 if self._checkpoint is None else self._checkpoint.position - len(values)
        self._trace_measured(
            first, values, errors, measured, tuple(sorted(errors)) if options.retries else ()
        )
        if errors:
            errors = _InlineRetries(call, values, first, self._trace, places).settle(items, errors)
        if settled:
            errors = dict(sorted({**errors, **settled}.items()))
        if self._progress is not None:  # before a failure is raised: the bar shows it
            self._progress.advance(len(values), len(errors))
        for position, error in errors.items():
            if options.return_exceptions:
                values[position] = error
            elif not raise_in_order:
                self._journal(first, items, values, errors)
                self._close_progress()
                raise error
        self._journal(first, items, values, errors)
        if errors and not options.return_exceptions:  # raise in order, after the ones before
            position = min(errors)
            yield values[:position]
            self._close_progress()
            raise errors[position]
        yield values
        if self._counted is not None and self._counted.failure is not None:
            self._close_progress()
            raise self._counted.failure  # the input's, after the results it gave

    def _early_outcomes(
        self, items: list[Any], values: list[Any], errors: dict[int, BaseException]
    ) -> dict[int, BaseException]:
        """Add the early pool's items and outcomes after the measured ones, once all are in.

        Items that never reached a worker run here now, their errors in ``errors`` like
        any item measured here; returns the errors the pool settled (retries done), by
        their offset in ``values``.
        """
        early = self._early
        if early is None:
            return {}
        self._early = None
        call = self._call
        early_values, early_errors, unsent = early.outcomes(call.options.timeout)
        offset = len(values)
        items.extend(early.items)
        values.extend(early_values)
        for position in unsent:
            ran, failed, _ = call_items(call.fn, call.mode, early.items[position : position + 1])
            if failed:
                errors[offset + position] = failed[0]
            else:
                values[offset + position] = ran[0]
        return {offset + position: error for position, error in early_errors.items()}

    def _keep_interrupted(self, sample: Sample, measured: tuple[int, int]) -> None:
        """Journal and trace the items measured before the measuring was interrupted."""
        items, values, errors = sample.items, sample.values, sample.errors
        if not values:
            return
        first = 0
        if self._gap is not None:
            first = self._gap.pieces[0].start if self._gap.pieces else 0
        self._trace_measured(first, values, errors, measured)
        self._journal(first, items, values, errors)

    def _trace_measured(
        self,
        first: int,
        values: list[Any],
        errors: dict[int, BaseException],
        measured: tuple[int, int],
        retried: tuple[int, ...] = (),
    ) -> None:
        """Put the items measured in the calling thread on the trace, as one chunk."""
        if self._trace is None or not values:
            return
        from workpool.timeline.calls import record_inline

        track = self._trace.worker_track(INLINE)
        record_inline(self._trace, track, first, len(values), 0, measured, len(errors), retried)

    def _journal(
        self, first: int, items: list[Any], values: list[Any], errors: dict[int, BaseException]
    ) -> None:
        """Journal the measured items' outcomes, like any chunk's (with a checkpoint)."""
        if self._gap is not None and items:
            self._gap.record(first, items, values, errors)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()


class _InlineRetries:
    """The sink for items that failed while ``auto`` measured them (in the calling
    thread, or on one of the two threads it timed).

    They run again in the calling thread, as ``retries`` allows (the policy that every sink uses);
    ``settle`` returns the errors that stand, by their offset in ``values``, each noted
    with its position and attempt. Chunks carry input positions, as everywhere.
    """

    def __init__(
        self,
        call: _OneShotCall,
        values: list[Any],
        first: int,
        trace: Recorder | None,
        places: Mapping[int, str],
    ) -> None:
        self._call = call
        self._values = values
        self._first = first  # the input position of values[0]
        self._places = places  # where an item ran, by offset, if not in the calling thread
        self._errors: dict[int, BaseException] = {}
        self._retries = RetryPolicy(call.options.retries, self._run)
        self._trace = trace
        self._retrying: collections.deque[Chunk] | None = None  # while delivering

    def settle(
        self, items: list[Any], errors: dict[int, BaseException]
    ) -> dict[int, BaseException]:
        call = self._call
        for offset in sorted(errors):
            chunk = Chunk(
                self, call.fn, call.mode, self._first + offset, items[offset : offset + 1]
            )
            self.deliver(ResultBatch(chunk, [None], {0: errors[offset]}, worker=INLINE))
        return dict(sorted(self._errors.items()))

    def claim(self, chunk: Chunk) -> bool:
        return True

    def deliver(self, batch: ResultBatch) -> None:
        self._retrying = collections.deque()
        try:
            self._settle(batch)
            while self._retrying:  # each attempt's retry runs once it is settled
                chunk = self._retrying.popleft()
                self._settle(run_inline(chunk, INLINE, timed=self._trace is not None))
        finally:
            self._retrying = None

    def _settle(self, batch: ResultBatch) -> None:
        chunk = batch.chunk
        offset = chunk.start - self._first
        if not batch.errors:
            self._values[offset] = batch.values[0]
            self._traced(batch, frozenset())
            return
        retried = self._retries.resubmit(batch)  # queued for ``deliver``'s loop
        self._traced(batch, retried)
        if not retried:
            error = batch.errors[0]
            place = self._places.get(offset) if chunk.attempt == 0 else None
            where = f"{place or INLINE}, while backend='auto' measured it"
            self._retries.annotate(error, chunk.start, where, chunk.attempt)
            self._errors[offset] = error

    def _traced(self, batch: ResultBatch, retried: frozenset[int]) -> None:
        """Put an attempt on the timeline (its span, if it ran here; its retry)."""
        if self._trace is not None:
            from workpool.timeline.calls import record_batch

            record_batch(self._trace, batch, retried, None)

    def _run(self, chunk: Chunk) -> None:
        """Where a retry goes: run by ``deliver`` once the attempt before is settled (not
        inside that, or many retries would nest a delivery per attempt)."""
        assert self._retrying is not None, "retries are asked for while delivering"
        self._retrying.append(chunk)


class _Counted:
    """An item source that counts the items taken from it: their input positions.

    An input that raises ends there: the items it gave before are handed out, and its
    exception is kept in ``failure``, to be raised once their results are delivered.
    """

    def __init__(self, source: InputSource) -> None:
        self._source = source
        self.taken = 0
        self.failure: Exception | None = None

    def take(self, count: int) -> Sequence[Any]:
        if self.failure is not None:
            return []
        try:
            items = self._source.take(count)
        except Exception as exc:
            items = self._source.salvage()
            note_input_failure(exc, self.taken + len(items))
            self.failure = exc
        self.taken += len(items)
        return items


def _run_straight(
    fn: Callable[..., Any],
    mode: CallMode,
    inputs: InputSource,
    values: list[Any],
    first_position: int,
    *,
    return_exceptions: bool,
) -> list[Any]:
    """The rest of the input run here in one loop, without chunks, its results added to
    ``values`` (which is returned); ``first_position`` is the rest's first position.

    For a call that wants all its results at once and nothing done per chunk (no
    progress, checkpoint, trace, retries, timeouts or initializer), the backend's
    machinery only adds steps: this is the loop a user would write (``extend_calls``),
    reading an iterator as lazily as the chunks would. A task that raises gets the
    note every engine gives it, and is raised at once (no later item is read or run),
    or takes its place with ``return_exceptions``.
    """
    assert mode is CallMode.ONE or mode is CallMode.STAR
    rest = inputs.remaining()
    counter = None
    if not isinstance(rest, Sequence):
        # Counts the items read, in C: zip takes a number for each item it passes on.
        counter = itertools.count()
        rest = builtins.map(operator.itemgetter(0), zip(rest, counter))
    remaining = iter(rest)
    before = len(values)  # results that are not the rest's
    counted = 0  # numbers the counter gave to this function, not to an item
    while True:
        try:
            extend_calls(values, fn, mode, remaining)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from a task is that task's failure
            if counter is not None:
                read = next(counter) - counted
                counted += 1
                if read == len(values) - before:
                    # No item was read for this call: the input itself raised, which is
                    # the caller's failure, not a task's (and the input has ended).
                    note_input_failure(exc, first_position + read)
                    raise
            error = stop_iteration_failure(exc) if isinstance(exc, StopIteration) else exc
        else:
            if counter is None:
                read = len(rest)  # type: ignore[arg-type]
            else:
                read = next(counter) - counted
                counted += 1
            if len(values) - before == read:
                break
            # A call raised StopIteration, and map took it for the end of its input.
            error = stop_iteration_failure(None)
        note_origin(
            error, f"the task at input position {first_position + len(values) - before} in {INLINE}"
        )
        if not return_exceptions:
            raise error
        values.append(error)
    return values


@refuses_unknown_options("map()")
def map(  # noqa: A001 - the public name mirrors the builtin on purpose
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
    address: object = None,
    share_threshold: int | None = DEFAULT_SHARE_THRESHOLD,
    checkpoint: str | os.PathLike[str] | None = None,
    trace: str | os.PathLike[str] | None = None,
) -> list[T]:
    """``fn`` over the inputs in parallel; the list of results, in input order.

    Several iterables are zipped, as in the builtin ``map``. A pool is started for the
    call and is gone when it returns. The first failure cancels what is pending and is
    raised, unless ``return_exceptions=True`` puts exceptions in place of results.

    ``checkpoint="run.ckpt"`` journals each finished result in that file; called again
    with the same file, function and input, it runs only what is missing and returns
    the same list (``CheckpointMismatch`` if the function or input differ,
    ``CheckpointBusy`` if another call is using the file).

    ``trace="run.json"`` writes the call's timeline there as a Chrome trace, however
    the call ends (``workpool trace summary run.json`` says where the time went).
    """
    call = _OneShotCall(fn, iterables, star=False, given=locals())
    return call.collect()


@refuses_unknown_options("imap()")
def imap(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
    address: object = None,
    share_threshold: int | None = DEFAULT_SHARE_THRESHOLD,
    checkpoint: str | os.PathLike[str] | None = None,
    trace: str | os.PathLike[str] | None = None,
) -> Iterator[T]:
    """A lazy ``map``: inputs are read as workers free up, results yielded as ready.

    Arguments are checked now; the pool starts at the first ``next()``. An endless
    input works in constant memory. Stopping early (``break``, ``close()``) stops the
    pool and everything still running in it.
    """
    call = _OneShotCall(fn, iterables, star=False, given=locals())
    return call.results(raise_in_order=True)


@refuses_unknown_options("starmap()")
def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[Any]],
    *,
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
    address: object = None,
    share_threshold: int | None = DEFAULT_SHARE_THRESHOLD,
    checkpoint: str | os.PathLike[str] | None = None,
    trace: str | os.PathLike[str] | None = None,
) -> list[T]:
    """``fn(*args)`` for every tuple of arguments, in parallel; the list of results."""
    call = _OneShotCall(fn, (iterable,), star=True, given=locals())
    return call.collect()
