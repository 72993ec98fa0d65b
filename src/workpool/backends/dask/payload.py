"""What crosses between the caller and a Dask worker, in both directions.

Both ways the payload is bytes that workpool pickles and unpickles itself, so Dask
only moves them: a value that cannot be rebuilt fails as that task's error, in a
thread of ours, rather than inside Dask's event loop.

Caller to worker (one Dask task per chunk)::

    ChunkTask   session (id, initializer, pool shape), function id and pickled
                function, call mode, first input position, task_timeout,
                the items pickled; a large NumPy array among them is a reference
                to a scattered copy, passed beside the task as a Dask future

Worker to caller::

    Report      the Dask worker's address, and a list of
      Piece     consecutive items of the chunk: values, packed errors, the time
                the items ran, whether a retry can help, where they ran, and for
                a traced call the times of its phases;
                for a traced call, also what the node recorded (``tracing.py``)

A chunk usually comes back as one piece; when a local worker process crashes on an
item, the process engine splits the chunk around it, and each part is a piece.
"""

from __future__ import annotations

import io
import pickle
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from workpool.byvalue import KeepsSlots
from workpool.errors import RemoteTraceback, WorkpoolError, add_note
from workpool.int_lists import pack
from workpool.remote_errors import PackedError
from workpool.remote_errors import pack_error as pack_process_error
from workpool.remote_errors import unpack_error as unpack_process_error
from workpool.segments import find_segment, is_shared_writable
from workpool.serialize import PROTOCOL, dumps_data
from workpool.tasks import CallMode

__all__ = [
    "ChunkTask",
    "Piece",
    "Prepickled",
    "Report",
    "SessionInfo",
    "WritableShareRefused",
    "dumps_items",
    "dumps_report",
    "loads_items",
    "pack_error",
    "unpack_error",
]


class SessionInfo(NamedTuple):
    """What a Dask worker needs to start the local pool of one workpool pool or call."""

    session_id: str
    initializer: bytes | None  # a pickled callable taking no arguments
    max_tasks_per_worker: int | None


class ChunkTask(NamedTuple):
    """One chunk as a Dask task's argument."""

    session: SessionInfo
    fn_id: int
    fn_payload: bytes  # empty when the function was scattered (passed beside the task)
    mode: CallMode
    start: int
    size: int  # items in the chunk
    task_timeout: float | None
    share_threshold: int | None  # arrays this big were scattered (and are shared locally)
    items: bytes
    attempt: int = 0  # earlier failed tries of these items (retries)
    timed: bool = False  # its call is traced: send the chunk's times back
    fn_name: str = "function"  # how messages name the function (tasks.function_name)


class Piece(NamedTuple):
    """Consecutive items of a chunk and their outcome, as the worker sends them back."""

    offset: int  # of the first item, within the chunk
    size: int  # items in the piece
    values: list[Any]
    errors: list[tuple[int, PackedError]]  # positions within the piece
    elapsed: float
    retryable: bool
    worker: str
    # A timed chunk's receive/run/ran/returned readings, on the Dask worker's clock.
    times: tuple[int, int, int, int] | None = None


class Report(NamedTuple):
    """What a Dask task returns: where it ran, the chunk's pieces, and for a traced call,
    what the node recorded (``tracing.NodeRecords``)."""

    address: str
    pieces: list[Piece]
    timeline: Any = None


class Prepickled:
    """A callable that travels as the bytes it was pickled into, unopened on the way.

    The Dask worker hands it to its local process pool without unpickling it: pickling
    this object gives back the original bytes, and only the process that runs the task
    rebuilds (and imports) the real function. A function whose unpickling crashes the
    process then crashes a local worker, never the Dask worker.
    """

    __slots__ = ("__name__", "payload")

    def __init__(self, payload: bytes, name: str = "function") -> None:
        self.payload = payload
        self.__name__ = name  # the function's: messages name a task by it (Chunk.task_name)

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return (_rebuild_function, (self.payload,))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _rebuild_function(self.payload)(*args, **kwargs)


