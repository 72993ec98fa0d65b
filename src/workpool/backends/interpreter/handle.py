"""One subinterpreter as the pool holds it: created, fed chunks, closed.

An ``InterpreterHandle`` owns a subinterpreter (``concurrent.interpreters``, Python
3.14+), a *loop thread* that enters it once and stays inside, running ``worker.serve``,
and two pipes to that loop. The worker thread that created it sends a chunk and reads
the reply; nothing else touches it.

Starting one: the loop thread hands the interpreter the worker module's compiled code,
the parent's ``sys.path`` (so functions pickled by reference import the same modules),
its recursion limit (a program that raised it for deep recursion gets it there too, as
a process worker forked from it does) and its pipe ends, then runs the boot script
below. The first request runs the initializer.
"""

from __future__ import annotations

import contextlib
import importlib
import marshal
import os
import pickle
import sys
import threading
from collections import OrderedDict

from workpool.backends.base import InitializerFailed
from workpool.backends.interpreter import worker as wire
from workpool.daemons import DAEMONS
from workpool.remote_errors import unpack_error
from workpool.serialize import FunctionRef

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.threaded import TaskClock

__all__ = ["InterpreterHandle", "ItemsNotRebuilt", "LoopStopped", "ResultsNotRebuilt"]

# Functions an interpreter keeps rebuilt; the least recently used is dropped beyond this.
FUNCTIONS_PER_INTERPRETER = 256

# Run in the new interpreter's __main__: make the worker module's code a module of its
# own (not imported by name: see worker.py), then serve until told to stop.
_BOOT = """\
def _workpool_serve(code, origin, path, recursion_limit, rfd, wfd, times):
    import marshal, sys
    sys.path[:] = path
    sys.setrecursionlimit(recursion_limit)
    worker = type(sys)("_workpool_interpreter_worker")
    worker.__file__ = origin
    sys.modules[worker.__name__] = worker
    exec(marshal.loads(code), worker.__dict__)
    worker.serve(rfd, wfd, times)
_workpool_serve(*_workpool_boot)
"""

_worker_code_lock = threading.Lock()
_worker_code: bytes | None = None


def _compiled_worker() -> bytes:
    """The worker module's code, compiled once per process and marshalled for interpreters."""
    global _worker_code
    with _worker_code_lock:
        if _worker_code is None:
            origin = wire.__file__
            with open(origin, encoding="utf-8") as source:
                _worker_code = marshal.dumps(compile(source.read(), origin, "exec"))
        return _worker_code


def _interpreters() -> Any:
    """Python 3.14's ``concurrent.interpreters``.

    Looked up when an interpreter is made, not at import: this package imports on every
    Python (``worker.py``'s numbers are checked everywhere), while ``_options`` refuses
    backend="interpreter" where the module is missing; and mypy checks the package as
    Python 3.10, which has no such module.
    """
    return importlib.import_module("concurrent.interpreters")


class LoopStopped(Exception):
    """The loop inside the subinterpreter has ended; the message says how."""


