"""The main loop of a worker process: receive chunks, run them, send results back.

The worker is single-minded: it reads one frame at a time from its socket, keeps the
functions it is sent, runs chunks in the order they arrive, and answers each with one
batch. It never decides anything about retries or ordering; the parent does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

from workpool.backends.process import ctrl_c, prctl, protocol
from workpool.backends.process.framing import FrameReader, send_frame
from workpool.backends.process.parent_watch import WatchEnd, watch_parent
from workpool.backends.process.slots import SharedSlots
from workpool.backends.process.unix_sockets import Socket
from workpool.clock import now_ns
from workpool.remote_errors import PackedError, pack_error
from workpool.sharing import SharingContext, explain_read_only, loads_sharing
from workpool.task_forks import end_if_forked
from workpool.tasks import arguments_of, call_items

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["worker_main"]

# How long a worker that has sent its results keeps looking for its next chunk before it
# sleeps. Waking a sleeping process costs whoever wakes it tens of microseconds on a
# virtual machine (the sleeper's CPU halts, and waking it goes through the hypervisor),
# and a round trip has three such wake-ups. A caller that sends the next task within
# this time finds the worker awake: a warm round trip's p50 went from 156 µs to 82 µs
# (multiprocessing: 160 µs). It costs at most this much CPU per wait for work, and
# less where CPUs are short: between looks the worker yields its CPU to any process
# that wants it (spinning without yielding, on 2 busy CPUs, made the round trip 2.3x
# slower: the caller waited for the CPU the worker spun on).
SPIN_SECONDS = 0.0002


class _Answer:
    """Sends a chunk's outcomes back: at once up to an item that raised, if more items
    follow it (a PART), and the rest when the chunk is done (the BATCH).

    While a tracked chunk's outcomes are pickled, the slot says so, and since when
    (``protocol.POSITION_RETURNING``): pickling them may take ``task_timeout`` too, on a
    clock of its own (a call's clock stops when it returns, as on every backend).
    """

    __slots__ = (
        "_items",
        "_order",
        "_pid",
        "_received",
        "_run",
        "_sent",
        "_slot",
        "_sock",
        "_started",
    )

    def __init__(
        self,
        sock: Socket,
        order: protocol.ChunkOrder,
        slot: memoryview,
        pid: int,
        started: float,
        received: int,
    ) -> None:
        self._sock = sock
        self._order = order
        self._slot = slot
        self._pid = pid
        self._items: list[Any] = []
        self._sent = 0  # the items whose outcomes are sent
        self._started = started  # perf_counter: when the items not sent yet began
        # A timed chunk's clock readings: when the items not sent yet were received, and
        # began to run (those sent later count from when the earlier ones were sent).
        self._received = self._run = received

    def running(self, items: list[Any], started: float, run: int) -> None:
        """The items are rebuilt and run from now (``started``, ``run``)."""
        self._items = items
        self._started = started
        self._run = run

    def early(self, values: list[Any], errors: dict[int, BaseException]) -> None:
        """An item raised (``call_items``'s ``after_error``): send what is done, if the
        chunk goes on; its last item's outcome goes with the batch, at once anyway."""
        if os.getpid() != self._pid:  # a task's fork: the worker's socket is not its own
            return
        if len(values) < len(self._items):
            self.send(values, errors, partial=True)

    def send(
        self,
        values: list[Any],
        errors: dict[int, BaseException] | list[tuple[int, PackedError]],
        partial: bool = False,
    ) -> None:
        """Send the outcomes of the items from the first not sent to the last in
        ``values``; ``errors`` by position in the chunk, or packed already (relative)."""
        order, slot, sent = self._order, self._slot, self._sent
        if order.tracked:
            slot[protocol.SLOT_STARTED_NS] = time.monotonic_ns()
            slot[protocol.SLOT_POSITION] = protocol.POSITION_RETURNING
        if isinstance(errors, dict):
            if order.fd_count:  # the items came with shared memory
                for position, exc in errors.items():
                    if position >= sent:
                        explain_read_only(
                            exc,
                            arguments_of(order.mode, self._items[position]),
                            order.share_threshold,
                        )
            errors = [
                (position - sent, pack_error(exc))
                for position, exc in errors.items()
                if position >= sent
            ]
        elapsed = time.perf_counter() - self._started
        times = (self._received, self._run, now_ns()) if order.timed else None
        # Large arrays among the results go back in shared memory, writable there.
        sharing = SharingContext(order.share_threshold, writable=True)
        parts, result_fds, keep = protocol.encode_batch(
            order.seq, elapsed, values[sent:], errors, sharing, times, partial=partial
        )
        send_frame(self._sock, *parts, fds=result_fds)
        del keep, sharing
        slot[protocol.SLOT_POSITION] = protocol.POSITION_IDLE
        self._sent = len(values)
        self._started = time.perf_counter()
        if order.timed:
            self._received = self._run = now_ns()


def _run_chunk(
    fn: Callable[..., Any],
    order: protocol.ChunkOrder,
    items: list[Any],
    slot: memoryview,
    worker_pid: int,
    answer: _Answer,
) -> tuple[list[Any], dict[int, BaseException]]:
    """Run the items; on a tracked chunk, publish which item runs and since when.

    A process one of the items forked, and that returned from it, ends here.
    """
    before_each = None
    if order.tracked:

        def before_each(position: int) -> None:
            if os.getpid() != worker_pid:  # a task's fork: the worker's slot is not its own
                return
            slot[protocol.SLOT_STARTED_NS] = time.monotonic_ns()
            slot[protocol.SLOT_POSITION] = position

    values, errors, _ = call_items(
        fn,
        order.mode,
        items,
        before_each=before_each,
        after_error=answer.early,
        catch_interrupt=True,
    )
    end_if_forked(worker_pid, errors.values())
    return values, errors


def _load_function(payload: memoryview, fds: list[int]) -> Callable[..., Any]:
    """Unpickle a function (closing ``fds``, its shared memory, once mapped); if that
    fails, a stand-in that raises the reason for each task."""
    try:
        fn = loads_sharing(payload, fds)
    except BaseException as exc:
        error = exc

        def unloadable(*args: Any, **kwargs: Any) -> Any:
            raise error

        return unloadable
    return fn  # type: ignore[no-any-return]


def worker_main(
    sock: Socket,
    slots: SharedSlots,
    slot_index: int,
    parent_pid: int,
    watch: WatchEnd | None = None,
) -> None:
    """Entry point of a worker process, however it was started.

    ``parent_pid`` is the pid the worker should see as its parent, or 0 when its
    parent is a fork server or the zygote; ``watch`` the parent-death pipe's read end,
    where the portable path uses one (``parent_watch.py``).
    """
    try:
        _serve(sock, slots, slot_index, parent_pid, watch)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the pool's end of the socket is closed: it is gone, no one is left to tell
    finally:
        for stream in (sys.stdout, sys.stderr):  # the process may end with os._exit
            with contextlib.suppress(Exception):
                stream.flush()


def _serve(
    sock: Socket,
    slots: SharedSlots,
    slot_index: int,
    parent_pid: int,
    watch: WatchEnd | None,
) -> None:
    # Ctrl+C reaches the whole process group; the parent decides what stops, not us.
    ctrl_c.ignore()
    prctl.set_name("workpool-worker")  # not one more copy of the program, in ps and top
    watch_parent(parent_pid, sock, watch)
    slot = slots.slot(slot_index)
    reader = FrameReader(sock)
    pid = os.getpid()

    body = reader.receive()
    if body is None:
        return
    initializer_payload, fd_count = protocol.decode_init(body)
    fds = reader.take_fds(fd_count)
    if initializer_payload is not None:
        # Should it end this process, the parent knows that the worker got this far.
        slot[protocol.SLOT_POSITION] = protocol.POSITION_INITIALIZING
        try:
            initializer, initargs = loads_sharing(initializer_payload, fds)
            initializer(*initargs)
        except BaseException as exc:
            end_if_forked(pid, [exc])
            send_frame(sock, *protocol.encode_init_failed(pack_error(exc)))
            sock.close()
            return
        end_if_forked(pid, [])
        slot[protocol.SLOT_POSITION] = protocol.POSITION_IDLE
    send_frame(sock, *protocol.encode_ready(pid, now_ns()))

    # A function is unpickled when a chunk first needs it, not when it arrives: if
    # unpickling it kills the process, the parent then knows which task was running.
    # Until then it is kept as its pickle and the descriptors that came with it.
    functions: dict[int, Callable[..., Any] | tuple[memoryview, list[int]]] = {}
    while True:
        body = reader.receive(spin_seconds=SPIN_SECONDS)
        if body is None:  # the parent is gone
            break
        order = protocol.decode_chunk(body)
        if order is None:
            break
        if isinstance(order, protocol.DefineOrder):
            functions[order.fn_id] = (order.payload, reader.take_fds(order.fd_count))
            if order.evict_id is not None:
                evicted = functions.pop(order.evict_id, None)
                if isinstance(evicted, tuple):  # never used: its memory is not needed
                    for fd in evicted[1]:
                        os.close(fd)
            continue
        fds = reader.take_fds(order.fd_count)
        slot[protocol.SLOT_SEQ] = order.seq
        started = time.perf_counter()
        received = now_ns() if order.timed else 0
        answer = _Answer(sock, order, slot, pid, started, received)
        errors: dict[int, BaseException] | list[tuple[int, PackedError]]
        try:
            items = loads_sharing(order.payload, fds)
        except BaseException as exc:  # the arguments cannot be rebuilt here
            values: list[Any] = []
            errors = [(protocol.WHOLE_CHUNK, pack_error(exc))]
        else:
            fn = functions[order.fn_id]
            if isinstance(fn, tuple):
                loading = time.perf_counter()
                fn = functions[order.fn_id] = _load_function(*fn)
                # Once per worker, not per item: counted in, it made a first chunk of
                # tiny items look a thousand times slower, and their chunks grow slowly.
                started += time.perf_counter() - loading
            answer.running(items, started, now_ns() if order.timed else 0)
            values, errors = _run_chunk(fn, order, items, slot, pid, answer)
            del items, fn
        answer.send(values, errors)
        del values, errors, answer
    sock.close()
