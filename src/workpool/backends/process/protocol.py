"""Everything that crosses the socket between the parent and a worker process.

Each worker owns one end of a Unix socket pair; the parent's supervisor thread owns
the other. Both directions carry *frames*: an 8-byte little-endian length, then a body
whose first byte says what the message is.

Parent to worker::

    DEFINE  fn_id, evict_id, pickled function   the function, sent once per worker
    CHUNK   seq, fn_id, mode, tracked, items     consecutive inputs to run
    STOP                                         finish queued chunks, then exit

Worker to parent::

    READY        pid                             the initializer ran; work may come
    INIT_FAILED  packed error                    the initializer raised; the worker exits
    BATCH        seq, elapsed, values, errors    one chunk's results, in item order

Beside the socket, every worker has a *slot* of three integers in memory shared with
the parent: the ``seq`` of the chunk it is running, the position of the item it is on,
and when that item started. The worker writes the seq once per chunk; it writes the
position and start time before every item only for *tracked* chunks (those with a
``task_timeout``). When a worker dies or overruns, the slot tells the supervisor which
task it was on.
"""

from __future__ import annotations

import pickle
import socket
import struct
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workpool.errors import RemoteTraceback, TaskError
from workpool.serialize import PROTOCOL, dumps_data
from workpool.tasks import CallMode

__all__ = [
    "SLOT_FIELDS",
    "Batch",
    "ChunkOrder",
    "FrameReader",
    "InitFailed",
    "PackedError",
    "Ready",
    "decode_chunk",
    "decode_from_worker",
    "encode_batch",
    "encode_chunk",
    "encode_define",
    "encode_init_failed",
    "encode_ready",
    "encode_stop",
    "pack_error",
    "recv_frame",
    "send_frame",
    "unpack_error",
]

# --- framing -------------------------------------------------------------------------

LENGTH = struct.Struct("<Q")
# Frames at least this large are sent as header + body, without joining them.
_JOIN_LIMIT = 1 << 16


def frame_parts(*parts: bytes | memoryview) -> list[bytes | memoryview]:
    """The buffers that make up one frame around ``parts``."""
    size = sum(len(p) for p in parts)
    header = LENGTH.pack(size)
    if size < _JOIN_LIMIT:
        return [header + b"".join(parts)]
    return [header, *parts]


def send_frame(sock: socket.socket, *parts: bytes | memoryview) -> None:
    """Send one frame, blocking until it is all written (worker side)."""
    for buffer in frame_parts(*parts):
        sock.sendall(buffer)