class ItemsNotRebuilt(Exception):
    """The chunk's items could not be unpickled in the subinterpreter; ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class ResultsNotRebuilt(Exception):
    """The chunk's results came back but could not be unpickled here; ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class InterpreterHandle:
    """A subinterpreter serving chunks. Not thread-safe: one worker thread uses it.

    Creating it starts the interpreter and runs the initializer there
    (``init_payload``: the pickled ``(initializer, initargs)``, or empty); it raises
    ``InitializerFailed`` if the initializer does, ``LoopStopped`` if the interpreter
    could not be booted.
    """

    def __init__(self, thread_name: str, init_payload: bytes) -> None:
        self._interp: Any = None
        self._to_loop: int | None = None
        self._from_loop: int | None = None
        self._thread: threading.Thread | None = None
        self._defined: OrderedDict[int, None] = OrderedDict()
        # Where the loop writes a timed task's times (worker.TIMES). Kept until the
        # interpreter is closed: the loop holds a view of it.
        self._times = bytearray(wire.TIMES.size)
        self.label = "a new subinterpreter"
        self.loop_error: BaseException | None = None
        self.stopped = False  # the loop has ended: this interpreter can run nothing more
        try:
            self._interp = _interpreters().create()
            self.label = f"interpreter {self._interp.id}"
            inner_read, self._to_loop = os.pipe()
            self._from_loop, inner_write = os.pipe()
            self._thread = threading.Thread(
                target=self._live_inside,
                args=(inner_read, inner_write),
                name=f"{thread_name}-loop",
                daemon=DAEMONS,  # not in a subinterpreter: a task's own interpreter pool
            )
            self._thread.start()
            self._write(bytes([wire.INIT]), init_payload)
            reply = self._receive()
            if reply[0] == wire.FAILED:
                raise InitializerFailed(unpack_error(pickle.loads(memoryview(reply)[1:])))
        except BaseException:
            self.close()
            raise

    def _live_inside(self, inner_read: int, inner_write: int) -> None:
        """The loop thread: boot the worker module in the interpreter, then serve."""
        path = tuple(entry for entry in sys.path if isinstance(entry, str))
        try:
            self._interp.prepare_main(
                _workpool_boot=(
                    _compiled_worker(),
                    wire.__file__,
                    path,
                    sys.getrecursionlimit(),
                    inner_read,
                    inner_write,
                    memoryview(self._times),
                )
            )
            self._interp.exec(_BOOT)
        except BaseException as exc:
            self.loop_error = exc
        finally:
            # The loop's pipe ends: closing them is what tells the worker thread it is gone.
            for fd in (inner_read, inner_write):
                with contextlib.suppress(OSError):  # a task may have closed it already
                    os.close(fd)

    def run(
        self,
        fn_ref: FunctionRef,
        mode: int,
        items: bytes,
        clock: TaskClock | None = None,
    ) -> tuple[list[Any], dict[int, BaseException], float]:
        """Run one chunk: its values, its errors by position, and the seconds it took there.

        ``items`` is the pickled list of items. ``clock``, given for a timed chunk, is
        started when its task starts running and stopped when its call returns, with
        the times the interpreter read then (see ``worker.TIMES``).
        Raises ``ItemsNotRebuilt``, ``ResultsNotRebuilt`` or ``LoopStopped``.
        """
        fn_payload = b""
        evict_id = -1
        if fn_ref.fn_id in self._defined:
            self._defined.move_to_end(fn_ref.fn_id)
        else:
            fn_payload = fn_ref.payload
            self._defined[fn_ref.fn_id] = None
            if len(self._defined) > FUNCTIONS_PER_INTERPRETER:
                evict_id, _ = self._defined.popitem(last=False)
        tracked = clock is not None
        head = wire.CHUNK_HEAD.pack(
            wire.CHUNK, fn_ref.fn_id, evict_id, mode, tracked, len(fn_payload)
        )
        self._write(head, fn_payload, items)
        reply = self._receive()
        if reply[0] == wire.STARTED and clock is not None:
            clock.start(wire.TIMES.unpack_from(self._times)[0], self._task_ended)
            reply = self._receive()
        if reply[0] == wire.FINISHED and clock is not None:
            clock.stop(self._task_ended())  # what remains is sending the outcome back
            reply = self._receive()
        if reply[0] == wire.FAILED:
            raise ItemsNotRebuilt(unpack_error(pickle.loads(memoryview(reply)[1:])))
        _, elapsed = wire.BATCH_HEAD.unpack_from(reply)
        try:
            values, packed = pickle.loads(memoryview(reply)[wire.BATCH_HEAD.size :])
        except Exception as exc:
            raise ResultsNotRebuilt(exc) from exc
        errors = {position: unpack_error(error) for position, error in packed}
        return values, errors, elapsed

    def _task_ended(self) -> float | None:
        """When the timed task running here returned (``time.monotonic``); None until then.

        Any thread may ask: it reads what the loop wrote, never the pipe.
        """
        ended: float = wire.ENDED.unpack_from(self._times, wire.ENDED_OFFSET)[0]
        return ended or None

    def _receive(self) -> bytearray:
        assert self._from_loop is not None
        body = wire.read_frame(self._from_loop)
        if body is None:
            raise LoopStopped(self._why_stopped())
        return body

    def _write(self, *parts: bytes) -> None:
        assert self._to_loop is not None
        try:
            wire.write_frame(self._to_loop, *parts)
        except BrokenPipeError:
            raise LoopStopped(self._why_stopped()) from None

    def _why_stopped(self) -> str:
        self.stopped = True
        if self._thread is not None:
            self._thread.join()  # it has closed its pipe ends: it is on its way out
        if self.loop_error is None:
            return f"the loop in {self.label} stopped"
        return f"the loop in {self.label} stopped: {self.loop_error}"

    def close(self) -> None:
        """Stop the loop, wait for its thread and destroy the interpreter. Idempotent.

        Blocks while the loop is inside a task: call it once the last reply is in.
        """
        if self._to_loop is not None:
            with contextlib.suppress(OSError):  # the loop may be gone already
                wire.write_frame(self._to_loop, bytes([wire.STOP]))
            os.close(self._to_loop)
            self._to_loop = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._from_loop is not None:
            os.close(self._from_loop)
            self._from_loop = None
        if self._interp is not None:
            interp, self._interp = self._interp, None
            interp.close()
