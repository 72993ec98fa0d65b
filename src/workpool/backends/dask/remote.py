"""What runs on a Dask worker: each chunk in workpool's own process engine, on this node.

A Dask worker that ran user code in its own threads would die with any task that
kills its process (``os._exit``, a segfault, the OOM killer), taking every other task
on it along, and Dask would blame whichever tasks were there. Here the Dask task only
hands the chunk to a local pool of workpool worker processes, started by exec
(``backends/process/exec_launch.py``: a nanny's worker is a daemonic, threaded
process), and waits. A crash or an overrun is then what it is on one machine: that
task fails, a fresh local process takes the slot, the Dask worker never notices::

    Dask worker thread                        a local pool, lent to the session
    ------------------                        ---------------------------------
    run_chunk(task, arrays)
      session = this call's or Pool's; opened on first use, with a pool from node.py
      items = rebuilt (big arrays: the scattered copies in ``arrays``)
      local.submit(chunk) ------------------> worker processes run the items; a crash
      wait for every piece <----------------  or timeout fails one item, and the rest
    return the pieces, pickled                of the chunk comes back as other pieces

The Dask task holds its thread while its chunk runs, so the scheduler sees each node as
busy as it is and spreads the next chunks over the nodes by what they run. (A task
that left Dask's thread pool while it waited, as ``distributed.secede`` does, would get
the next chunk to the local pool sooner, but costs the node a new thread and the
scheduler a message per chunk, and makes every node look idle to the scheduler, which
then piles chunks onto some while others run dry: measured slower on coarse work.)

A session lives as long as the caller's call or ``Pool``: the caller closes it on
every worker when it is done (``close_session``). If the caller dies first, a session
left idle for ``IDLE_SECONDS`` is closed here. Its local pool then goes back to
``node.py``, which keeps it for the next session with the same settings (starting one
costs a node a tenth of a second or more), or terminates it if the session's tasks
still run there (a cancelled call).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import CancelledError
from typing import Any

from workpool.backends.dask import node
from workpool.backends.dask.node import PoolSettings
from workpool.backends.dask.payload import (
    ChunkTask,
    Piece,
    Prepickled,
    SessionInfo,
    dumps_report,
    loads_items,
    pack_error,
)
from workpool.clock import now_ns
from workpool.errors import BrokenPool, about_the_pool, add_note
from workpool.remote_errors import PackedError
from workpool.segments import share
from workpool.sharing import SharingContext
from workpool.tasks import Chunk, ResultBatch

__all__ = ["IDLE_SECONDS", "close_session", "run_chunk"]

# A session nobody used for this long is closed (its caller may be gone).
IDLE_SECONDS = 60.0
# Closed session ids remembered, so that a task arriving late does not reopen one.
_CLOSED_REMEMBERED = 4096
# The position a whole-chunk failure is reported at (the items could not be rebuilt).
WHOLE_CHUNK = -1


def _this_worker() -> tuple[Any, str, int]:
    """This Dask worker (None outside one), its address and thread count (the local
    pool's size)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        address = str(worker.address)
    except Exception:  # not inside a Dask worker (a test calling us directly)
        from workpool._cpus import usable_cpus

        return None, "this process", usable_cpus()
    return worker, address, int(worker.state.nthreads)


# The Dask workers of this process told to close their sessions when they close.
_watched: set[str] = set()
_watched_lock = threading.Lock()
_PLUGIN_NAME = "workpool-local-pools"


def _watch(worker: Any, address: str) -> None:
    """Have ``worker`` close its sessions, and stop its idle local pools, when it closes.

    A worker process that ends takes its local processes with it; but Dask workers can
    share one process (``LocalCluster(processes=False)``), which goes on without them,
    and their local processes would outlive them by up to ``IDLE_SECONDS``. So each
    worker gets a plugin whose ``teardown`` (run as the worker closes) stops them.
    """
    with _watched_lock:
        if address in _watched:
            return
        _watched.add(address)
    from distributed.diagnostics.plugin import WorkerPlugin

    class LocalPoolsGoWithTheWorker(WorkerPlugin):
        def teardown(self, worker: Any) -> None:
            _sessions.close_worker(address)
            with _watched_lock:
                _watched.discard(address)

    # Set on the worker's event loop, where it reads its plugins as it closes; with no
    # ``setup`` to run, ``plugin_add`` (which logs each plugin added) is not needed.
    plugins = worker.plugins
    worker.loop.add_callback(plugins.setdefault, _PLUGIN_NAME, LocalPoolsGoWithTheWorker())


class _NodeSharing(SharingContext):
    """Big arrays copied into this node's shared memory once, while Dask keeps them.

    A scattered array is one object in the Dask worker's memory, handed to every task
    that refers to it: it is copied into a segment for the local processes the first
    time, and the copy is dropped when Dask lets the array go (the call released it).
    """

    def __init__(self, threshold: int | None) -> None:
        super().__init__(threshold)
        self._copies: dict[int, tuple[weakref.ref[Any], Any]] = {}
        self._copies_lock = threading.Lock()

    def shared_copy(self, array: Any, key: Any = None) -> Any:
        key = array if key is None else key
        with self._copies_lock:
            entry = self._copies.get(id(key))
            if entry is not None and entry[0]() is key:
                return entry[1]
        copy = share(array)
        try:
            weakref.finalize(key, self._forget, id(key))
            reference = weakref.ref(key)
        except TypeError:  # cannot be watched: a copy per chunk, as for small arrays
            return copy
        with self._copies_lock:
            self._copies[id(key)] = (reference, copy)
        return copy

    def _forget(self, key: int) -> None:
        with self._copies_lock:
            entry = self._copies.get(key)
            if entry is not None and entry[0]() is None:
                del self._copies[key]

    def release(self) -> None:
        super().release()
        with self._copies_lock:
            self._copies.clear()


class _Session:
    """One workpool call or Pool on this Dask worker: a local pool lent to it, and more."""

    def __init__(self, info: SessionInfo, address: str, threads: int) -> None:
        self.address = address
        settings = PoolSettings(info.initializer, info.max_tasks_per_worker, max(1, threads))
        self.local = node.lend(settings, owner=address)
        self.pool = self.local.engine
        self._sharing: dict[int | None, _NodeSharing] = {}
        self.functions: dict[int, Prepickled] = {}
        self.busy = 0  # tasks running in it now
        self.idle_since = time.monotonic()
        self.spoiled = False  # its pool broke: no later session may have it

    def function(self, fn_id: int, payload: bytes, name: str) -> Prepickled:
        """The function ``fn_id``, the same object every time (so it is sent once)."""
        fn = self.functions.get(fn_id)
        if fn is None:
            fn = self.functions[fn_id] = self.local.function(payload, name)
        return fn

    def sharing(self, threshold: int | None) -> _NodeSharing:
        """How big arrays reach the local processes (one context per threshold in use)."""
        context = self._sharing.get(threshold)
        if context is None:
            context = self._sharing[threshold] = _NodeSharing(threshold)
        return context

    def close(self, *, idle: bool) -> None:
        """Give the local pool back; ``idle``: none of this session's tasks runs there now.

        Then the pool is kept for the next session; otherwise it is terminated, which
        stops the tasks of a call that was cancelled while they ran.
        """
        node.give_back(self.local, clean=idle and not self.spoiled)
        for context in self._sharing.values():
            context.release()


class _Sessions:
    """Every session on this worker, and the thread that closes idle ones."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._open: dict[tuple[str, str], _Session] = {}  # by session id and worker address
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._reaper: threading.Thread | None = None

    def enter(self, info: SessionInfo) -> _Session | None:
        """The session, opened on first use and marked busy; None once it was closed.

        Each Dask worker has its own, with a local pool of its own size: workers can
        share a process (``LocalCluster(processes=False)``).
        """
        worker, address, threads = _this_worker()
        key = (info.session_id, address)
        with self._lock:
            if info.session_id in self._closed:
                return None
            session = self._open.get(key)
            opened = session is None
            if session is None:
                session = self._open[key] = _Session(info, address, threads)
                self._start_reaper()
            session.busy += 1
        if opened and worker is not None:
            _watch(worker, address)  # its local pool goes when the worker does
        return session

    def leave(self, session: _Session) -> None:
        with self._lock:
            session.busy -= 1
            session.idle_since = time.monotonic()

    def close(self, session_id: str) -> bool:
        """Close a session for good, for every worker of this process; False if it was
        not open here."""
        with self._lock:
            self._closed[session_id] = None
            if len(self._closed) > _CLOSED_REMEMBERED:
                self._closed.popitem(last=False)
            keys = [key for key in self._open if key[0] == session_id]
            # Idle: no task of it runs in the pool.
            closing = [(session, not session.busy) for session in map(self._open.pop, keys)]
            self._lock.notify_all()
        for session, idle in closing:
            session.close(idle=idle)
        return bool(closing)

    def close_worker(self, address: str) -> None:
        """The Dask worker at ``address`` is closing: stop the local pools it used."""
        with self._lock:
            keys = [key for key in self._open if key[1] == address]
            closing = [self._open.pop(key) for key in keys]
            self._lock.notify_all()
        for session in closing:
            session.close(idle=False)
        node.stop_idle(owner=address)

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name="workpool-dask-reaper", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        """Close sessions idle for IDLE_SECONDS; end when none is left."""
        while True:
            idle: list[_Session] = []
            with self._lock:
                if not self._open:
                    self._reaper = None
                    return
                now = time.monotonic()
                wait = IDLE_SECONDS
                for key, session in list(self._open.items()):
                    if session.busy:
                        continue
                    left = session.idle_since + IDLE_SECONDS - now
                    if left <= 0:  # not remembered as closed: a late task may reopen it
                        idle.append(self._open.pop(key))
                    else:
                        wait = min(wait, left)
                if not idle:
                    self._lock.wait(wait)
            for session in idle:
                session.close(idle=True)


_sessions = _Sessions()


class _Collector:
    """Receives the pieces of one chunk from the local pool; ``wait`` returns them all."""

    def __init__(self, task: ChunkTask, address: str) -> None:
        self._start = task.start
        self._address = address
        self._left = task.size
        self._pieces: list[Piece] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.broken = False  # the local pool broke while it ran this chunk

    def claim(self, chunk: Chunk) -> bool:
        return True

    def deliver(self, batch: ResultBatch) -> None:
        chunk = batch.chunk
        where = f"Dask worker {self._address}"
        if any(
            isinstance(error, BrokenPool) and about_the_pool(error)  # not a task's own
            for error in batch.errors.values()
        ):
            self.broken = True
        piece = Piece(
            offset=chunk.start - self._start,
            size=len(chunk.items),
            values=batch.values,
            errors=[(position, pack_error(error)) for position, error in batch.errors.items()],
            elapsed=batch.elapsed,
            retryable=batch.retryable,
            worker=f"{batch.worker} on {where}" if batch.worker else where,
            times=batch.times,
        )
        with self._lock:
            self._pieces.append(piece)
            self._left -= piece.size
            if self._left <= 0:
                self._done.set()

    def wait(self) -> list[Piece]:
        self._done.wait()
        return self._pieces


def _failed(task: ChunkTask, error: BaseException, *, retryable: bool, address: str) -> bytes:
    """Every item of the task failed with ``error``."""
    packed: PackedError = pack_error(error)
    piece = Piece(
        offset=0,
        size=task.size,
        values=[None] * task.size,
        errors=[(position, packed) for position in range(task.size)],
        elapsed=0.0,
        retryable=retryable,
        worker=f"Dask worker {address}",
    )
    return dumps_report(address, [piece])


def run_chunk(task: ChunkTask, arrays: list[Any], fn_payload: bytes | None = None) -> bytes:
    """The Dask task: run one chunk in this node's local pool; its ``Report``, pickled.

    ``arrays`` are the large arrays the items refer to, which Dask delivered here from
    their scattered copies; ``fn_payload`` the pickled function, when it was large
    enough to be scattered too (else it is in ``task``).
    """
    began = now_ns()
    session = _sessions.enter(task.session)
    if session is None:
        error = CancelledError("the call was over before this chunk started")
        return _failed(task, error, retryable=False, address=_this_worker()[1])
    address = session.address
    where = f"Dask worker {address}"
    try:
        try:
            items = loads_items(task.items, arrays)
        except BaseException as exc:
            add_note(exc, f"the task's arguments could not be rebuilt on {where}")
            if task.size == 1:
                return _failed(task, exc, retryable=False, address=address)
            # Which item is it? The caller sends them again, one per task.
            whole = Piece(0, task.size, [], [(WHOLE_CHUNK, pack_error(exc))], 0.0, False, where)
            return dumps_report(address, [whole])
        recorder = None
        if task.timed:
            from workpool.backends.dask.tracing import NodeRecorder

            recorder = NodeRecorder()
        collector = _Collector(task, address)
        chunk = Chunk(
            sink=collector,
            fn=session.function(
                task.fn_id,
                task.fn_payload if fn_payload is None else fn_payload,
                task.fn_name,
            ),
            mode=task.mode,
            start=task.start,
            items=items,
            task_timeout=task.task_timeout,
            attempt=task.attempt,
            sharing=session.sharing(task.share_threshold),
            trace=recorder,
        )
        del items
        try:
            session.pool.submit(chunk)
        except BrokenPool as exc:  # its initializer fails in every process
            session.spoiled = True
            # Sent as the pool made it (about_the_pool), not as raised here.
            return _failed(task, exc.with_traceback(None), retryable=False, address=address)
        except RuntimeError:  # closed while this task arrived
            error = CancelledError("the call was over before this chunk started")
            return _failed(task, error, retryable=False, address=address)
        pieces = collector.wait()
        if collector.broken:
            session.spoiled = True
        if recorder is None:
            return dumps_report(address, pieces)
        args = {"start": task.start, "count": task.size}
        recorder.span(recorder.caller_track("tasks"), "task", "dask", began, now_ns(), args)
        return dumps_report(address, pieces, recorder.records())
    finally:
        _sessions.leave(session)


def close_session(session_id: str) -> bool:
    """Stop the session's local pool on this worker (run by the caller on every worker)."""
    return _sessions.close(session_id)
