"""The Dask backend, caller side: each chunk is one Dask task, results come back as batches.

How a chunk travels::

    caller thread               Dask (scheduler, workers)         courier thread
    -------------               -------------------------         --------------
    submit(chunk)
      pickle the items; a big
      array is scattered once
      per call, and referred to
      (so is a function that
      pickles large)
      claim, then
      client.submit(run_chunk,
        key=unique) ----------> a worker runs run_chunk
                                (remote.py: in this node's
                                local process pool)
                                finished: the client's event
                                loop fetches every finished
                                result at once (fetcher.py) ----> unpickle
    sink.deliver(batch) <------------------------------------------ deliver each piece

Keys are unique (``workpool-<function>-<session>-<n>``, never derived from the inputs),
so a hundred identical inputs are a hundred tasks. The caller keeps a bounded window of
chunks in flight (``max_chunks_in_flight``: twice the cluster's threads, re-read as
workers come and go); a ``Pool``'s many ``submit`` calls go out up to ``SUBMIT_AHEAD``
times that, and the chunks beyond wait here, unclaimed, going as tasks settle: a Future
not yet sent can still be cancelled.
Each key is delivered at most once: the record of a chunk in flight is taken by
whoever settles it first (the courier, ``forget`` or ``terminate``),
so a result that Dask computes twice (its worker died after finishing) or that
arrives after the chunk was cancelled is dropped.

A traced call's chunks say so (``ChunkTask.timed``): the node times them in its local
pool and sends what it recorded back with the results, which the courier puts on the
call's timeline (``tracing.py``).

A *session* is this backend's identity on the workers: the first chunk a worker gets
borrows a local process pool for it there (``remote.py``, ``node.py``); shutting the
backend down closes the session on every worker, and closes the client and cluster if
workpool made them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import pickle
import queue
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from workpool._options import PoolSpec
from workpool.backends.at_exit import end_all
from workpool.backends.base import Backend, ShutDown, deliver, fail_chunks
from workpool.backends.dask import remote
from workpool.backends.dask.cluster import CLOSE_SECONDS, ClusterLink, connect
from workpool.backends.dask.fetcher import ResultFetcher
from workpool.backends.dask.payload import (
    ChunkTask,
    Report,
    SessionInfo,
    WritableShareRefused,
    dumps_items,
    unpack_error,
)
from workpool.chunking import ChunkTimes
from workpool.clock import now_ns
from workpool.errors import (
    BrokenPool,
    WorkerCrashed,
    about_the_pool,
    add_note,
    one_for_each_call,
    outside_workpool,
)
from workpool.exit_lists import THREADS, ExitList
from workpool.serialize import FunctionRegistry, cannot_send, dumps_function, picklable_runs
from workpool.tasks import Chunk, ResultBatch, function_name

if TYPE_CHECKING:
    from workpool.backends.dask.tracing import NodeClocks
    from workpool.tasks import ResultSink
    from workpool.timeline.recorder import Recorder

__all__ = ["DaskBackend"]

# How often a call waiting on the cluster looks whether its client still runs
# (``_while_running``), and the courier while tasks are in flight (``_next_arrival``).
CLIENT_CHECK_SECONDS = 0.2
# How long the cluster's thread count is trusted before it is asked again.
THREADS_REFRESH_SECONDS = 1.0
# Chunks sent to the cluster ahead of the results, per chunk of a run's window: a
# ``Pool``'s submitted tasks beyond that wait here (and can still be cancelled), but
# fewer would leave Dask's workers idle while results travel back and the next go out.
SUBMIT_AHEAD = 4
# A function that pickles larger than this is scattered once rather than sent with
# every chunk (``_function_arguments``); this many stay scattered at once.
FUNCTION_SCATTER_BYTES = 1 << 16
SCATTERED_FUNCTIONS = 8


class _InFlight(NamedTuple):
    chunk: Chunk
    future: Any  # distributed.Future
    copies: tuple[Any, ...]  # the scattered copies (Dask futures) its task refers to


class _ClientStopped(ConnectionError):
    """A call to the cluster given up because its client stopped running (``_while_running``)."""


class DaskBackend(Backend):
    """Runs chunks as Dask tasks on a cluster; see the module docstring for the data flow."""

    name = "dask"
    # Dask spends about a millisecond on each task: chunks this long amortise it.
    target_chunk_seconds = 0.1
    # and a few large chunks of tiny items beat many small ones: each task costs more.
    max_chunk_items = 65_536
    # A trace groups tracks by Dask worker (``tracing.py``); this one holds what
    # happened to chunks that no worker reported on (lost with their node).
    trace_group = "Dask cluster"

    def __init__(self, spec: PoolSpec, fn: Callable[..., Any] | None = None) -> None:
        super().__init__(spec)
        self._link: ClusterLink = connect(spec.address, spec.workers)
        try:
            self._start(spec)
        except BaseException:
            self._link.close()
            raise

    def _start(self, spec: PoolSpec) -> None:
        self._client = self._link.client
        self._closed_words = CLIENT_GAVE_UP if self._link.owned else CLIENT_CLOSED
        # On a cluster we were given, ``workers`` caps the chunks in flight.
        given = spec.workers if spec.workers and self._link.cluster is None else None
        self._cap: int | None = given
        self._threads = 0
        self._threads_checked = float("-inf")
        if self._count_threads() and not self._threads and self._link.cluster is None:
            _warn_no_workers(self._link.where)
        self._session_id = uuid.uuid4().hex
        initializer = None
        if spec.initializer is not None:
            initializer = dumps_function(
                functools.partial(spec.initializer, *spec.initargs), shared=True
            )
        self._session = SessionInfo(self._session_id, initializer, spec.max_tasks_per_worker)
        self._functions = FunctionRegistry()
        # Large pickled functions, scattered (``_function_arguments``): fn_id -> future.
        self._scattered_functions: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._scatter_lock = threading.Lock()
        # Keys of scattered copies that a task found gone from the cluster, though this
        # client may not have heard yet (``_resend_for_lost_copies``): never used again.
        self._lost_copies: set[str] = set()
        self._keys = itertools.count()
        self._chunk_times = ChunkTimes()  # added to by the courier
        self._clocks: NodeClocks | None = None  # made by the first traced chunk

        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when nothing is in flight
        self._in_flight: dict[str, _InFlight] = {}
        # Chunks beyond the window wait here, unclaimed: like a local pool's queue, so
        # a Future not yet sent can still be cancelled (and shutdown can drop them).
        self._pending: collections.deque[Chunk] = collections.deque()
        self._sending = 0  # chunks taken from the window by a thread sending them now
        self._settling = 0  # chunks the courier took and has not delivered yet
        self._accepting = True  # new chunks are welcome (until shutdown or terminate)
        self._sends = True  # chunks may go to Dask (until terminated or broken)
        self._broken: BrokenPool | None = None
        # The client lost its scheduler (or was closed): nothing on the cluster can be
        # reached, though the client may not say so yet (its status still "running").
        self._scheduler_lost = False
        self._shutting_down = False  # shutdown() was called: finish the work, then end
        self._ending: threading.Thread | None = None  # the thread that ends the backend
        self._ended = threading.Event()  # ... once it has

        # What the fetcher hands over: (futures, their payloads by key); None: stop.
        self._finished: queue.SimpleQueue[tuple[list[Any], dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self._finished_lock = threading.Lock()
        self._courier_told_to_stop = False
        self._fetcher = ResultFetcher(self._client, self._hand_to_courier)
        self._courier = threading.Thread(
            target=self._carry, name="workpool-dask-courier", daemon=True
        )
        self._courier.start()
        _live_backends.add(self)

    # --- the window ---------------------------------------------------------------------

    @property
    def max_chunks_in_flight(self) -> int:
        """``workers`` if given for a cluster we were given; else twice its threads now."""
        if self._cap is not None:
            return self._cap
        if time.monotonic() - self._threads_checked > THREADS_REFRESH_SECONDS:
            self._count_threads()
        return max(1, 2 * self._threads)

    def _count_threads(self) -> bool:
        """Ask the cluster how many threads it has now; whether it answered.

        Given up, as a fetch is, once the client stops running: asked of a lost
        scheduler, Dask waits out the client's connection timeout (30 s for a user's
        Client), and the caller's thread, which feeds the call, would wait with it.
        """
        client = self._client
        answered = False
        with contextlib.suppress(Exception):  # else keep the last count
            counts = _while_running(client, lambda: client.nthreads(asynchronous=True))
            self._threads = sum(counts.values())
            answered = True
        self._threads_checked = time.monotonic()
        self.workers = max(1, self._threads)
        return answered

    # --- submitting ---------------------------------------------------------------------

    def submit(self, chunk: Chunk) -> None:
        """Send ``chunk`` to Dask now if the window has room; else queue it, unclaimed."""
        self._check_open()
        self._function_ref(chunk.fn, chunk.sink)  # a function Dask cannot get fails here, at once
        window = self._window()
        with self._lock:
            if self._pending or not self._room(window):
                self._pending.append(chunk)
                return
            self._sending += 1
        try:
            self._send(chunk)
        finally:
            self._sent()
            self._send_pending()  # queued meanwhile, by another thread

    def _window(self) -> int:
        """How many chunks may be in flight (asked outside the lock: it may ask Dask).

        Dask queues what it is given on its workers, a chunk behind a long task as
        readily as any: until the first chunk is back, and while chunks are long and
        uneven (``ChunkTimes``), one chunk per thread of the cluster.
        """
        window = self.max_chunks_in_flight
        if self._cap is None:
            if not self._chunk_times.send_ahead:
                return max(1, window // 2)
            window *= SUBMIT_AHEAD  # Dask's own round trips: more ahead keeps it busy
        return window

    def _room(self, window: int) -> bool:
        """Has the window room for one more chunk? (Called holding the lock.)"""
        return len(self._in_flight) + self._sending < window

    def _sent(self) -> None:
        with self._lock:
            self._sending -= 1
            self._notify_if_idle()

    def _send_pending(self) -> None:
        """Send queued chunks while the window has room (each settled chunk makes some)."""
        while self._pending:  # (read unlocked: a hint, checked again below)
            window = self._window()
            with self._lock:
                if not self._pending or not self._sends or not self._room(window):
                    return
                chunk = self._pending.popleft()
                self._sending += 1
            try:
                self._send(chunk)
            except Exception as exc:  # nobody to raise to: the chunk's items fail with it
                if chunk.sink.claim(chunk):
                    self._fail_one(chunk, exc)
            finally:
                self._sent()

    def _send(self, chunk: Chunk) -> None:
        """Pickle the chunk, claim it and submit its Dask task."""
        trace = chunk.trace
        began = now_ns() if trace is not None else 0
        fn_ref = self._function_ref(chunk.fn, chunk.sink)
        sharing = chunk.sharing
        threshold = sharing.threshold if sharing is not None else None
        references: list[Any] = []

        def refer(array: Any) -> int:
            """Scatter ``array`` (once per call) and return its index among the references."""
            if sharing is None:
                handle = self._scatter(array)
            else:
                handle = sharing.sent_copy(array, self._scatter, usable=self._usable)
            for index, known in enumerate(references):
                if known is handle:
                    return index
            references.append(handle)
            return len(references) - 1

        try:
            items = dumps_items(chunk.items, threshold, refer)
        except WritableShareRefused:
            raise
        except Exception as exc:
            self._submit_picklable_part(chunk, exc)
            return
        fn_payload, fn_copy = self._function_arguments(fn_ref)
        if not chunk.sink.claim(chunk):
            return
        task = ChunkTask(
            session=self._session,
            fn_id=fn_ref.fn_id,
            fn_payload=fn_payload,
            mode=chunk.mode,
            start=chunk.start,
            size=len(chunk.items),
            task_timeout=chunk.task_timeout,
            share_threshold=threshold,
            items=items,
            attempt=chunk.attempt,
            timed=trace is not None,
            fn_name=function_name(chunk.fn),
        )
        if trace is not None:
            trace.span(trace.caller_track("input"), "pickle", "serialize", began, now_ns())
        key = f"workpool-{_task_name(chunk.fn)}-{self._session_id}-{next(self._keys)}"
        failure: BaseException | None = None
        with self._lock:
            if not self._sends:
                failure = ShutDown()
            else:
                try:
                    future = self._client.submit(
                        remote.run_chunk, task, references, fn_copy, key=key, pure=False
                    )
                except Exception as exc:  # the client is closed, or lost its scheduler
                    failure = exc
                else:
                    copies = (*references, fn_copy) if fn_copy is not None else tuple(references)
                    self._in_flight[key] = _InFlight(chunk, future, copies)
        if failure is not None:  # claimed: it must still end in a delivery
            if self._sends:  # not stopping: the client itself failed, which breaks us
                failure = self._break(failure)
                self._fail_all()
            elif self._broken is not None:
                failure = one_for_each_call(self._broken)
            self._fail_one(chunk, failure)
            return
        self._fetcher.watch(future)

    def _check_open(self) -> None:
        if self._broken is not None:
            raise one_for_each_call(self._broken)  # the words its calls failed with
        if not self._accepting:
            raise ShutDown()

    def _function_ref(self, fn: Callable[..., Any], call: object) -> Any:
        try:
            return self._functions.ref(fn, call)
        except Exception as exc:
            raise cannot_send(fn, "Dask workers", exc) from exc

    def _function_arguments(self, fn_ref: Any) -> tuple[bytes, Any]:
        """The pickled function for a chunk's task: its bytes, or a scattered copy of them.

        A function pickles large when it holds a large object (a closure over an
        array, a model): sent inside every chunk's task, it would cross to the cluster
        once per chunk. Above ``FUNCTION_SCATTER_BYTES`` it is scattered to the
        cluster once instead (``_scatter``), and each task names that copy;
        ``(b"", copy)`` then, else ``(bytes, None)``.
        """
        payload: bytes = fn_ref.payload
        if len(payload) <= FUNCTION_SCATTER_BYTES:
            return payload, None
        with self._scatter_lock:
            copy = self._scattered_functions.get(fn_ref.fn_id)
            if copy is None or not self._usable(copy):
                copy = self._scatter(payload)
                self._scattered_functions[fn_ref.fn_id] = copy
                while len(self._scattered_functions) > SCATTERED_FUNCTIONS:
                    # Tasks in flight hold their own reference: Dask keeps it for them.
                    self._scattered_functions.popitem(last=False)
            else:
                self._scattered_functions.move_to_end(fn_ref.fn_id)
        return b"", copy

    def _usable(self, copy: Any) -> bool:
        """Whether a scattered copy may still be referred to by new tasks."""
        return copy.key not in self._lost_copies and _still_held(copy)

    def _scatter(self, data: Any) -> Any:
        """Put one copy of ``data`` on the cluster now; the Dask future that names it.

        One worker gets it; the others fetch it from there for the tasks they run, once
        each while it is held. Not sent to every worker (``broadcast``): the scheduler
        copies a broadcast one worker at a time, and a worker lost meanwhile is tried
        again every 30 s, forever (dask/distributed#5704), under a lock that every
        later broadcast waits for. (Dask's memory manager dropped the copies no task
        waited for anyway.)

        Given up, as a fetch is (``fetcher.py``), if the client stops running meanwhile:
        Dask's own scatter would wait out its connection timeout for a lost scheduler.
        """
        client = self._client
        return _while_running(client, lambda: client.scatter(data, hash=False, asynchronous=True))

    def _submit_picklable_part(self, chunk: Chunk, error: Exception) -> None:
        """Fail the items that cannot be pickled; send the others as usual.

        If every item pickles, ``error`` (raised while sending the chunk: a scatter
        that failed) is the whole chunk's failure.
        """
        runs = list(picklable_runs(chunk.items))
        if all(reason is None for _, _, reason in runs):  # the chunk fails, not an item
            if chunk.sink.claim(chunk):
                self._fail_one(chunk, error)
            return
        for begin, end, reason in runs:
            piece = chunk.split(begin, end)
            if reason is None:
                self.submit(piece)
                continue
            add_note(reason, "the task's arguments could not be pickled to send them to Dask")
            if piece.sink.claim(piece):
                self._fail_one(piece, reason)

    # --- what comes back (the courier thread) ---------------------------------------------

    def _hand_to_courier(self, futures: list[Any], payloads: dict[str, Any]) -> None:
        """The fetcher's hand-over (on the client's loop). Once the courier is told to
        stop, what arrives is dropped: kept in a queue nobody reads, its futures would
        hold their tasks' results on the cluster until this object was collected."""
        with self._finished_lock:
            if not self._courier_told_to_stop:
                self._finished.put((futures, payloads))

    def _carry(self) -> None:
        """Settle finished tasks, as many at once as have arrived, until told to stop."""
        while True:
            arrivals = [self._next_arrival()]
            while True:
                try:
                    arrivals.append(self._finished.get_nowait())
                except queue.Empty:
                    break
            futures: list[Any] = []
            payloads: dict[str, Any] = {}
            for arrival in arrivals:
                if arrival is not None:
                    futures += arrival[0]
                    payloads.update(arrival[1])
            try:
                self._settle(futures, payloads)
                self._send_pending()
            except BaseException as exc:  # a bug here must not leave callers waiting
                self._break(exc)
                self._cancel_all("the pool broke: " + repr(exc))
                return
            if None in arrivals:
                return

    def _next_arrival(self) -> tuple[list[Any], dict[str, Any]] | None:
        """What the fetcher hands over next; while tasks are in flight, a client that
        stops running ends the wait: a fetch under way is given up, and its futures come
        back unfetched.

        A fetch under way when the scheduler is lost waits out Dask's connection
        timeout, and tries again (seen: over a minute), while the client has already
        cancelled every future it holds; the courier, waiting for it, would never settle
        those cancellations, which tell the pool that its scheduler is lost. (Any task
        in flight may be fetched at any moment, unknown to this thread: so the client is
        watched while there are some, not only while the fetcher says it fetches.)
        """
        while True:
            wait = CLIENT_CHECK_SECONDS if self._in_flight else None  # (a hint: unlocked)
            try:
                return self._finished.get(timeout=wait)
            except queue.Empty:
                if getattr(self._client, "status", None) != "running":
                    return self._fetcher.abandon(), {}

    def _settle(self, futures: list[Any], payloads: dict[str, Any]) -> None:
        """Deliver each future's chunk: its payload if it was fetched, else why not.

        Through ``base.deliver``, as every engine's own thread delivers: a done-callback
        that calls ``sys.exit`` must not end the courier, which would break the pool."""
        taken: list[_InFlight] = []
        with self._lock:
            for future in futures:
                entry = self._in_flight.get(future.key)
                if entry is not None and entry.future is future:
                    del self._in_flight[future.key]
                    taken.append(entry)
            self._settling += len(taken)
        try:
            for entry in taken:
                try:
                    if entry.future.key in payloads:
                        self._deliver_payload(entry.chunk, payloads[entry.future.key])
                    else:
                        self._deliver_failure(entry)
                except Exception as exc:  # still, the chunk must end in a delivery
                    with contextlib.suppress(Exception):
                        deliver(ResultBatch.failed(entry.chunk, exc, retryable=False))
        finally:
            with self._lock:
                self._settling -= len(taken)
                self._notify_if_idle()

    def _deliver_payload(self, chunk: Chunk, payload: bytes) -> None:
        trace = chunk.trace
        began = now_ns() if trace is not None else 0
        try:
            report: Report = pickle.loads(payload)
        except Exception as exc:
            add_note(exc, "the results came back from Dask but could not be unpickled here")
            deliver(ResultBatch.failed(chunk, exc, retryable=False))
            return
        self._chunk_times.add(sum(piece.elapsed for piece in report.pieces))
        offset = 0
        if trace is not None:
            trace.span(trace.caller_track("results"), "unpickle", "serialize", began, now_ns())
            offset = self._put_on_timeline(trace, report)
        for piece in report.pieces:
            part = chunk
            if piece.offset != 0 or piece.size != len(chunk.items):
                part = chunk.split(piece.offset, piece.offset + piece.size)
            if piece.errors and piece.errors[0][0] == remote.WHOLE_CHUNK:
                self._retry_one_by_one(part, unpack_error(piece.errors[0][1]), piece.worker)
                continue
            errors = {position: unpack_error(packed) for position, packed in piece.errors}
            for error in errors.values():
                if isinstance(error, BrokenPool) and about_the_pool(error):  # not a task's own
                    self._break(error)
            values = piece.values if piece.values else [None] * piece.size
            batch = ResultBatch(part, values, errors, piece.elapsed, piece.retryable, piece.worker)
            if piece.times is not None and trace is not None:
                received, run, ran, returned = piece.times
                batch.times = (received + offset, run + offset, ran + offset, returned + offset)
            deliver(batch)

    def _put_on_timeline(self, trace: Recorder, report: Report) -> int:
        """Add what the node recorded to the call's timeline; the node's clock offset.

        The tracks of the node's worker processes are made here, in the node's group,
        before the pieces' spans go on them (tracks are named by who made them first).
        """
        from workpool.backends.dask import tracing

        if self._clocks is None:
            self._clocks = tracing.NodeClocks(self._client)
        offset = self._clocks.offset(report.address)
        group = tracing.node_group(report.address)
        for piece in report.pieces:
            if piece.times is not None:
                trace.worker_track(piece.worker, group)
        if report.timeline is not None:
            tracing.put_on(trace, report.timeline, report.address, offset)
        return offset

    def _retry_one_by_one(self, chunk: Chunk, error: BaseException, worker: str) -> None:
        """A worker could not rebuild the chunk's items: find which, one item per task."""
        if len(chunk.items) == 1:
            batch = ResultBatch.failed(chunk, error, retryable=False)
            batch.worker = worker
            deliver(batch)
            return
        for position in range(len(chunk.items)):
            piece = chunk.split(position, position + 1)
            try:
                self.submit(piece)
            except Exception as exc:  # stopping: this item's failure stands
                deliver(ResultBatch.failed(piece, exc, retryable=False))

    def _deliver_failure(self, entry: _InFlight) -> None:
        """The task did not produce our result: say why, as each item's failure."""
        chunk, future, copies = entry
        status = future.status
        retryable = False
        error: BaseException
        if status == "error":
            cause = future.exception()
            if type(cause).__name__ == "KilledWorker":
                error = WorkerCrashed(
                    f"the Dask workers running {chunk.task_name()} kept dying ({cause}); "
                    "Dask gave up on it"
                )
                error.__cause__ = cause
                retryable = True
            elif type(cause).__name__ in ("NoWorkerError", "NoValidWorkerError"):
                error = cause
                add_note(
                    error,
                    "workpool: the Dask scheduler had no worker to run this chunk's task "
                    "for longer than its distributed.scheduler.no-workers-timeout",
                )
            else:
                error = cause
                add_note(
                    error,
                    "workpool: Dask could not run this chunk's task on the cluster "
                    "(is workpool installed on the workers, in the same version?)",
                )
        elif status == "cancelled":  # not by us: we settle those we cancel ourselves
            why, client_lost, reason = _cancellation(future, self._closed_words)
            if copies and not client_lost and self._lost_its_copies(reason, copies):
                self._resend_for_lost_copies(chunk, copies)
                return
            if client_lost:
                error = BrokenPool(f"Dask cancelled {chunk.task_name()}: {why}")
                with self._lock:
                    self._scheduler_lost = True
                    self._idle.notify_all()  # a shutdown need not wait for the courier
                self._break(error)
                self._fail_all()
            else:  # a restart, say: this call's task is gone, the cluster is still there
                error = concurrent.futures.CancelledError(
                    f"Dask cancelled {chunk.task_name()}: {why}"
                )
        else:  # finished, but its result could not be fetched
            error = WorkerCrashed(
                f"the result of {chunk.task_name()} was lost with its Dask worker"
            )
            retryable = True
        deliver(ResultBatch.failed(chunk, error, retryable=retryable))

    def _lost_its_copies(self, reason: str | None, copies: tuple[Any, ...]) -> bool:
        """Was a task cancelled, given Dask's ``reason``, because its copies were lost?

        Submitted after the scheduler lost a copy, the task is refused for "lost
        dependencies"; submitted before, it is forgotten with the copy when the last
        worker holding it dies ("already forgotten", the copy's own cancellation
        arriving with it): either way, nothing of the chunk ran.
        """
        if reason == LOST_DEPENDENCIES:
            return True
        return reason == FORGOTTEN and not all(self._usable(copy) for copy in copies)

    def _resend_for_lost_copies(self, chunk: Chunk, copies: tuple[Any, ...]) -> None:
        """The scheduler lost a copy the chunk's task refers to: send it again.

        A restart (or the loss of every worker that held one) reached the scheduler
        before the task, or while it waited. Nothing of the chunk ran, so it goes again
        as it is, with its copies scattered anew.
        """
        with self._scatter_lock:
            self._lost_copies.update(copy.key for copy in copies)
            for fn_id, copy in list(self._scattered_functions.items()):
                if copy.key in self._lost_copies:
                    del self._scattered_functions[fn_id]
        again = chunk.split(0, len(chunk.items))
        with self._lock:  # work already accepted: it goes even while the pool shuts down
            sends = self._sends
            if sends:
                self._pending.appendleft(again)
        if not sends:  # terminated, or broken: the chunk's items fail with it
            error = self._broken if self._broken is not None else ShutDown()
            self._fail_each([again], lambda: one_for_each_call(error))
            return
        self._send_pending()

    # --- stopping -----------------------------------------------------------------------

    def forget(self, sink: ResultSink) -> None:
        """Cancel the sink's tasks on the scheduler: nobody will read their results."""
        with self._lock:
            keys = [key for key, entry in self._in_flight.items() if entry.chunk.sink is sink]
            dropped = [self._in_flight.pop(key) for key in keys]
            queued = [chunk for chunk in self._pending if chunk.sink is sink]
            self._pending = collections.deque(c for c in self._pending if c.sink is not sink)
            self._notify_if_idle()
        why = "the call that submitted this task was closed"
        self._cancel(dropped, why)
        self._drop(queued, why)
        self._send_pending()

    def _fail_each(self, chunks: list[Chunk], error: Callable[[], BaseException]) -> None:
        """Fail every item of ``chunks``, each chunk with an ``error()`` of its own."""
        fail_chunks(chunks, error, in_engine_thread=threading.current_thread() is self._courier)

    def _fail_one(self, chunk: Chunk, error: BaseException) -> None:
        self._fail_each([chunk], lambda: error)

    def _drop(self, queued: list[Chunk], why: str) -> None:
        """Queued chunks that will never be sent: cancelled, as a local pool's would be."""
        self._fail_each(queued, lambda: concurrent.futures.CancelledError(why))

    def _cancel(self, dropped: list[_InFlight], why: str) -> None:
        if not dropped:
            return
        with contextlib.suppress(Exception):  # a client already gone took its tasks along
            self._client.cancel([entry.future for entry in dropped])
        self._drop([entry.chunk for entry in dropped], why)

    def _notify_if_idle(self) -> None:
        if not (self._in_flight or self._settling or self._pending or self._sending):
            self._idle.notify_all()

    def _break(self, cause: BaseException) -> BaseException:
        """Mark the backend broken by ``cause``; the ``BrokenPool`` for one call to raise."""
        with self._lock:
            if self._broken is None:
                broken = cause if isinstance(cause, BrokenPool) else None
                if broken is None and _closed(self._client):
                    broken = BrokenPool(self._closed_words)
                self._broken = broken or BrokenPool(f"the Dask cluster failed us: {cause!r}")
                if self._broken is not cause:
                    self._broken.__cause__ = cause
            return cause if cause is self._broken else one_for_each_call(self._broken)

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        """Let the tasks in flight finish, and those queued unless ``cancel_pending``."""
        with self._lock:
            self._accepting = False
            self._shutting_down = True
            queued = list(self._pending) if cancel_pending else []
            if cancel_pending:
                self._pending.clear()
            self._notify_if_idle()
        self._drop(queued, "the pool was shut down before this task started")
        # Called by a done-callback, on the courier: it would wait for itself to finish
        # delivering. As the local engines do in their own threads, it does not wait.
        if wait and threading.current_thread() is not self._courier:
            self._close(finish=True)
        else:
            threading.Thread(
                target=self._close, args=(True,), name="workpool-dask-closer", daemon=True
            ).start()

    def terminate(self) -> None:
        """Cancel every task in flight on the scheduler, close the local pools, leave."""
        self._cancel_all("the pool was terminated before this task finished")
        self._close(finish=False)

    def _cancel_all(self, why: str) -> None:
        """Refuse new work; cancel every task in flight, failing its chunk with ``why``."""
        with self._lock:
            self._accepting = False
            dropped, queued = self._take_all()
        fetching = self._fetcher.fetching
        self._cancel(dropped, why)
        self._drop(queued, why)
        # The courier may be fetching results from workers about to be killed: Dask
        # would then wait for them to be computed again, on workers that never return.
        if fetching:
            with contextlib.suppress(Exception):
                self._client.cancel(fetching)

    def _fail_all(self) -> None:
        """Broken: fail every chunk in flight or queued with the pool's error, send no more.

        The cluster cannot be reached: Dask may never settle the tasks in flight (those
        submitted while its client was reconnecting or closing), and the queued ones
        could never go, so their Futures would wait forever. Nothing is cancelled on the
        cluster: there is nobody there to tell.
        """
        with self._lock:
            dropped, queued = self._take_all()
            broken = self._broken
        assert broken is not None
        self._fail_each(
            [entry.chunk for entry in dropped] + queued, lambda: one_for_each_call(broken)
        )

    def _take_all(self) -> tuple[list[_InFlight], list[Chunk]]:
        """Send no more: take every chunk in flight, and every queued one, off the books.

        Under the lock; the caller settles each of them.
        """
        self._sends = False
        dropped = list(self._in_flight.values())
        self._in_flight.clear()
        queued = list(self._pending)
        self._pending.clear()
        self._notify_if_idle()
        return dropped, queued

    @property
    def shutting_down(self) -> bool:
        """Whether ``shutdown`` was called (at exit, such a backend finishes its work)."""
        return self._shutting_down

    def join(self) -> None:
        """Wait until the backend has ended (after ``shutdown`` or ``terminate``)."""
        self._ended.wait()

    def _close(self, finish: bool) -> None:
        with self._lock:
            if finish:
                # Once the scheduler is lost, the courier may be fetching results that
                # cannot come (a gather waits out the client's connection timeout): it
                # delivers those chunks' failures itself, later; nobody waits for it.
                while (
                    self._in_flight
                    or self._pending
                    or self._sending
                    or (self._settling and not self._scheduler_lost)
                ):
                    self._idle.wait()
            ending = self._ending
            if ending is None:
                self._ending = threading.current_thread()
        if ending is not None:  # another thread ends it: returning means it has ended
            if ending is not threading.current_thread():
                self._ended.wait()
            return
        try:
            self._end(finish)
        except BaseException:  # a Ctrl+C, say: the next call to end it starts again
            with self._lock:
                self._ending = None
            raise
        self._ended.set()

    def _end(self, finished: bool) -> None:
        """Stop the courier, close our sessions and what workpool started for us.

        On a cluster left running, our sessions are closed, which stops their local
        pools (and so the tasks that still run there). A local cluster of ours whose
        tasks may still run (``terminate``) is stopped at once, its workers killed: a
        polite close waited for the running tasks, up to its nannies' grace of seconds.
        """
        with self._finished_lock:
            self._courier_told_to_stop = True
            self._finished.put(None)
        with self._scatter_lock:
            self._scattered_functions.clear()  # lets Dask release them
        if self._link.cluster is None or not (finished or self._link.stop_workers()):
            self._close_sessions()
        if self._courier is not threading.current_thread() and not self._scheduler_lost:
            self._courier.join()
            with contextlib.suppress(queue.Empty):  # left by a courier the pool's break ended
                while True:
                    self._finished.get_nowait()
        self._link.close(wait=not self._scheduler_lost)
        _live_backends.discard(self)  # not before: an interrupted close ends at exit

    def _close_sessions(self) -> None:
        """Stop this backend's local pools on every worker, waiting CLOSE_SECONDS at most.

        A client that lost its scheduler cannot reach the workers: it would only wait
        (for its connection timeout, while its status still says "running").
        """
        if self._scheduler_lost or getattr(self._client, "status", None) != "running":
            return

        def close_everywhere() -> None:
            with contextlib.suppress(Exception):  # a client that lost its cluster: nothing to do
                self._client.run(remote.close_session, self._session_id, on_error="ignore")

        closer = threading.Thread(
            target=close_everywhere, name="workpool-dask-session-closer", daemon=True
        )
        closer.start()
        closer.join(CLOSE_SECONDS)


