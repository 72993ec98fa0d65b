"""The supervisor: the thread that watches a pool's worker processes.

See ``engine.py`` for the picture of how a task travels. The supervisor starts the
workers, hands out chunks, reads results, watches deadlines, and when a worker dies,
works out which task it was on (``_recover``) and starts another in its place.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from workpool import errors
from workpool._options import PoolSpec
from workpool.backends.base import ShutDown, deliver
from workpool.backends.process import exit_hook, lifeline, protocol, unix_sockets
from workpool.backends.process.framing import FrameReader, FrameWriter
from workpool.backends.process.handle import (
    FUNCTION_CACHE_SIZE,
    TRACE_GROUP,
    KillReason,
    WorkerHandle,
    describe_exit,
)
from workpool.backends.process.poller import READ, WRITE, Poller
from workpool.backends.process.slots import SharedSlots
from workpool.backends.process.wire import WireChunk
from workpool.chunking import ChunkTimes
from workpool.clock import capped_wait, clock_offset, now_ns
from workpool.errors import (
    TaskTimeout,
    WorkerCrashed,
    add_note,
    cancelled,
    is_broken_pool,
    one_for_each_call,
)
from workpool.remote_errors import unpack_error
from workpool.sharing import dumps_function_sharing
from workpool.tasks import ResultBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from workpool.backends.process.launch import Launcher

__all__ = ["Supervisor"]

# Chunks a worker holds at once: the running one and the next, when work may be sent
# ahead (``chunking.ChunkTimes`` says when).
PREFETCH = 2
# Seconds a worker has to exit after STOP before it is killed.
STOP_GRACE = 5.0

_WAKE, _SOCKET, _EXIT = "wake", "socket", "exit"


class Supervisor:
    """Owns the worker processes of one pool; its thread runs ``_loop``.

    One lock guards everything the supervisor owns. Its thread holds it except while
    it waits in ``select`` and while it hands results over; a submitting thread takes
    it to hand a chunk straight to an idle worker (one thread hop less than waking the
    supervisor to do it). A sink's ``deliver`` is called only with the lock released,
    since it may submit again; its ``claim`` is called under the lock, just before
    the chunk is written to a worker's socket.
    """

    def __init__(
        self,
        spec: PoolSpec,
        launcher: Launcher,
        worker_started: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._spec = spec
        self._launcher = launcher
        # Told each worker's label and start-up interval (for timelines), if anyone asks.
        self._worker_started = worker_started
        # Pickled now, so that one that cannot be pickled fails here, at once; large
        # arrays among initargs (or that the initializer holds) go in shared memory.
        self._initializer_payload: bytes | None = None
        self._initializer_fds: list[int] = []
        self._initializer_keep: list[object] = []
        if spec.initializer is not None:
            try:
                self._initializer_payload, self._initializer_fds, self._initializer_keep = (
                    dumps_function_sharing((spec.initializer, spec.initargs))
                )
            except Exception as exc:
                raise TypeError(
                    f"the initializer {spec.initializer!r} and its initargs cannot be sent "
                    f"to a worker process: {exc}"
                ) from exc
        self._slots = SharedSlots(spec.workers)
        self._slot_view = self._slots.view
        self._handles: list[WorkerHandle | None] = [None] * spec.workers
        self._poller = Poller()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The wake-up pipe lives exactly as long as this object: other threads may still
        # call shutdown() after the loop ended, and a descriptor closed early could by
        # then belong to someone else's pipe, which our wake-up byte would corrupt.
        closer = weakref.finalize(self, _close_descriptors, self._wake_r, self._wake_w)
        closer.atexit = False  # at exit, our exit hook still needs it to wake the loop
        self._poller.register(self._wake_r, READ, (_WAKE, None))

        # Re-entrant: the supervisor's own steps nest. Everything below is under it.
        self._lock = threading.RLock()
        self._inbox: deque[WireChunk] = deque()
        self._accepting = True
        self._stopping = False
        self._cancel_pending = False
        self._terminating = False
        self._broken: BaseException | None = None

        self._deliveries: list[ResultBatch] = []  # handed to sinks once the lock is free
        self._unstarted: deque[int] = deque()  # slots of the first workers, started in turn
        self._wake_by: float | None = None  # when the loop must look again (monotonic)
        self._pending: deque[WireChunk] = deque()
        self._chunk_times = ChunkTimes()  # whether a busy worker may get a second chunk
        self._seq = 0
        self._init_failures = 0  # consecutive workers whose start-up failed
        self._stop_deadline: float | None = None
        self._stop_killed = False  # workers still there at the deadline were killed

        self._thread = threading.Thread(target=self._loop, name="workpool-supervisor", daemon=True)
        self._thread.start()
        exit_hook.track(self)

    # --- called from other threads ----------------------------------------------------

    def submit(self, wire: WireChunk) -> None:
        """Queue a chunk whose items are pickled; thread-safe."""
        chunk = wire.chunk
        with self._lock:
            if self._broken is not None:
                raise errors.one_for_each_call(self._broken)  # the words its calls failed with
            # Once shut down, a pool takes only retries of the work it was given: new work
            # (a lazy imap reading on) would keep it from ever stopping.
            if not self._accepting or (self._stopping and chunk.attempt == 0):
                raise ShutDown()
            handle = None if self._pending or self._inbox else self._least_busy()
            if handle is None or handle.writer.pending or not handle.takes_whole(chunk):
                self._inbox.append(wire)  # _dispatch cuts a chunk to a worker's tasks left
            else:  # a worker has room: send it from this thread, now
                if chunk.sink.claim(chunk):
                    self._send_chunk(handle, wire)
                if chunk.task_timeout is None:
                    return
        self._wake()  # the supervisor has work to hand out, or a new deadline to watch

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        with self._lock:
            self._stopping = True
            self._cancel_pending = self._cancel_pending or cancel_pending
        self._wake()
        if wait:
            self.join()

    def terminate(self) -> None:
        with self._lock:
            self._stopping = self._terminating = True
        self._wake()
        self.join()

    def join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def worker_pids(self) -> list[int]:
        return [h.pid for h in self._handles if h is not None and h.alive]

    @property
    def shutting_down(self) -> bool:
        """Whether ``shutdown`` was called (and not ``terminate``): at exit, it finishes."""
        return self._stopping and not self._terminating

    @property
    def accepting(self) -> bool:
        """Whether ``submit`` would take a chunk now (not stopping, not broken)."""
        with self._lock:
            return self._accepting and not self._stopping and self._broken is None

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending anyway; a closed one, that we stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    # --- the supervisor thread --------------------------------------------------------

    def _loop(self) -> None:
        try:
            with self._lock:
                # One worker now, the others one per round of the loop: each start is a
                # round trip to the zygote, and the first chunk should go out as soon
                # as one worker is ready, not once every worker has been asked for.
                self._unstarted.extend(range(1, self._spec.workers))
                self._start_worker(0)
                self._wake_by = self._next_wake()
            while self._step():
                pass
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._lock:
                self._break(exc)
            self._hand_over()
        finally:
            with self._lock:
                self._close()
            self._hand_over()

    def _step(self) -> bool:
        """One round: wait for something to happen, react, hand out work. False: done.

        When to wake next is worked out before results are handed over, so that this
        thread's last act before waiting again is to wake their callers: a caller woken
        while this thread still runs Python would only wait again, for the GIL.
        """
        wake_by = self._wake_by
        events = self._poller.wait(
            None if wake_by is None else capped_wait(max(0.0, wake_by - time.monotonic()))
        )
        with self._lock:
            going = self._react(events)
            if going:
                self._start_next()
                self._wake_by = self._next_wake()
        self._hand_over()
        return going

    def _next_wake(self) -> float | None:
        """The monotonic time by which the loop must look again, or None: not before an event."""
        if self._unstarted:
            return 0.0
        timeout = self._poll_timeout()
        return None if timeout is None else time.monotonic() + timeout

    def _start_next(self) -> None:
        """Start the next of the pool's first workers not started yet, if still wanted."""
        while self._unstarted:
            slot = self._unstarted.popleft()
            if self._handles[slot] is not None:  # started meanwhile, to replace another
                continue
            if self._broken is None and not self._terminating and self._needs_worker():
                self._start_worker(slot)
            return

    def _hand_over(self) -> None:
        """Give the sinks their results, with the lock released."""
        while self._deliveries:
            with self._lock:
                deliveries, self._deliveries = self._deliveries, []
            for batch in deliveries:
                deliver(batch)

    def _react(self, events: list[tuple[tuple[str, WorkerHandle], int]]) -> bool:
        exits: list[WorkerHandle] = []
        for (kind, worker), mask in events:
            if kind == _WAKE:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif kind == _SOCKET:
                if mask & READ:
                    self._read(worker)
                if mask & WRITE:
                    self._flush(worker)
            else:
                exits.append(worker)
        exits.extend(self._confirmed_ends(exits))
        for ended in exits:  # after the reads, so results sent before dying count
            self._on_exit(ended)
        self._take_inbox()
        if self._terminating:
            self._terminate_now()
            return False
        for handle in self._handles:  # a submitting thread interrupted before it asked
            if handle is not None and handle.writer.pending:
                self._watch_writes(handle)
        self._check_overruns()
        self._restaff()
        self._dispatch()
        return self._keep_going()

    def _poll_timeout(self) -> float | None:
        """Sleep until the next task deadline, or a stop deadline, or forever."""
        now = time.monotonic_ns()
        timeout: float | None = None
        for handle in self._handles:
            if handle is None or not handle.assigned or handle.kill_reason is not None:
                continue
            head = handle.assigned[0].chunk
            if head.task_timeout is None:
                continue
            running = self._running_item(handle)
            if running is None:
                wait = head.task_timeout  # not started yet: look again within a timeout
            else:
                _, started_ns = running
                wait = max(0.0, head.task_timeout - (now - started_ns) / 1e9)
            timeout = wait if timeout is None else min(timeout, wait)
        if self._stop_deadline is not None and not self._stop_killed:
            wait = max(0.0, self._stop_deadline - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        for handle in self._handles:
            if handle is not None and handle.recheck_at is not None:
                wait = max(0.0, handle.recheck_at - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    def _start_worker(self, slot: int) -> None:
        parent_sock, child_sock = unix_sockets.pair()
        base = slot * protocol.SLOT_FIELDS
        self._slot_view[base + protocol.SLOT_SEQ] = -1
        self._slot_view[base + protocol.SLOT_POSITION] = protocol.POSITION_IDLE
        began = now_ns()
        try:
            process = self._launcher.start(child_sock, self._slots, slot)
        finally:
            child_sock.close()
        handle = WorkerHandle(
            slot=slot,
            process=process,
            pid=process.pid or 0,
            sock=parent_sock,
            reader=FrameReader(parent_sock),
            writer=FrameWriter(parent_sock),
            tasks_left=self._spec.max_tasks_per_worker,
        )
        handle.started_ns = began
        if process.needs_polling:  # only waitpid can be sure it lives: ask on the beat
            handle.recheck_every = lifeline.RECHECK_MAX
            handle.recheck_at = lifeline.next_check(time.monotonic(), lifeline.RECHECK_MAX)
        self._handles[slot] = handle
        self._poller.register(parent_sock.fileno(), READ, (_SOCKET, handle))
        self._poller.register(process.ended_fd, READ, (_EXIT, handle))
        init = protocol.encode_init(self._initializer_payload, len(self._initializer_fds))
        handle.writer.write(*init, fds=self._initializer_fds)
        self._watch_writes(handle)

    def _take_inbox(self) -> None:
        with self._lock:
            if self._inbox:
                self._pending.extend(self._inbox)
                self._inbox.clear()
            cancel = self._cancel_pending
        if cancel and self._pending:
            # The chunks the workers would hold by now had they all started were handed
            # to the pool already: they run, as Executor.shutdown(cancel_futures=True)
            # lets queued calls run. Chunks wait here only until a worker is ready.
            room = sum(
                self._room_per_worker() - len(handle.assigned)
                for handle in self._handles
                if handle is not None and handle.accepts_work
            )
            waiting, kept = self._pending, max(room, 0)
            self._pending = deque(itertools.islice(waiting, kept))
            for wire in itertools.islice(waiting, kept, None):
                self._fail(wire, cancelled("the pool shut down before this task started"))

    # --- handing out work -------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._pending:
            handle = self._least_busy()
            if handle is None:
                return
            wire = self._pending.popleft()
            count = len(wire.chunk.items)
            if not wire.chunk.sink.claim(wire.chunk):
                continue
            if handle.tasks_left is not None and count > handle.tasks_left:
                self._pending.appendleft(wire.split(handle.tasks_left, count))
                wire = wire.split(0, handle.tasks_left)
            if wire.payload is None and not self._encode(wire):
                continue
            try:
                self._send_chunk(handle, wire)
            except Exception as exc:  # it breaks the pool (``_loop``); this chunk fails too:
                if all(sent is not wire for sent in handle.assigned):  # no queue holds it
                    broken = errors.BrokenPool(f"the pool broke: {exc!r}")
                    broken.__cause__ = exc
                    self._fail(wire, broken)
                raise

    def _least_busy(self) -> WorkerHandle | None:
        """The ready worker with the fewest chunks, if one has room.

        A worker still starting gets nothing: a chunk queued in its socket would wait
        for its start while a ready worker could run it (a small call's whole time).
        Nor does a busy worker get a second chunk while another is starting: queued
        behind a long task, it would wait there while the newcomer, once ready, sat idle.
        """
        best: WorkerHandle | None = None
        starting = bool(self._unstarted)
        room = self._room_per_worker()
        for handle in self._handles:
            if handle is None or not handle.accepts_work:
                continue
            if not handle.ready:
                starting = True
                continue
            if len(handle.assigned) >= room:
                continue
            if best is None or len(handle.assigned) < len(best.assigned):
                best = handle
        if best is not None and best.assigned and starting:
            return None
        return best

    def _room_per_worker(self) -> int:
        """Chunks a worker may hold: ``PREFETCH`` while work may be sent ahead, else 1."""
        return PREFETCH if self._chunk_times.send_ahead else 1

    def _encode(self, wire: WireChunk) -> bool:
        """Pickle a piece split off a chunk; if that fails now, the piece fails with it."""
        try:
            wire.encode()
        except Exception as exc:
            add_note(exc, "the task's arguments could not be sent to a worker process")
            self._fail(wire, exc)
            return False
        return True

    def _send_chunk(self, handle: WorkerHandle, wire: WireChunk) -> None:
        # This may run in a submitting thread, where Ctrl+C can stop it between any two
        # steps, so the books never claim more than the worker has: a function evicted
        # is forgotten before it is evicted, one sent is recorded after it is sent (sent
        # but not recorded, it is sent again later), and a chunk sent but not recorded
        # is answered, an answer ``_on_batch`` drops (its submit raised; nobody waits).
        ref = wire.fn_ref
        if ref.fn_id in handle.functions:
            handle.functions.move_to_end(ref.fn_id)
        else:
            evict = None
            if len(handle.functions) >= FUNCTION_CACHE_SIZE:
                evict, _ = handle.functions.popitem(last=False)
            define = protocol.encode_define(ref.fn_id, ref.payload, evict, len(ref.fds))
            handle.writer.write(*define, fds=ref.fds)
            handle.functions[ref.fn_id] = None
        self._seq += 1
        wire.seq = self._seq
        chunk = wire.chunk
        assert wire.payload is not None, "a chunk is pickled before it is sent"
        tracked = chunk.task_timeout is not None
        timed = chunk.trace is not None
        if timed and not handle.assigned:  # an idle worker starts on it at once
            handle.busy_since_ns = now_ns()
        threshold = chunk.sharing.threshold if chunk.sharing is not None else None
        parts = protocol.encode_chunk(
            wire.seq, ref.fn_id, chunk.mode, tracked, timed, threshold, len(wire.fds), wire.payload
        )
        handle.writer.write(*parts, fds=wire.fds)
        handle.assigned.append(wire)
        if handle.tasks_left is not None:
            handle.tasks_left -= len(chunk.items)
        self._watch_writes(handle)

    def _flush(self, handle: WorkerHandle) -> None:
        handle.writer.flush()
        self._watch_writes(handle)

    def _watch_writes(self, handle: WorkerHandle) -> None:
        pending = bool(handle.writer.pending)
        if handle.alive and pending != handle.watching_writes:
            events = READ | (WRITE if pending else 0)
            self._poller.modify(handle.sock.fileno(), events, (_SOCKET, handle))
            handle.watching_writes = pending
            if threading.current_thread() is not self._thread:
                self._wake()  # a wait under way does not see the change (poller.py)

    # --- what comes back --------------------------------------------------------------

    def _read(self, handle: WorkerHandle) -> None:
        for body in handle.reader.read():
            message = protocol.decode_from_worker(body)
            if isinstance(message, protocol.Batch):
                self._on_batch(handle, message)
            elif isinstance(message, protocol.Ready):
                handle.ready = True
                self._init_failures = 0
                now = now_ns()
                handle.clock_offset_ns = clock_offset(handle.started_ns, message.clock_ns, now)
                if self._worker_started is not None:
                    self._worker_started(handle.label, handle.started_ns, now)
            else:
                handle.init_error = unpack_error(message.error)
        if handle.reader.closed and handle.alive:
            self._poller.unregister(handle.sock.fileno())
            handle.alive = False  # the socket is done; the process's end follows
            self._expect_end(handle)

    def _on_batch(self, handle: WorkerHandle, batch: protocol.Batch) -> None:
        if not handle.assigned or handle.assigned[0].seq != batch.seq:
            # Workers answer in order, so this chunk was never recorded: its sending
            # thread was interrupted in between (``_send_chunk``). Nobody waits for it.
            _close_descriptors(*handle.reader.take_fds(batch.fd_count))
            return
        if batch.partial:  # the outcomes up to an item that raised; the chunk goes on
            self._settle(handle, handle.assigned[0], batch)
            return
        wire = handle.assigned.popleft()
        self._chunk_times.add(batch.elapsed)
        self._settle(handle, wire, batch)
        retiring = handle.tasks_left is not None and handle.tasks_left <= 0
        if retiring and not handle.assigned and not handle.stop_sent:
            self._send_stop(handle)  # max_tasks_per_worker reached: retire it

    def _settle(self, handle: WorkerHandle, wire: WireChunk, batch: protocol.Batch) -> None:
        """Deliver the results of a chunk's items not delivered yet (those in ``batch``),
        or queue them again one at a time."""
        begin, count = wire.done, len(wire.chunk.items)
        fds = handle.reader.take_fds(batch.fd_count)
        if wire.garbled:  # an earlier part could not be read: where this one begins is unknown
            _close_descriptors(*fds)
            if not batch.partial:
                self._pending.extendleft(
                    reversed([wire.split(i, i + 1) for i in range(begin, count)])
                )
            return
        decoding = now_ns() if batch.times is not None else 0
        try:
            values, packed_errors = batch.decode(fds)
        except Exception as exc:
            if batch.partial:
                wire.garbled = True  # run its items again when its batch is in
            elif count - begin > 1:
                # One result spoils the whole batch's pickle: run the items again one at
                # a time, so that only the task whose result cannot come back fails.
                self._pending.extendleft(
                    reversed([wire.split(i, i + 1) for i in range(begin, count)])
                )
            else:
                add_note(exc, "the results came back from the worker but could not be unpickled")
                self._fail(wire.split(begin, count), exc, worker=handle.label)
            return
        end = begin + len(values) if batch.partial else count
        wire.done = end
        chunk = wire.chunk if begin == 0 and end == count else wire.chunk.split(begin, end)
        if packed_errors and packed_errors[0][0] == protocol.WHOLE_CHUNK:  # never partial
            error = unpack_error(packed_errors[0][1])
            if len(chunk.items) == 1:
                self._fail(wire, error, worker=handle.label)
            else:  # find out which items cannot be rebuilt in the worker: one at a time
                self._pending.extendleft(
                    reversed([wire.split(i, i + 1) for i in range(len(chunk.items))])
                )
            return
        errors = {position: unpack_error(packed) for position, packed in packed_errors}
        pickled = None if packed_errors else batch.standalone_pickle()  # for a checkpoint
        result = ResultBatch(
            chunk, values, errors, batch.elapsed, worker=handle.label, pickled=pickled
        )
        if batch.times is not None and chunk.trace is not None:
            shift = handle.clock_offset_ns
            received, run, ran, returned = batch.times
            result.times = (received + shift, run + shift, ran + shift, returned + shift)
            handle.busy_since_ns = returned + shift  # when it went on to its next chunk
            track = chunk.trace.caller_track("supervisor")
            chunk.trace.span(track, "unpickle", "serialize", decoding, now_ns())
        self._deliver(result)

    def _on_exit(self, handle: WorkerHandle) -> None:
        if handle.alive:
            self._read(handle)  # anything it sent before it died
        if handle.alive:
            self._poller.unregister(handle.sock.fileno())
            handle.alive = False
        self._poller.unregister(handle.process.ended_fd)
        handle.sock.close()
        # Descriptors of a frame never finished.
        _close_descriptors(*handle.reader.take_all_fds())
        # A worker told to stop, holding nothing, ended as asked: its exit code tells
        # nothing, and waiting for it (the zygote reports it, a process away) would
        # only hold up the pool's end.
        as_asked = handle.stop_sent and not handle.assigned
        exitcode = handle.process.exitcode
        if exitcode is None and not as_asked:  # it has ended; the code may be a moment behind
            handle.process.join(1.0)
            exitcode = handle.process.exitcode
        self._handles[handle.slot] = None
        with contextlib.suppress(ValueError):
            handle.process.close()

        if not handle.ready and not as_asked:
            self._pending.extendleft(reversed(handle.assigned))
            handle.assigned.clear()
            self._on_start_failure(handle, exitcode)
        elif handle.assigned:
            self._recover(handle, exitcode)
        if self._broken is None and self._needs_worker():
            self._start_worker(handle.slot)

    def _on_start_failure(self, handle: WorkerHandle, exitcode: int | None) -> None:
        self._init_failures += 1
        position = self._slot_view[handle.slot * protocol.SLOT_FIELDS + protocol.SLOT_POSITION]
        in_initializer = position == protocol.POSITION_INITIALIZING
        when = "while running the initializer" if in_initializer else "before it was ready for work"
        cause = handle.init_error or WorkerCrashed(
            f"{handle.label} {describe_exit(exitcode)} {when}"
        )
        if self._init_failures >= max(2, self._spec.workers):
            if handle.init_error is not None:
                what = "the initializer failed in"
            elif in_initializer:
                what = "the initializer ended"
            else:
                what = "workers could not start in"
            message = f"{what} {self._init_failures} worker processes in a row: {cause!r}"
            # A signal came from outside (the OOM killer, a service manager stopping the
            # whole group): running the main module again is not what failed.
            signalled = exitcode is not None and exitcode < 0
            if handle.init_error is None and not in_initializer and not signalled:
                message += _main_module_hint(self._launcher.method)
            self._break(errors.BrokenPool(message), cause)

    def _recover(self, handle: WorkerHandle, exitcode: int | None) -> None:
        """A worker died holding chunks: blame its current item, send the rest again.

        The items of its chunk whose outcomes came back already (``WireChunk.done``)
        are settled; the others before the culprit run again.
        """
        started_seq = self._slot_view[handle.slot * protocol.SLOT_FIELDS + protocol.SLOT_SEQ]
        running = self._running_item(handle)
        head, *rest = handle.assigned
        handle.assigned.clear()
        again: list[WireChunk] = list(rest)
        done, count = head.done, len(head.chunk.items)
        culprit: int | None = None
        if started_seq != head.seq:
            again.insert(0, head)  # it never started the chunk
        elif handle.kill_reason is not None:
            culprit = handle.kill_reason.position
        elif running is not None:
            culprit = running[0]
        elif count - done == 1 and not head.garbled:
            culprit = done
        returning = culprit == protocol.POSITION_RETURNING  # it was sending outcomes back
        if returning:
            culprit = done if count - done == 1 and not head.garbled else None
        if culprit is not None and culprit < done:  # it ended that item, then was killed
            culprit = None
            again.insert(0, head.split(done, count))
        elif culprit is None and started_seq == head.seq:
            # Several items, none known to be running: try each alone.
            again[:0] = [head.split(i, i + 1) for i in range(done, count)]
        if culprit is not None:
            again[:0] = [
                piece
                for piece in (head.split(done, culprit), head.split(culprit + 1, count))
                if piece.chunk.items
            ]
        self._pending.extendleft(reversed(again))
        if culprit is None:
            if started_seq == head.seq and head.chunk.trace is not None:
                self._trace_fault(
                    handle,
                    head,
                    None,
                    f"{handle.label} {describe_exit(exitcode)} while running one of "
                    f"{count} tasks; they run again one at a time to find which",
                )
            return
        what = head.chunk.task_name(culprit)
        error: BaseException
        if handle.kill_reason is not None:
            ran = "ended, but pickling what it returned or raised took" if returning else "ran"
            error = TaskTimeout(
                f"{what} {ran} longer than task_timeout={handle.kill_reason.limit:g}s; "
                f"{handle.label} was killed and replaced"
            )
        else:
            doing = f"pickling what {what} returned or raised" if returning else f"running {what}"
            error = WorkerCrashed(f"{handle.label} {describe_exit(exitcode)} while {doing}")
            error.pid = handle.pid  # type: ignore[attr-defined]
            error.exitcode = exitcode  # type: ignore[attr-defined]
        if head.chunk.trace is not None:
            self._trace_fault(handle, head, culprit, str(error))
        self._fail(head.split(culprit, culprit + 1), error, worker=handle.label, retryable=True)

    def _trace_fault(
        self, handle: WorkerHandle, head: WireChunk, culprit: int | None, reason: str
    ) -> None:
        """Put the chunk a worker died running (or was killed for) on the call's timeline."""
        chunk = head.chunk
        assert chunk.trace is not None
        chunk.trace.fault(
            chunk.trace.worker_track(handle.label, TRACE_GROUP),
            "timeout" if handle.kill_reason is not None else "crashed",
            (chunk.start, len(chunk.items), chunk.attempt),
            handle.busy_since_ns or handle.started_ns,
            now_ns(),
            None if culprit is None else chunk.start + culprit,
            reason,
        )

    # --- deadlines --------------------------------------------------------------------

    def _running_item(self, handle: WorkerHandle) -> tuple[int, int] | None:
        """(position, start time in ns) of the item a tracked chunk runs, if one runs;
        the position is ``POSITION_RETURNING`` while outcomes are pickled."""
        base = handle.slot * protocol.SLOT_FIELDS
        view = self._slot_view
        head = handle.assigned[0] if handle.assigned else None
        for _ in range(3):  # the worker may move on while we read: read until stable
            seq = view[base + protocol.SLOT_SEQ]
            position = view[base + protocol.SLOT_POSITION]
            started = view[base + protocol.SLOT_STARTED_NS]
            if view[base + protocol.SLOT_POSITION] == position and view[base] == seq:
                break
        if head is None or seq != head.seq or head.chunk.task_timeout is None:
            return None
        if position < 0 and position != protocol.POSITION_RETURNING:
            return None
        return position, started

    def _check_overruns(self) -> None:
        now = time.monotonic_ns()
        for handle in self._handles:
            if handle is None or not handle.assigned or handle.kill_reason is not None:
                continue
            limit = handle.assigned[0].chunk.task_timeout
            running = self._running_item(handle)
            if limit is None or running is None:
                continue
            position, started = running
            if now - started > limit * 1e9:
                handle.kill_reason = KillReason(position, limit)
                self._kill(handle)

    # --- ends of workers ---------------------------------------------------------------

    def _kill(self, handle: WorkerHandle) -> None:
        """Kill a worker, once; its end is then awaited like any other."""
        if not handle.killed:
            handle.killed = True
            handle.process.kill()
            self._expect_end(handle)

    def _expect_end(self, handle: WorkerHandle) -> None:
        """The worker is ending: where only waitpid can confirm it, ask it soon."""
        if not handle.process.needs_polling:
            return
        soon = time.monotonic() + lifeline.RECHECK_FIRST
        if handle.recheck_at is None or handle.recheck_at > soon:
            handle.recheck_every = lifeline.RECHECK_FIRST
            handle.recheck_at = soon

    def _confirmed_ends(self, exits: list[WorkerHandle]) -> list[WorkerHandle]:
        """Workers due a waitpid check that have indeed ended (``lifeline.py``).

        One not yet ended is asked again later, a little less often each time, down to
        the beat that every such worker is asked on.
        """
        ended: list[WorkerHandle] = []
        now = time.monotonic()
        for handle in self._handles:
            if handle is None or handle.recheck_at is None or handle.recheck_at > now:
                continue
            if handle in exits:
                continue
            if handle.process.exitcode is not None:
                handle.recheck_at = None
                ended.append(handle)
            else:
                handle.recheck_every = min(2 * handle.recheck_every, lifeline.RECHECK_MAX)
                handle.recheck_at = lifeline.next_check(now, handle.recheck_every)
        return ended

    # --- stopping ---------------------------------------------------------------------

    def _needs_worker(self) -> bool:
        if not self._stopping:
            return True
        with self._lock:
            has_inbox = bool(self._inbox)
        return has_inbox or bool(self._pending) or self._busy()

    def _restaff(self) -> None:
        """Start a worker again if work is queued and none is left to take it.

        During shutdown a worker that dies is not replaced when nothing else is queued;
        a retry of its task, submitted once its failure is handed over, then needs one.
        """
        if not self._pending or self._broken is not None:
            return
        if any(handle is not None and handle.accepts_work for handle in self._handles):
            return
        for slot, handle in enumerate(self._handles):
            if handle is None:
                self._start_worker(slot)
                return

    def _busy(self) -> bool:
        return any(h is not None and h.assigned for h in self._handles)

    def _keep_going(self) -> bool:
        if not self._stopping:
            return True
        with self._lock:
            if self._inbox or self._pending or self._busy():
                return True
            if self._deliveries:
                # Handing these over may submit retries of failed tasks, which are still
                # the work submitted before shutdown: look again once they are handed over.
                self._wake()
                return True
            self._accepting = False
        for handle in self._handles:
            if handle is not None and not handle.stop_sent:
                self._retire(handle)
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_GRACE
        elif not self._stop_killed and time.monotonic() >= self._stop_deadline:
            self._stop_killed = True  # once: from now on, wait for them to end
            for handle in self._handles:
                if handle is not None:
                    self._kill(handle)
        return any(h is not None for h in self._handles)

    def _retire(self, handle: WorkerHandle) -> None:
        """Stop a worker, the pool having no more work for it.

        One still starting, with no initializer to let finish, has done nothing a
        program could see: it is killed rather than left to finish starting only to
        read STOP (when a call's work is done before the last worker is up, that
        start-up is what the caller would wait for). A timeline still shows the start
        it began, up to now.
        """
        if not handle.ready and self._initializer_payload is None:
            handle.stop_sent = True
            self._kill(handle)
            if self._worker_started is not None:  # a timeline shows its start, cut short
                self._worker_started(handle.label, handle.started_ns, now_ns())
        else:
            self._send_stop(handle)

    def _send_stop(self, handle: WorkerHandle) -> None:
        handle.stop_sent = True
        handle.writer.write(*protocol.encode_stop())
        self._watch_writes(handle)

    def _terminate_now(self) -> None:
        with self._lock:
            self._accepting = False
            self._pending.extend(self._inbox)
            self._inbox.clear()
        error = cancelled("the pool was terminated before this task finished")
        for handle in self._handles:
            if handle is None:
                continue
            self._kill(handle)
            for wire in handle.assigned:
                self._fail(wire, one_for_each_call(error))
            handle.assigned.clear()
        for wire in self._pending:
            self._fail(wire, one_for_each_call(error))
        self._pending.clear()

    def _break(self, cause: BaseException, origin: BaseException | None = None) -> None:
        """The pool cannot go on: fail everything queued and refuse new work.

        The first break stands: a worker started before it may fail to start after
        it, and every call, before and after, must fail in the same words.
        """
        error = cause if is_broken_pool(cause) else errors.BrokenPool(f"the pool broke: {cause!r}")
        error.__cause__ = origin or (cause if error is not cause else None)
        with self._lock:
            if self._broken is None:
                self._broken = error
            error = self._broken
            self._accepting = False
            self._stopping = True
            self._pending.extend(self._inbox)
            self._inbox.clear()
        for wire in self._pending:
            self._fail(wire, one_for_each_call(error))
        self._pending.clear()

    def _close(self) -> None:
        """Leave nothing behind: no process, no descriptor, no waiting sink."""
        for handle in self._handles:
            if handle is None:
                continue
            self._kill(handle)
            handle.process.join(5)
            for wire in handle.assigned:  # a broken pool's work fails as its queue's did
                self._fail(
                    wire,
                    cancelled("the pool stopped before this task finished")
                    if self._broken is None
                    else one_for_each_call(self._broken),
                )
            handle.sock.close()
            # Descriptors of a frame never finished.
            _close_descriptors(*handle.reader.take_all_fds())
            with contextlib.suppress(ValueError):  # its pidfd, its exit pipe
                handle.process.close()
        with self._lock:
            self._accepting = False
            leftover = list(self._pending) + list(self._inbox)
            self._pending.clear()
            self._inbox.clear()
        for wire in leftover:
            broken = self._broken
            self._fail(
                wire,
                cancelled("the pool stopped before this task")
                if broken is None
                else one_for_each_call(broken),
            )
        self._slots.close()
        exit_hook.forget(self)

    # --- handing results over -----------------------------------------------------------

    def _deliver(self, batch: ResultBatch) -> None:
        self._deliveries.append(batch)

    def _fail(
        self,
        wire: WireChunk,
        error: BaseException,
        *,
        worker: str = "",
        retryable: bool = False,
    ) -> None:
        batch = ResultBatch.failed(wire.chunk, error, retryable=retryable)
        batch.worker = worker
        self._deliver(batch)


def _close_descriptors(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _main_module_hint(method: str) -> str:
    """Why workers of ``method``, which run the main module first, may fail to start."""
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if method not in ("spawn", "forkserver") or script is None:
        return ""
    if not os.path.isfile(script):  # python - < script.py: the main module is "<stdin>"
        return (
            f". Workers started by {method!r} run the main module first, and {script} is "
            "no file they can run: leave start_method to its default"
        )
    return (
        f". Workers started by {method!r} first run the main module ({script}) under "
        "another name: code that starts a pool must sit under "
        "'if __name__ == \"__main__\":' (the workers' own error output says what failed)"
    )
