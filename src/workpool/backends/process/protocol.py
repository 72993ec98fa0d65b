"""Everything that crosses the socket between the parent and a worker process.

Each worker owns one end of a Unix socket pair; the parent holds the other, read by
its supervisor thread and written under the supervisor's lock. Both directions carry
frames (``framing.py``) whose body's first byte says what the message is.

Parent to worker::

    INIT    fd count, pickled (initializer,     always the first frame; may be empty
            initargs)
    DEFINE  fn_id, evict_id, fd count,          the function, sent once per worker
            pickled function
    CHUNK   seq, fn_id, mode, tracked, timed,    consecutive inputs to run
            share threshold, fd count, items
    STOP                                         finish queued chunks, then exit

Worker to parent::

    READY        pid, clock                      the initializer ran; work may come
    INIT_FAILED  packed error                    the initializer raised; the worker exits
    BATCH        seq, elapsed, fd count,         one chunk's results, in item order
                 values, errors
    TIMED_BATCH  the same, and four clock        for a *timed* chunk (its call is traced):
                 readings                        when the worker began unpickling the
                                                 items, began and finished running them,
                                                 and finished pickling the results
    PART         as BATCH                        the outcomes of the chunk's items not sent
    TIMED_PART   as TIMED_BATCH                  yet, up to one that raised, sent at once
                                                 when more items follow it; the BATCH then
                                                 holds only the items after it

A chunk's answer is thus zero or more PARTs, then a BATCH, together one outcome per
item, in item order. An exception is rare and costly anyway, so sending it at once
costs little, and it is never lost if the worker dies later in the chunk. (Values are
not sent early: that would cost every item of a tiny-task chunk a check; a worker
that dies takes them with it, and they run again.)

Clock readings are ``workpool.clock.now_ns()`` in the worker; ``clock`` in READY lets
the parent align them with its own (``clock.clock_offset``).

Beside the socket, every worker has a *slot* of three integers in memory shared with
the parent: the ``seq`` of the chunk it is running, the position of the item it is on,
and when that item started. The worker writes the seq once per chunk; it writes the
position and start time before every item only for *tracked* chunks (those with a
``task_timeout``), and ``POSITION_RETURNING`` while it pickles their outcomes, which
the deadline covers too. When a worker dies or overruns, the slot tells the supervisor
which task it was on.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence

from workpool.clock import now_ns
from workpool.errors import add_note
from workpool.int_lists import pack
from workpool.remote_errors import PackedError, pack_error
from workpool.serialize import PROTOCOL, dumps_data
from workpool.sharing import SharingContext, TooManySegments, dumps_sharing, loads_sharing
from workpool.tasks import CallMode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SLOT_FIELDS",
    "Batch",
    "ChunkOrder",
    "InitFailed",
    "Ready",
    "decode_chunk",
    "decode_from_worker",
    "decode_init",
    "encode_batch",
    "encode_chunk",
    "encode_define",
    "encode_init",
    "encode_init_failed",
    "encode_ready",
    "encode_stop",
]

DEFINE = 0x46  # "F"
CHUNK = 0x43  # "C"
STOP = 0x53  # "S"
INIT = 0x4E  # "N"
READY = 0x52  # "R"
INIT_FAILED = 0x49  # "I"
BATCH = 0x42  # "B"
TIMED_BATCH = 0x62  # "b"
PART = 0x50  # "P"
TIMED_PART = 0x70  # "p"

# kind, fn_id, evict_id (-1: none), descriptors carried (large arrays the function holds)
_DEFINE_HEAD = struct.Struct("<BqqH")
# kind, seq, fn_id, mode, tracked, timed, share threshold (-1: none), descriptors carried
_CHUNK_HEAD = struct.Struct("<BqqB??qH")
_BATCH_HEAD = struct.Struct("<BqdH")  # kind, seq, elapsed seconds, descriptors carried
# The same, then when the worker began receiving, began and ended running, and returned.
_TIMED_BATCH_HEAD = struct.Struct("<BqdHqqqq")

# Shared slot layout: three int64 per worker.
SLOT_FIELDS = 3
SLOT_SEQ, SLOT_POSITION, SLOT_STARTED_NS = 0, 1, 2
POSITION_IDLE = -1  # the chunk is not on any item (untracked, or between items)
POSITION_INITIALIZING = -2  # no chunk yet: the worker runs the pool's initializer
# A tracked chunk's outcomes are being pickled; the start time is when the pickling
# began, which has task_timeout of its own (the call's clock stopped when it returned).
POSITION_RETURNING = -3
# The position an error carries when the chunk's items could not be unpickled at all.
WHOLE_CHUNK = -1


def encode_define(fn_id: int, payload: bytes, evict_id: int | None, fd_count: int) -> list[bytes]:
    evict = -1 if evict_id is None else evict_id
    return [_DEFINE_HEAD.pack(DEFINE, fn_id, evict, fd_count), payload]


def encode_chunk(
    seq: int,
    fn_id: int,
    mode: CallMode,
    tracked: bool,
    timed: bool,
    share_threshold: int | None,
    fd_count: int,
    payload: bytes,
) -> list[bytes]:
    threshold = -1 if share_threshold is None else share_threshold
    head = _CHUNK_HEAD.pack(CHUNK, seq, fn_id, int(mode), tracked, timed, threshold, fd_count)
    return [head, payload]


def encode_stop() -> list[bytes]:
    return [bytes([STOP])]


_INIT_HEAD = struct.Struct("<BH")  # kind, descriptors carried (large arrays in initargs)


def encode_init(initializer_payload: bytes | None, fd_count: int = 0) -> list[bytes]:
    return [_INIT_HEAD.pack(INIT, fd_count), initializer_payload or b""]


def decode_init(body: bytes | bytearray) -> tuple[memoryview | None, int]:
    """The first frame a worker gets: the initializer's payload (None: no initializer),
    and how many descriptors came with it."""
    if body[0] != INIT:
        raise ValueError(f"expected INIT as the first message, got kind {body[0]:#x}")
    _, fd_count = _INIT_HEAD.unpack_from(body)
    payload = memoryview(body)[_INIT_HEAD.size :]
    return (payload if len(payload) else None), fd_count


# The messages below, as read, are plain classes with slots rather than NamedTuples:
# each NamedTuple class costs a compile when the module is imported (about 0.2 ms),
# and every program that starts a pool imports this one.


class ChunkOrder:
    """A chunk as the worker reads it."""

    __slots__ = (
        "fd_count",
        "fn_id",
        "mode",
        "payload",
        "seq",
        "share_threshold",
        "timed",
        "tracked",
    )

    def __init__(
        self,
        seq: int,
        fn_id: int,
        mode: CallMode,
        tracked: bool,
        timed: bool,
        share_threshold: int | None,
        fd_count: int,
        payload: memoryview,
    ) -> None:
        self.seq = seq
        self.fn_id = fn_id
        self.mode = mode
        self.tracked = tracked  # publish each item's start in the slot (it has a task_timeout)
        self.timed = timed  # answer with a TIMED_BATCH (its call is traced)
        self.share_threshold = share_threshold
        self.fd_count = fd_count  # shared-memory descriptors that came with it
        self.payload = payload


class DefineOrder:
    """A function to keep, as the worker reads it."""

    __slots__ = ("evict_id", "fd_count", "fn_id", "payload")

    def __init__(
        self, fn_id: int, evict_id: int | None, fd_count: int, payload: memoryview
    ) -> None:
        self.fn_id = fn_id
        self.evict_id = evict_id
        self.fd_count = fd_count  # shared-memory descriptors that came with it
        self.payload = payload


# By value, without calling the enum class (its lookup runs Python code per chunk).
_CALL_MODES = tuple(sorted(CallMode))


def decode_chunk(body: bytes | bytearray) -> ChunkOrder | DefineOrder | None:
    """Read a parent-to-worker frame; ``None`` means STOP."""
    kind = body[0]
    if kind == CHUNK:
        _, seq, fn_id, mode, tracked, timed, threshold, fds = _CHUNK_HEAD.unpack_from(body)
        return ChunkOrder(
            seq,
            fn_id,
            _CALL_MODES[mode],
            tracked,
            timed,
            None if threshold < 0 else threshold,
            fds,
            memoryview(body)[_CHUNK_HEAD.size :],
        )
    if kind == DEFINE:
        _, fn_id, evict_id, fds = _DEFINE_HEAD.unpack_from(body)
        return DefineOrder(
            fn_id, None if evict_id < 0 else evict_id, fds, memoryview(body)[_DEFINE_HEAD.size :]
        )
    if kind == STOP:
        return None
    raise ValueError(f"unknown message kind {kind:#x} from the parent")


def encode_ready(pid: int, clock_ns: int) -> list[bytes]:
    return [bytes([READY]), pickle.dumps((pid, clock_ns), PROTOCOL)]


def encode_init_failed(error: PackedError) -> list[bytes]:
    return [bytes([INIT_FAILED]), pickle.dumps(error, PROTOCOL)]


def encode_batch(
    seq: int,
    elapsed: float,
    values: list[Any],
    errors: Sequence[tuple[int, PackedError]],
    sharing: SharingContext,
    times: tuple[int, int, int] | None = None,
    *,
    partial: bool = False,
) -> tuple[list[bytes], list[int], list[Any]]:
    """A chunk's results, the descriptors to send with them, and what keeps those open.

    ``partial``: they are the outcomes up to an item that raised, and more follow (PART).

    Large arrays among the results travel in shared memory (``sharing``). A value that
    cannot be pickled becomes that item's error. ``times`` (a timed chunk's receiving,
    running and ran clock readings) makes it a TIMED_BATCH, finished by the reading
    taken once the results are pickled.
    """
    try:
        # More big results than one message carries descriptors for: the rest by value.
        payload, fds, keep = dumps_sharing((pack(values), errors), sharing, spill=True)
    except TooManySegments as exc:  # the task handed back more writable shares than that
        failed = {position for position, _ in errors}
        errors = [
            *errors,
            *(
                (position, pack_error(exc))
                for position in range(len(values))
                if position not in failed
            ),
        ]
        payload, fds, keep = dumps_sharing(([None] * len(values), errors), sharing)
    # BaseException: a result's __reduce__ is the task's code, and what it raises, even
    # SystemExit, is that task's failure, as a task's own SystemExit is (and as
    # ProcessPoolExecutor has it), not the end of the worker.
    except BaseException:
        errors = list(errors)
        values = list(values)
        for position, value in enumerate(values):
            try:
                dumps_data(value)
            except BaseException as exc:
                note = f"the task's result ({type(value).__name__}) could not be pickled: {exc}"
                add_note(exc, note)
                errors.append((position, pack_error(exc)))
                values[position] = None
        payload, fds, keep = dumps_sharing((values, errors), sharing)
    if times is not None:
        kind = TIMED_PART if partial else TIMED_BATCH
        head = _TIMED_BATCH_HEAD.pack(kind, seq, elapsed, len(fds), *times, now_ns())
        return [head, payload], fds, keep
    head = _BATCH_HEAD.pack(PART if partial else BATCH, seq, elapsed, len(fds))
    return [head, payload], fds, keep


class Ready:
    __slots__ = ("clock_ns", "pid")

    def __init__(self, pid: int, clock_ns: int) -> None:
        self.pid = pid
        self.clock_ns = clock_ns  # the worker's clock as it said so


class InitFailed:
    __slots__ = ("error",)

    def __init__(self, error: PackedError) -> None:
        self.error = error


class Batch:
    """A BATCH or a PART (``partial``), as the parent reads it."""

    __slots__ = ("body", "elapsed", "fd_count", "offset", "partial", "seq", "times")

    def __init__(
        self,
        seq: int,
        elapsed: float,
        fd_count: int,
        body: bytes | bytearray,
        times: tuple[int, int, int, int] | None = None,
        offset: int = _BATCH_HEAD.size,
        partial: bool = False,
    ) -> None:
        self.seq = seq
        self.partial = partial  # a PART: the chunk's answer goes on
        self.elapsed = elapsed
        self.fd_count = fd_count  # shared-memory descriptors that came with it
        self.body = body
        # A TIMED_BATCH's clock readings (the worker's clock), and where its pickle begins.
        self.times = times
        self.offset = offset

    def decode(self, fds: list[int]) -> tuple[list[Any], list[tuple[int, PackedError]]]:
        """The values and packed errors; takes ownership of ``fds``."""
        values, errors = loads_sharing(memoryview(self.body)[self.offset :], fds)
        return values, errors

    def standalone_pickle(self) -> memoryview | None:
        """The pickle of ``(values, errors)``, if it needs none of the descriptors."""
        if self.fd_count:
            return None
        return memoryview(self.body)[self.offset :]


def decode_from_worker(body: bytes | bytearray) -> Ready | InitFailed | Batch:
    kind = body[0]
    if kind in (BATCH, PART):
        _, seq, elapsed, fd_count = _BATCH_HEAD.unpack_from(body)
        return Batch(seq, elapsed, fd_count, body, partial=kind == PART)
    if kind in (TIMED_BATCH, TIMED_PART):
        _, seq, elapsed, fd_count, *times = _TIMED_BATCH_HEAD.unpack_from(body)
        received, run, ran, returned = times
        return Batch(
            seq,
            elapsed,
            fd_count,
            body,
            (received, run, ran, returned),
            _TIMED_BATCH_HEAD.size,
            partial=kind == TIMED_PART,
        )
    if kind == READY:
        return Ready(*pickle.loads(memoryview(body)[1:]))
    if kind == INIT_FAILED:
        return InitFailed(pickle.loads(memoryview(body)[1:]))
    raise ValueError(f"unknown message kind {kind:#x} from a worker")
