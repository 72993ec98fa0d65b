"""The process engine: a supervisor thread in the parent and one socket per worker.

How one task travels::

    caller thread                   supervisor thread                   worker process
    -------------                   -----------------                   --------------
    submit(chunk)
      WireChunk(chunk, fn_ref)
      pickle the items
      a worker idle? ---------------(under the supervisor's lock)-----> recv frame
      else inbox.append ---wake---> take inbox -> pending
                                     pick the least busy worker
                                     (DEFINE fn, once per worker)
                                     CHUNK seq, fn_id, items ----------> recv frame
                                     handle.assigned.append(wire)        run items
                                                                         (an item raised,
                                                                         more follow:
                                     read PART <------------------------ PART seq, so far)
    sink.deliver(piece) <----------- assigned[0].done += its items
                                                                         BATCH seq, the rest
                                     read BATCH <-----------------------
                                     assigned.popleft() is that chunk
    sink.deliver(batch) <----------- decode, then deliver
                                     ...
                                     pidfd readable: worker died
                                     assigned[0] was running: its item
                                     fails (WorkerCrashed / TaskTimeout),
                                     the rest of its chunks go back to
                                     pending; a new worker takes the slot

Only the supervisor thread reads the workers' sockets. Writes happen under the
supervisor's lock: from its thread, or from the submitting thread itself when a worker
has room and nothing is queued (one thread hop less for a lone task). Nobody blocks on
a socket: the supervisor waits on every socket, every worker's end (a pidfd where the
system has them, see ``lifeline.py``) and a wake-up pipe at once (``poller.py``),
reads whatever has arrived, and writes only what a socket takes, keeping the rest for
when it is writable (a worker busy sending a large result can never deadlock against
us sending it a large chunk). Each worker holds two chunks, the one it runs and the
next, so it never waits for the parent between chunks; but only the one it runs at
first, and while chunks are long and uneven, so none waits behind a long task
(``chunking.ChunkTimes``).

Because the supervisor knows which chunks each worker holds, and a shared slot tells
it which item a tracked chunk is on, a dead worker costs exactly its current task.
When the item is unknown (an untracked chunk of several items), those items are run
again one at a time, which finds the culprit without blaming the others. What a chunk
raised before its worker died is never lost, nor run again: the worker sends the
outcomes so far at once when an item raises and more follow (a PART), and only the
items after them are recovered.

This module is the submitting side: it pickles each function once and each chunk's
items in the caller's thread (``wire.py``). ``supervisor.py`` is the middle column of
the picture above, ``worker.py`` the right one, ``protocol.py`` what crosses between
them.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable

from workpool._options import PoolSpec
from workpool.backends.base import Backend
from workpool.backends.process.handle import TRACE_GROUP
from workpool.backends.process.launch import make_launcher
from workpool.backends.process.supervisor import Supervisor
from workpool.backends.process.wire import WireChunk
from workpool.chunking import PROCESS_CHUNK_SECONDS
from workpool.clock import now_ns
from workpool.errors import add_note
from workpool.serialize import (
    FunctionRef,
    FunctionRegistry,
    cannot_send,
    picklable_runs,
)
from workpool.sharing import TooManySegments, dumps_function_sharing
from workpool.tasks import Chunk, ResultBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.timeline.recorder import Recorder

__all__ = ["ProcessBackend"]


class ProcessBackend(Backend):
    """Runs chunks in worker processes; see the module docstring for the data flow."""

    name = "process"
    target_chunk_seconds = PROCESS_CHUNK_SECONDS
    trace_group = TRACE_GROUP

    def __init__(
        self,
        spec: PoolSpec,
        fn: Callable[..., Any] | None = None,
        *,
        recorder: Recorder | None = None,
    ) -> None:
        _refuse_impossible_worker_count(spec.workers)
        super().__init__(spec, recorder=recorder)
        # Large arrays a function holds reach the workers in shared memory.
        self._functions = FunctionRegistry(dumps=dumps_function_sharing)
        if fn is not None:
            # Pickled before any worker starts: if that takes cloudpickle, it is imported
            # before the zygote is forked, and every worker starts with it (the launcher
            # sees it in sys.modules). Functions of __main__ rarely need it (byvalue.py).
            self._function_ref(fn)
        launcher = make_launcher(spec.start_method)
        self.start_method = launcher.method
        self._supervisor = Supervisor(spec, launcher, _weakly(self.worker_started))

    def submit(self, chunk: Chunk) -> None:
        self._send(WireChunk(chunk, self._function_ref(chunk.fn, chunk.sink)))

    def _send(self, wire: WireChunk) -> None:
        """Pickle the items here, in the submitting thread; hand the rest to the supervisor."""
        trace = wire.chunk.trace
        began = now_ns() if trace is not None else 0
        try:
            try:
                wire.encode()
            except TooManySegments:
                count = len(wire.chunk.items)
                if count > 1:
                    self._send(wire.split(0, count // 2))  # fewer items, fewer segments each
                    self._send(wire.split(count // 2, count))
                    return
                wire.encode(spill=True)  # one item holds them: the rest go by value
        except TooManySegments as exc:  # memory shared to be written, which must stay so
            wire.chunk.sink.deliver(ResultBatch.failed(wire.chunk, exc, retryable=False))
            return
        except Exception as exc:
            self._send_picklable_part(wire, exc)
            return
        if trace is not None:
            trace.span(trace.caller_track("input"), "pickle", "serialize", began, now_ns())
        self._supervisor.submit(wire)

    def _send_picklable_part(self, wire: WireChunk, error: Exception) -> None:
        """Fail the items that cannot be pickled; send the others as usual.

        ``error`` is what pickling the whole chunk raised. When no item fails on its
        own, it is the chunk's failure, so that no piece is sent back here for ever.
        """
        chunk = wire.chunk
        runs = list(picklable_runs(chunk.items))
        if all(reason is None for _, _, reason in runs):  # the chunk fails, not an item
            add_note(error, "the task's arguments could not be sent to a worker process")
            chunk.sink.deliver(ResultBatch.failed(chunk, error, retryable=False))
            return
        for begin, end, reason in runs:
            if reason is None:
                self._send(wire.split(begin, end))
                continue
            piece = chunk.split(begin, end)
            why = _why_unsent(chunk, reason)
            piece.sink.deliver(ResultBatch.failed(piece, why, retryable=False, unsent=True))

    def _function_ref(self, fn: Callable[..., Any], call: object = None) -> FunctionRef:
        """The pickled form of ``fn`` for ``call`` (``FunctionRegistry.ref``); a TypeError
        if ``fn`` cannot be pickled."""
        try:
            return self._functions.ref(fn, call)
        except Exception as exc:
            raise cannot_send(fn, "a worker process", exc) from exc

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        self._supervisor.shutdown(wait=wait, cancel_pending=cancel_pending)

    def terminate(self) -> None:
        self._supervisor.terminate()

    @property
    def accepting(self) -> bool:
        """Whether the pool takes work now: neither shut down nor broken."""
        return self._supervisor.accepting

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return self._supervisor.worker_pids


# Worker counts up to this are taken without asking the system how many it allows.
_PLAINLY_POSSIBLE_WORKERS = 1024


def _refuse_impossible_worker_count(workers: int) -> None:
    """A ValueError if this system could never run ``workers`` processes at once.

    Such a count would otherwise fail much later, or not at all: the pool sizes its
    bookkeeping by it (a slot each), which for a billion workers is tens of gigabytes.
    """
    if workers <= _PLAINLY_POSSIBLE_WORKERS:
        return
    limits = []
    with contextlib.suppress(ValueError, OSError):
        limits.append((os.sysconf("SC_CHILD_MAX"), "processes a user may run, ulimit -u"))
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/kernel/pid_max") as file:
        limits.append((int(file.read()), "process ids, /proc/sys/kernel/pid_max"))
    known = [(limit, what) for limit, what in limits if limit > 0]  # -1: no limit
    if known and min(known)[0] < workers:
        limit, what = min(known)
        raise ValueError(
            f"workers={workers} is more worker processes than this system can run: "
            f"it allows {limit} ({what})"
        )


def _why_unsent(chunk: Chunk, reason: BaseException) -> BaseException:
    """The error of an item that cannot be pickled, as its task reports it.

    When the call had no shared memory to put its arrays in, that is the real cause:
    the item fails with the ``OSError`` that said so, the pickling error as its cause.
    """
    unavailable = chunk.sharing.unavailable if chunk.sharing is not None else None
    if unavailable is None:
        add_note(
            reason, "the task's arguments could not be pickled to send them to a worker process"
        )
        return reason
    error = OSError(*unavailable.args)
    error.__cause__ = reason
    add_note(
        error,
        "shared memory could not be made for the task's arrays, and copying them "
        f"to the worker process failed too: {reason!r}",
    )
    return error


def _weakly(method: Callable[[str, int, int], None]) -> Callable[[str, int, int], None]:
    """``method``, called through a weak reference to its object.

    The supervisor outlives nothing it is given: a bound method of the engine would make
    a cycle (engine -> supervisor -> engine), and the pool's slots and sockets would
    wait for the garbage collector instead of going when the last reference does.
    """
    target = weakref.WeakMethod(method)

    def call(label: str, began_ns: int, ready_ns: int) -> None:
        bound = target()
        if bound is not None:
            bound(label, began_ns, ready_ns)

    return call