def _recv_exactly(sock: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return buffer


def recv_frame(sock: socket.socket) -> bytearray | None:
    """Receive one frame's body, blocking; ``None`` when the peer has gone (worker side)."""
    header = _recv_exactly(sock, LENGTH.size)
    if header is None:
        return None
    return _recv_exactly(sock, LENGTH.unpack(header)[0])


class FrameReader:
    """Collects frames from a socket without ever blocking (supervisor side).

    ``read()`` takes whatever the socket has now and returns the frames it completed;
    a large frame may take several calls. ``closed`` becomes True at end of file.
    """

    _RECV_SIZE = 1 << 18

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._big: bytearray | None = None  # body of a large frame being filled
        self._big_view: memoryview | None = None
        self._big_got = 0
        self.closed = False

    def read(self) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        while not self.closed:
            if self._big is not None:
                if not self._fill_big(frames):
                    break
                continue
            try:
                data = self._sock.recv(self._RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self._buffer += data
            self._split(frames)
            if len(data) < self._RECV_SIZE and self._big is None:
                break
        return frames

    def _split(self, frames: list[bytes | bytearray]) -> None:
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buffer, start)
            end = start + LENGTH.size + size
            if end <= len(buffer):
                frames.append(bytes(buffer[start + LENGTH.size : end]))
                start = end
                continue
            if size >= self._RECV_SIZE:  # receive the rest straight into its own buffer
                self._big = bytearray(size)
                self._big_view = memoryview(self._big)
                have = len(buffer) - start - LENGTH.size
                self._big_view[:have] = buffer[start + LENGTH.size :]
                self._big_got = have
                start = len(buffer)
            break
        del buffer[:start]

    def _fill_big(self, frames: list[bytes | bytearray]) -> bool:
        assert self._big is not None and self._big_view is not None
        try:
            n = self._sock.recv_into(self._big_view[self._big_got :], 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.closed = True
            return False
        if n == 0:
            self.closed = True
            return False
        self._big_got += n
        if self._big_got == len(self._big):
            frames.append(self._big)
            self._big_view.release()
            self._big = self._big_view = None
        return True


class FrameWriter:
    """Queues frames for a socket and writes them without ever blocking (supervisor side)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._queue: deque[memoryview] = deque()
        self.broken = False

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def write(self, *parts: bytes | memoryview) -> None:
        for buffer in frame_parts(*parts):
            self._queue.append(memoryview(buffer))
        self.flush()

    def flush(self) -> None:
        """Write what the socket takes now; the rest waits for the next call."""
        queue = self._queue
        while queue and not self.broken:
            try:
                sent = self._sock.send(queue[0], socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the worker is gone; its exit is handled elsewhere
                self.broken = True
                queue.clear()
                return
            if sent == len(queue[0]):
                queue.popleft()
            else:
                queue[0] = queue[0][sent:]


# --- messages --------------------------------------------------------------------------

DEFINE = 0x46  # "F"
CHUNK = 0x43  # "C"
STOP = 0x53  # "S"
READY = 0x52  # "R"
INIT_FAILED = 0x49  # "I"
BATCH = 0x42  # "B"

_DEFINE_HEAD = struct.Struct("<Bqq")  # kind, fn_id, evict_id (-1: none)
_CHUNK_HEAD = struct.Struct("<BqqB?")  # kind, seq, fn_id, mode, tracked
_BATCH_HEAD = struct.Struct("<Bqd")  # kind, seq, elapsed seconds

# Shared slot layout: three int64 per worker.
SLOT_FIELDS = 3
SLOT_SEQ, SLOT_POSITION, SLOT_STARTED_NS = 0, 1, 2
POSITION_IDLE = -1  # the chunk is not on any item (untracked, or between items)
# The position an error carries when the chunk's items could not be unpickled at all.
WHOLE_CHUNK = -1


def encode_define(fn_id: int, payload: bytes, evict_id: int | None) -> list[bytes]:
    return [_DEFINE_HEAD.pack(DEFINE, fn_id, -1 if evict_id is None else evict_id), payload]


def encode_chunk(
    seq: int, fn_id: int, mode: CallMode, tracked: bool, payload: bytes
) -> list[bytes]:
    return [_CHUNK_HEAD.pack(CHUNK, seq, fn_id, int(mode), tracked), payload]


def encode_stop() -> list[bytes]:
    return [bytes([STOP])]


@dataclass(frozen=True, slots=True)
class ChunkOrder:
    """A chunk as the worker reads it."""

    seq: int
    fn_id: int
    mode: CallMode
    tracked: bool
    payload: memoryview


@dataclass(frozen=True, slots=True)
class DefineOrder:
    """A function to keep, as the worker reads it."""

    fn_id: int
    evict_id: int | None
    payload: memoryview


def decode_chunk(body: bytearray) -> ChunkOrder | DefineOrder | None:
    """Read a parent-to-worker frame; ``None`` means STOP."""
    kind = body[0]
    if kind == CHUNK:
        _, seq, fn_id, mode, tracked = _CHUNK_HEAD.unpack_from(body)
        return ChunkOrder(seq, fn_id, CallMode(mode), tracked, memoryview(body)[_CHUNK_HEAD.size :])
    if kind == DEFINE:
        _, fn_id, evict_id = _DEFINE_HEAD.unpack_from(body)
        return DefineOrder(
            fn_id, None if evict_id < 0 else evict_id, memoryview(body)[_DEFINE_HEAD.size :]
        )
    if kind == STOP:
        return None
    raise ValueError(f"unknown message kind {kind:#x} from the parent")


# A task's exception on its way back: the pickled exception when it pickles, and
# always its type name, message and formatted traceback.
PackedError = tuple[bytes | None, str, str, str]


def pack_error(exc: BaseException) -> PackedError:
    """Turn an exception raised in the worker into something that surely pickles."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's str() failed>"
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        exc.__traceback__ = None  # frames hold locals that may not pickle, and are in the text
        pickled: bytes | None = dumps_data(exc)
    except Exception:
        pickled = None
    return (pickled, name, message, text)


def unpack_error(packed: PackedError) -> BaseException:
    """Rebuild the worker's exception as its own type, with the worker's traceback as cause.

    An exception that could not be pickled or cannot be unpickled here arrives as a
    ``TaskError`` carrying its type name, message and traceback text.
    """
    pickled, name, message, text = packed
    exc: BaseException | None = None
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = TaskError(name, message, text)
    exc.__cause__ = RemoteTraceback(text)
    return exc


def encode_ready(pid: int) -> list[bytes]:
    return [bytes([READY]), pickle.dumps(pid, PROTOCOL)]


def encode_init_failed(error: PackedError) -> list[bytes]:
    return [bytes([INIT_FAILED]), pickle.dumps(error, PROTOCOL)]


def encode_batch(
    seq: int, elapsed: float, values: list[Any], errors: Sequence[tuple[int, PackedError]]
) -> list[bytes]:
    """A chunk's results. Values that cannot be pickled become that item's error."""
    head = _BATCH_HEAD.pack(BATCH, seq, elapsed)
    try:
        return [head, dumps_data((values, errors))]
    except Exception:
        pass
    errors = list(errors)
    values = list(values)
    for position, value in enumerate(values):
        try:
            dumps_data(value)
        except Exception as exc:
            note = f"the task's result ({type(value).__name__}) could not be pickled: {exc}"
            errors.append((position, pack_error(_with_note(exc, note))))
            values[position] = None
    return [head, dumps_data((values, errors))]


def _with_note(exc: BaseException, note: str) -> BaseException:
    from workpool.errors import add_note

    add_note(exc, note)
    return exc


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class InitFailed:
    error: PackedError


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    elapsed: float
    body: bytes | bytearray

    def decode(self) -> tuple[list[Any], list[tuple[int, PackedError]]]:
        values, errors = pickle.loads(memoryview(self.body)[_BATCH_HEAD.size :])
        return values, errors


def decode_from_worker(body: bytes | bytearray) -> Ready | InitFailed | Batch:
    kind = body[0]
    if kind == BATCH:
        _, seq, elapsed = _BATCH_HEAD.unpack_from(body)
        return Batch(seq, elapsed, body)
    if kind == READY:
        return Ready(pickle.loads(memoryview(body)[1:]))
    if kind == INIT_FAILED:
        return InitFailed(pickle.loads(memoryview(body)[1:]))
    raise ValueError(f"unknown message kind {kind:#x} from a worker")