def _warn_no_workers(where: str) -> None:
    """Say that the tasks will wait: without a word, a cluster none joins looks like a hang."""
    warnings.warn(
        f"{where} has no workers: the tasks sent to it wait until one joins, as Dask's own "
        "do (its scheduler's distributed.scheduler.no-workers-timeout fails them instead)",
        RuntimeWarning,
        stacklevel=outside_workpool(),
    )


def _still_held(copy: Any) -> bool:
    """Whether this client knows a scattered copy to be on the cluster still (a restart
    cancels every one; the loss of all the workers that held one makes it "lost")."""
    return bool(copy.status == "finished")


# Dask's reason for cancelling a task submitted with a reference to data the scheduler
# no longer has (distributed's scheduler, ``update_graph``).
LOST_DEPENDENCIES = "lost dependencies"
# ... and for cancelling a task it forgot, as it forgets those that depend on scattered
# data lost with every worker that held it (its ``_task_to_report_msg``).
FORGOTTEN = "already forgotten"


# Why the client closed under a pool. Dask closes a client itself once it has lost its
# scheduler and failed to reconnect within its timeout: the only way one that workpool
# made, and closes only with the pool, can close. The program's own may be either.
CLIENT_GAVE_UP = "the Dask client lost its scheduler and could not reconnect, so Dask closed it"
CLIENT_CLOSED = (
    "the Dask client was closed while the pool still used it: by the program (close the "
    "pool before its client), or by Dask, once it lost its scheduler and could not reconnect"
)


