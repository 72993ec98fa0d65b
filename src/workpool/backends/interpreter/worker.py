"""The loop that runs inside each subinterpreter, and the frames it trades with the pool.

This file leads two lives. The pool imports it as ``workpool.backends.interpreter.worker``
for the frame helpers and message kinds (``handle.py`` is the pool's end of the pipes).
Each subinterpreter receives its compiled code and runs it as a module of its own:
importing it by name there would first run ``workpool/__init__`` and all it imports,
about 130 ms for every new interpreter. So at module level it imports only what a bare
interpreter has almost at hand; what it needs only when something fails
(``pack_error``, cloudpickle, ``stop_iteration_failure``) is imported then.

One request, then one reply, over two pipes (frames: an 8-byte length, then the body,
whose first byte says what it is)::

    pool                                              loop in the subinterpreter
    INIT   pickled (initializer, initargs) or empty -->  run the initializer
                                                    <--  READY, or FAILED + packed error
    CHUNK  fn_id, evict_id, mode, tracked, fn size  -->  keep the function (sent once per
           [pickled function], pickled items             interpreter), unpickle the items
                                                    <--  STARTED (tracked chunks only)
                                                    <--  FINISHED (tracked: items have run)
                                                    <--  BATCH elapsed + pickled (values,
                                                         [(position, packed error)]), or FAILED
                                                         + packed error: items not unpicklable
    STOP, or end of file                            -->  return

The times of a tracked chunk's task are also written, as the loop reads ``time.monotonic``
(one clock for every interpreter of the process), into ``TIMES``: 16 bytes of the pool's
memory that the loop was given at boot. The pool's watchdog reads there whether a task
past its deadline had in fact ended, without waiting for the worker thread to read the
FINISHED frame, which on a loaded machine may be long after.
"""

from __future__ import annotations

import os
import pickle
import struct
import time

# ``typing`` alone would add about 6 ms to every interpreter's start; annotations are
# not evaluated at run time, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["read_frame", "serve", "write_frame"]

INIT = 0x4E  # "N"
CHUNK = 0x43  # "C"
STOP = 0x53  # "S"
READY = 0x52  # "R"
STARTED = 0x54  # "T"
FINISHED = 0x45  # "E"
BATCH = 0x42  # "B"
FAILED = 0x46  # "F"

# The calling conventions, by the values of ``workpool.tasks.CallMode`` (which this file
# cannot import: see the module docstring).
ONE, STAR, CALL = 0, 1, 2

PROTOCOL = pickle.HIGHEST_PROTOCOL
LENGTH = struct.Struct("<Q")
CHUNK_HEAD = struct.Struct("<BqqBBQ")  # kind, fn_id, evict_id (-1: none), mode, tracked, fn size
BATCH_HEAD = struct.Struct("<Bd")  # kind, seconds spent unpickling and running the items
TIMES = struct.Struct("<dd")  # when the task began and ended (0.0: not yet), time.monotonic
# The end alone, at ``ENDED_OFFSET``. ``pack_into`` zeroes all the bytes it is about to
# write before writing them, so the start, which the pool reads on STARTED, must not be
# written again while the pool may be reading it: it would see 0.0 for an instant.
ENDED = struct.Struct("<d")
ENDED_OFFSET = 8
# Below this size a frame goes out in one write, header and body joined.
_JOIN_LIMIT = 1 << 16


def write_frame(fd: int, *parts: bytes | bytearray | memoryview) -> None:
    """Write one frame made of ``parts``, blocking until all of it is written."""
    size = sum(len(part) for part in parts)
    header = LENGTH.pack(size)
    buffers = [header + b"".join(parts)] if size < _JOIN_LIMIT else [header, *parts]
    for buffer in buffers:
        view = memoryview(buffer)
        while view:
            view = view[os.write(fd, view) :]


def read_frame(fd: int) -> bytearray | None:
    """Read one frame's body, blocking; ``None`` at end of file."""
    header = _read_exactly(fd, LENGTH.size)
    if header is None:
        return None
    return _read_exactly(fd, LENGTH.unpack(header)[0])