def _rebuild_function(payload: bytes) -> Any:
    """Unpickle a function where it runs; if that fails, the error says it was the function.

    Else a module the workers cannot import reads as the task's own error.
    """
    try:
        return pickle.loads(payload)
    except Exception as exc:
        add_note(
            exc,
            "workpool: the function could not be rebuilt on the Dask worker: it travels by "
            "name, so its module must be importable there (installed, or on the workers' "
            "sys.path); lambdas, closures and functions of __main__ travel by value",
        )
        raise


class WritableShareRefused(WorkpoolError, ValueError):
    """An argument is memory shared writable (``share(writable=True)``)."""


# --- items, caller side -----------------------------------------------------------


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")  # no NumPy imported: no array can exist


def dumps_items(
    items: Sequence[Any], threshold: int | None, scatter: Callable[[Any], int]
) -> bytes:
    """Pickle a chunk's items; each array of ``threshold`` bytes or more goes by reference.

    ``scatter(array)`` sends the array to the cluster (once per call, however many
    chunks hold it) and returns its index among the chunk's references. Raises
    ``WritableShareRefused`` for memory shared writable: a cluster shares no memory
    with this process, so the workers' writes could never be seen here.
    """
    buffer = io.BytesIO()
    by_reference = _ByReference(_numpy(), threshold, scatter)
    try:
        _ItemPickler(buffer, by_reference).dump(items)
    except WritableShareRefused:
        raise
    except Exception:  # a lambda, a closure, something of ``__main__``: cloudpickle
        buffer = io.BytesIO()
        _cloud_item_pickler(buffer, by_reference).dump(items)
    return buffer.getvalue()


class _ByReference:
    """Decides how an object among the items is pickled: refused, by reference, or as usual.

    A plain object, not a closure inside a pickler class made per call: a class is
    always in a reference cycle, which would keep the scattered arrays alive until the
    garbage collector ran, rather than until the call releases them.
    """

    def __init__(self, numpy: Any, threshold: int | None, scatter: Callable[[Any], int]):
        self._numpy = numpy
        self._threshold = threshold
        self._scatter = scatter

    def reduce(self, obj: Any) -> Any:
        """A reduction for ``obj``, or NotImplemented to pickle it as usual."""
        if is_shared_writable(obj):
            raise WritableShareRefused(
                "an argument is memory shared with share(writable=True), which Dask "
                "workers cannot write into: a cluster shares no memory with this "
                "process. Pass a plain array (it is sent once per call) and return "
                "what the tasks compute instead."
            )
        numpy, threshold = self._numpy, self._threshold
        if (
            numpy is not None
            and threshold is not None
            and isinstance(obj, numpy.ndarray)
            and obj.nbytes >= max(threshold, 1)
            and not obj.dtype.hasobject
        ):
            return (_scattered, (self._scatter(obj),))
        if numpy is not None and isinstance(obj, numpy.ndarray) and _shared_read_only(obj):
            # A copy, which pickles as usual (it is in no segment), made read-only where
            # it arrives: process workers could not write into it either.
            return (_read_only, (obj.copy(order="K"),))
        return NotImplemented


def _shared_read_only(array: Any) -> bool:
    """Is ``array`` over memory that ``share()`` made read-only for the workers?"""
    found = find_segment(array)
    return found is not None and not found[0].shared_writable


def _read_only(array: Any) -> Any:
    array.flags.writeable = False
    return array


class _DefinedInMain(Exception):
    """A class or function of ``__main__`` is among the items: it must go by value."""


class _ItemPickler(pickle.Pickler):
    """The standard pickler, but for what only cloudpickle can carry to a worker.

    Plain pickle refers to a class or function of ``__main__`` (a script's, a
    notebook's) by name, and pickles it without complaint; a Dask worker's ``__main__``
    is another program, where that name does not exist. Meeting one, it gives up, and
    ``dumps_items`` pickles the items again with cloudpickle, which sends it by value.
    """

    def __init__(self, file: io.BytesIO, by_reference: _ByReference) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._by_reference = by_reference

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            raise _DefinedInMain(obj.__qualname__)
        return self._by_reference.reduce(obj)