def _while_running(client: Any, start: Callable[[], Any]) -> Any:
    """Run the coroutine ``start()`` makes on ``client``'s loop; wait for its result.

    Raises ``_ClientStopped`` as soon as the client's status leaves "running" (its
    scheduler lost, or the client closing), which Dask sets before it cancels every
    future it holds: nothing asked of the scheduler can succeed after that, though
    Dask itself would wait out its connection timeout, and try again.
    """
    import asyncio
    import inspect

    loop = client.loop.asyncio_loop  # a RuntimeError once the client has closed
    if client.asynchronous:  # its loop runs this thread, which would wait on it for ever
        raise RuntimeError(ON_ITS_LOOP)
    coroutine = start()
    try:
        waiting = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except BaseException:  # its loop closed just now
        coroutine.close()  # never started: nothing to warn of
        raise
    while True:
        try:
            return waiting.result(timeout=CLIENT_CHECK_SECONDS)
        except concurrent.futures.TimeoutError:
            if waiting.done():  # the call's own timeout
                raise
        except BaseException:  # the call failed (cancel does nothing then), or Ctrl+C here
            waiting.cancel()
            raise
        status = getattr(client, "status", None)
        if status != "running":
            waiting.cancel()
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                with contextlib.suppress(ValueError):  # its loop starts it now
                    coroutine.close()  # its loop stopped before it began
            raise _ClientStopped(
                f"the Dask client stopped running (its status is {status!r}) "
                "while it waited for the cluster"
            ) from None