def _read_exactly(fd: int, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            return None
        got += count
    return buffer


# --- inside the subinterpreter ---------------------------------------------------------


def serve(rfd: int, wfd: int, times: memoryview) -> None:
    """Answer the pool's requests on ``rfd`` through ``wfd`` until STOP or end of file.

    ``times`` is where a tracked task's times go (``TIMES``).
    """
    functions: dict[int, Callable[..., Any]] = {}
    while True:
        body = read_frame(rfd)
        if body is None or body[0] == STOP:
            return
        if body[0] == INIT:
            write_frame(wfd, _initialize(memoryview(body)[1:]))
        elif body[0] == CHUNK:
            _run_chunk(body, functions, wfd, times)
        else:
            raise ValueError(f"unknown request kind {body[0]:#x} from the pool")
        del body


def _initialize(payload: memoryview) -> bytes:
    if payload:
        try:
            initializer, initargs = pickle.loads(payload)
            initializer(*initargs)
        except BaseException as exc:
            return bytes([FAILED]) + pickle.dumps(_pack_error(exc), PROTOCOL)
    return bytes([READY])


def _run_chunk(
    body: bytearray, functions: dict[int, Callable[..., Any]], wfd: int, times: memoryview
) -> None:
    _, fn_id, evict_id, mode, tracked, fn_size = CHUNK_HEAD.unpack_from(body)
    view = memoryview(body)[CHUNK_HEAD.size :]
    if fn_size:
        functions[fn_id] = _load_function(view[:fn_size])
    if evict_id >= 0:
        functions.pop(evict_id, None)
    started = time.perf_counter()
    try:
        items = pickle.loads(view[fn_size:])
    except BaseException as exc:  # the arguments cannot be rebuilt here
        write_frame(wfd, bytes([FAILED]), pickle.dumps(_pack_error(exc), PROTOCOL))
        return
    if tracked:
        began = time.monotonic()
        TIMES.pack_into(times, 0, began, 0.0)
        write_frame(wfd, bytes([STARTED]))
    values, errors = _call(functions[fn_id], mode, items)
    if tracked:  # the task's clock stops: sending its outcome back is not its time
        ENDED.pack_into(times, ENDED_OFFSET, time.monotonic())
        write_frame(wfd, bytes([FINISHED]))
    elapsed = time.perf_counter() - started
    del items
    write_frame(wfd, BATCH_HEAD.pack(BATCH, elapsed), _pickle_results(values, errors))


def _load_function(payload: memoryview) -> Callable[..., Any]:
    """Unpickle a function; if that fails, a stand-in that raises the reason for each task."""
    try:
        fn: Callable[..., Any] = pickle.loads(payload)
    except BaseException as exc:
        if isinstance(exc, (ImportError, AttributeError)):  # its module, or its name there
            from workpool.errors import add_note

            add_note(
                exc,
                "workpool: the function could not be rebuilt in the subinterpreter: it "
                "travels by name, so its module must be importable there (from sys.path); "
                "lambdas, closures and functions of __main__ travel by value",
            )
        error = exc
        origin = exc.__traceback__

        def unloadable(*args: Any, **kwargs: Any) -> Any:
            # Every task raises this one object: each raise starts again from where
            # the unpickling failed, or the traceback would grow by a raise per task.
            raise error.with_traceback(origin)

        return unloadable
    return fn


def _call(
    fn: Callable[..., Any], mode: int, items: list[Any]
) -> tuple[list[Any], dict[int, BaseException]]:
    """Run ``fn`` over ``items``: the values, and the exception of each item that failed.

    The same loop as ``workpool.tasks.call_items``, which cannot be imported here
    cheaply. ``KeyboardInterrupt`` is a task's own failure like any other: a real one
    is only ever raised in the main interpreter's main thread.
    """
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    append = values.append
    if mode == ONE:
        for item in items:
            try:
                append(fn(item))
            except BaseException as exc:
                errors[len(values)] = exc
                append(None)
    elif mode == STAR:
        for item in items:
            try:
                append(fn(*item))
            except BaseException as exc:
                errors[len(values)] = exc
                append(None)
    else:
        for args, kwargs in items:
            try:
                append(fn(*args, **kwargs))
            except BaseException as exc:
                errors[len(values)] = exc
                append(None)
    for position, error in errors.items():
        if isinstance(error, StopIteration):  # rare: only then is the conversion imported
            from workpool.tasks import stop_iteration_failure

            errors[position] = stop_iteration_failure(error)
    return values, errors


def _pickle_results(values: list[Any], errors: dict[int, BaseException]) -> bytes:
    """Values and packed errors as one payload; a value that will not pickle fails its task."""
    # One object raised by several tasks (a function that could not be rebuilt raises the
    # same for each) is packed once: packing clears its traceback, which the others need.
    by_object: dict[int, Any] = {}
    packed = []
    for position, exc in errors.items():
        if id(exc) not in by_object:
            by_object[id(exc)] = _pack_error(exc)
        packed.append((position, by_object[id(exc)]))
    from workpool.int_lists import pack

    # BaseException: what a result's __reduce__ raises, even SystemExit, is its task's
    # failure, as the process worker has it.
    try:
        return pickle.dumps((pack(values), packed), PROTOCOL)
    except BaseException:
        pass
    from workpool.serialize import dumps_data  # cloudpickle, for lambdas and the like

    try:
        return dumps_data((values, packed))
    except BaseException:
        pass
    from workpool.errors import add_note

    values = list(values)
    for position, value in enumerate(values):
        try:
            dumps_data(value)
        except BaseException as exc:
            add_note(exc, f"the task's result ({type(value).__name__}) could not be pickled: {exc}")
            packed.append((position, _pack_error(exc)))
            values[position] = None
    return dumps_data((values, packed))


def _pack_error(exc: BaseException) -> Any:
    from workpool.remote_errors import pack_error

    return pack_error(exc)