_CloudItemPickler: Any = None


def _cloud_item_pickler(file: io.BytesIO, by_reference: _ByReference) -> Any:
    """A cloudpickle pickler (for lambdas among the items) with the same references."""
    global _CloudItemPickler
    if _CloudItemPickler is None:
        import cloudpickle

        class CloudItemPickler(KeepsSlots, cloudpickle.Pickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO, by_reference: _ByReference) -> None:
                super().__init__(file, protocol=PROTOCOL)
                self._by_reference = by_reference

            def reducer_override(self, obj: Any) -> Any:
                reduced = self._by_reference.reduce(obj)
                if reduced is NotImplemented:
                    return super().reducer_override(obj)
                return reduced

        _CloudItemPickler = CloudItemPickler
    return _CloudItemPickler(file, by_reference)


# --- items, worker side -----------------------------------------------------------


class _Arrays(threading.local):
    current: Sequence[Any] = ()


_arrays = _Arrays()


def _scattered(index: int) -> Any:
    """Stands, in a pickle, for the array the task received as its ``index``-th future."""
    return _arrays.current[index]


def loads_items(payload: bytes, arrays: Sequence[Any]) -> list[Any]:
    """Rebuild a chunk's items; references point into ``arrays``, the scattered data."""
    _arrays.current = arrays
    try:
        items: list[Any] = pickle.loads(payload)
    finally:
        _arrays.current = ()
    return items


# --- results ------------------------------------------------------------------------


def pack_error(exc: BaseException) -> PackedError:
    """A task's exception, ready to travel on to the caller.

    The exception came from a local worker process with that process's traceback as
    text in its ``__cause__`` (a ``RemoteTraceback``): that text goes on, rather than
    the Dask worker's own frames, which only show the hand-over.
    """
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        return pack_process_error(exc, cause.traceback_text)
    if exc.__traceback__ is None:  # made by the engine (a crash, a timeout): no task traceback
        if cause is not None:
            # What the engine's error stands for (a BrokenPool's failing initializer)
            # goes along, packed in turn: pickle keeps an exception's attributes, not
            # its __cause__. A copy carries it, not the local pool's own error.
            carrier = type(exc).__new__(type(exc), *exc.args)
            carrier.args = exc.args
            carrier.__dict__.update(getattr(exc, "__dict__", {}))
            carrier.__dict__[_CAUSE] = pack_error(cause)
            return pack_process_error(carrier, "")
        return pack_process_error(exc, "")
    return pack_process_error(exc)


# The attribute that carries an engine error's cause to the caller (see pack_error).
_CAUSE = "_workpool_packed_cause"


def unpack_error(packed: PackedError) -> BaseException:
    """The caller's copy of a packed error; its worker traceback, if any, as its cause.

    An error the engine made (no traceback of a task) has as its cause what it stands
    for, if anything: a ``BrokenPool``'s failing initializer, as on a local pool.
    """
    exc = unpack_process_error(packed)
    carried = getattr(exc, "__dict__", {}).pop(_CAUSE, None)
    if carried is not None:
        exc.__cause__ = unpack_error(carried)
    elif not packed[3]:  # raised by the engine, not by the task: no traceback to show
        exc.__cause__ = None
    return exc


def dumps_report(address: str, pieces: list[Piece], timeline: Any = None) -> bytes:
    """Pickle a ``Report``; a value that will not pickle becomes its item's error."""
    try:
        packed = [piece._replace(values=pack(piece.values)) for piece in pieces]
        return dumps_data(Report(address, packed, timeline))
    except Exception:
        pass
    mended = []
    for piece in pieces:
        values = list(piece.values)
        errors = list(piece.errors)
        for position, value in enumerate(values):
            try:
                dumps_data(value)
            except Exception as exc:
                errors.append((position, pack_error(exc)))
                values[position] = None
        mended.append(piece._replace(values=values, errors=errors))
    return dumps_data(Report(address, mended, timeline))