ON_ITS_LOOP = (
    "the pool's Dask client is asynchronous and its event loop runs this thread, which "
    "cannot wait for it: use the pool from another thread (such as loop.run_in_executor)"
)


def _closed(client: Any) -> bool:
    return getattr(client, "status", None) in ("closing", "closed")


def _cancellation(future: Any, closed_words: str) -> tuple[str, bool, str | None]:
    """Why Dask cancelled ``future``, whether its client lost or closed its scheduler,
    and Dask's own reason (its ``CancelledError``'s), if it gave one.

    When the client is gone the pool cannot go on; any other cancellation
    (``client.restart()``, another client's ``cancel``) ends the task, not the cluster.
    A client closed under the pool cancels every future it holds, with no reason given:
    ``closed_words`` say why it closed.
    """
    if _closed(future.client):
        return closed_words, True, None
    lost = getattr(future.client, "status", None) != "running"
    try:
        future.result(timeout=1)
    except concurrent.futures.CancelledError as why:  # Dask's, with its reason
        reason = getattr(why, "reason", None)
        return str(why), lost or reason == "scheduler-connection-lost", reason
    except Exception as other:
        return f"{future} ({type(other).__name__}: {other})", True, None
    return str(future), lost, None


def _task_name(fn: Callable[..., Any]) -> str:
    """The function's name as it appears in task keys (and on Dask's dashboard)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return re.sub(r"[^A-Za-z0-9_]", "", name) or "task"


def _end_at_exit(backends: list[DaskBackend]) -> None:
    """No session may outlive the program on a cluster, nor a cluster workpool started.

    A ``Pool`` still open is shut down first, and one shut down finishes its work; the
    rest (an unread one-shot imap) is terminated, as on one machine (``at_exit.py``).
    """
    with contextlib.suppress(Exception):
        end_all(backends)


# Dask hands work to thread pools of its own (a local cluster's scheduler reads each new
# graph in one), and ``concurrent.futures`` stops every thread pool once the main thread
# has ended, before the ``atexit`` hooks run: a pool shut down without waiting could then
# not finish its work. So the hook runs among ``threading``'s, where ``concurrent.futures``
# registers its own: registered after it, it runs before it.
_live_backends = ExitList(_end_at_exit, THREADS)
