"""Frames on a socket: an 8-byte little-endian length, then the body.

A frame may carry file descriptors beside its bytes (shared-memory segments, see
``workpool.sharing``): they ride, as ``SCM_RIGHTS``, with the frame's first bytes, and
arrive in the same order as the frames; the frame's body says how many are its own.

Workers send whole frames, blocking, and wait for the next frame to arrive. The parent
never blocks on a socket: ``FrameReader`` (used by the supervisor thread, and by workers
in its waiting mode) collects whatever has arrived, and ``FrameWriter`` (used under the
supervisor's lock, from its thread or a submitting one) writes what the socket takes
now, keeping the rest for when it is writable.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections import deque
from collections.abc import Sequence

from workpool.backends.process.unix_sockets import (
    MSG_CTRUNC,
    MSG_DONTWAIT,
    RECEIVE_FLAGS,
    Socket,
    ancillary_space,
    descriptors_in,
    rights,
)

__all__ = ["FrameReader", "FrameWriter", "send_frame"]

LENGTH = struct.Struct("<Q")
# Frames at least this large are sent as header + body, without joining them.
_JOIN_LIMIT = 1 << 16
# Room for the descriptors one receive can bring (Linux sends at most 253 at once).
_ANCILLARY = ancillary_space(253)
_RECEIVE_NOW_FLAGS = MSG_DONTWAIT | RECEIVE_FLAGS
# Queued after the descriptors of a receive that brought fewer than were sent: the
# frame they came with has no more, and must not take the next frame's.
_CUT_SHORT = -1


def frame_parts(*parts: bytes | memoryview) -> list[bytes | memoryview]:
    """The buffers that make up one frame around ``parts``."""
    size = sum(len(p) for p in parts)
    header = LENGTH.pack(size)
    if size < _JOIN_LIMIT:
        return [header + b"".join(parts)]
    return [header, *parts]


def send_frame(sock: Socket, *parts: bytes | memoryview, fds: Sequence[int] = ()) -> None:
    """Send one frame, with ``fds`` beside it, blocking until it is all written."""
    buffers = frame_parts(*parts)
    first = memoryview(buffers[0])
    if fds:
        sent = sock.sendmsg([first], rights(fds))
        first = first[sent:]
    sock.sendall(first)
    for buffer in buffers[1:]:
        sock.sendall(buffer)


class FrameReader:
    """Collects frames from a socket into a kept buffer.

    ``read()`` takes whatever the socket has now, without blocking, and returns the
    frames it completed; a large frame may take several calls (the supervisor thread's
    way). ``receive()`` returns the next frame, waiting for it (a worker's way): one
    receive brings a small frame whole, and the frames that came with it wait for the
    next calls. Descriptors that arrive are queued in ``fds``, in order; whoever
    decodes a frame takes as many as it says it carries (``take_fds``). Those of one
    frame arrive together, in one receive; if this process had no room for all of
    them, the frame gets fewer, never another frame's. ``closed`` becomes True at end
    of file.
    """

    _RECV_SIZE = 1 << 18

    def __init__(self, sock: Socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._big: bytearray | None = None  # body of a large frame being filled
        self._big_view: memoryview | None = None
        self._big_got = 0
        # Received into a buffer kept for the purpose: asking recv for a large new
        # bytes object costs more than the system call itself for small messages. An
        # anonymous mapping rather than a bytearray, which would write all its 64
        # pages at once: the system gives a page on its first use, so a reader of
        # small messages only ever touches the first few (each first touch is a page
        # fault, several microseconds on a virtual machine).
        self._scratch_view = memoryview(mmap.mmap(-1, self._RECV_SIZE))
        self.fds: deque[int] = deque()
        self.closed = False
        self._received: deque[bytes | bytearray] = deque()  # complete, not yet returned

    def take_fds(self, count: int) -> list[int]:
        """The next frame's ``count`` descriptors (fewer if fewer arrived with it)."""
        taken: list[int] = []
        while len(taken) < count and self.fds:
            fd = self.fds.popleft()
            if fd == _CUT_SHORT:  # the rest of this frame's never arrived
                break
            taken.append(fd)
        return taken

    def take_all_fds(self) -> list[int]:
        """Every descriptor that arrived and is not taken yet (to be closed)."""
        taken = [fd for fd in self.fds if fd != _CUT_SHORT]
        self.fds.clear()
        return taken

    def _queue_fds(self, ancillary: list[tuple[int, int, bytes]], flags: int) -> None:
        self.fds.extend(descriptors_in(ancillary))
        if flags & MSG_CTRUNC:
            self.fds.append(_CUT_SHORT)

    def receive(self, *, spin_seconds: float = 0.0) -> bytes | bytearray | None:
        """The next frame, waiting until it is whole; None once the peer has gone.

        ``spin_seconds``: look for it without sleeping for that long first, so that a
        frame sent meanwhile finds this process awake (see ``worker.SPIN_SECONDS``).
        """
        if spin_seconds and not self._received:
            give_up = time.perf_counter() + spin_seconds
            while not self._received and not self.closed and time.perf_counter() < give_up:
                self._received.extend(self.read())
                os.sched_yield()  # a CPU wanted by another process is not kept from it
        while not self._received:
            if self.closed:
                return None
            self._received.extend(self.read(wait=True))
        return self._received.popleft()

    def read(self, *, wait: bool = False) -> list[bytes | bytearray]:
        """The frames completed by what has arrived; ``wait``: until there is one."""
        frames: list[bytes | bytearray] = []
        while not self.closed:
            flags = RECEIVE_FLAGS if wait and not frames else _RECEIVE_NOW_FLAGS
            if self._big is not None:
                if not self._fill_big(frames, flags):
                    break
                continue
            try:
                received, ancillary, got, _ = self._sock.recvmsg_into(
                    [self._scratch_view], _ANCILLARY, flags
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if ancillary or got & MSG_CTRUNC:
                self._queue_fds(ancillary, got)
            if not received:
                self.closed = True
                break
            self._buffer += self._scratch_view[:received]
            self._split(frames)
            if received < self._RECV_SIZE and self._big is None:
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

    def _fill_big(self, frames: list[bytes | bytearray], flags: int) -> bool:
        assert self._big is not None and self._big_view is not None
        try:
            n, ancillary, got, _ = self._sock.recvmsg_into(
                [self._big_view[self._big_got :]], _ANCILLARY, flags
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.closed = True
            return False
        self._queue_fds(ancillary, got)
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
    """Queues frames for a socket and writes them without ever blocking (parent side).

    Not thread-safe: its callers hold the supervisor's lock.
    """

    def __init__(self, sock: Socket) -> None:
        self._sock = sock
        # Buffers to write, each with the descriptors to send with its first byte.
        self._queue: deque[tuple[memoryview, Sequence[int]]] = deque()
        self.broken = False

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def write(self, *parts: bytes | memoryview, fds: Sequence[int] = ()) -> None:
        buffers = frame_parts(*parts)
        # One extend: a frame is queued whole or not at all, even if Ctrl+C interrupts
        # the submitting thread that writes it.
        self._queue.extend(
            [
                (memoryview(buffer), fds if index == 0 else ())
                for index, buffer in enumerate(buffers)
            ]
        )
        self.flush()

    def flush(self) -> None:
        """Write what the socket takes now; the rest waits for the next call.

        A buffer leaves the queue before it is sent, not after: a ``KeyboardInterrupt``
        (raised in the submitting thread as soon as the system call returns, when Ctrl+C
        came during it) then cannot make the same bytes go out twice.
        """
        queue = self._queue
        while queue and not self.broken:
            buffer, fds = queue.popleft()
            try:
                if fds:
                    sent = self._sock.sendmsg([buffer], rights(fds), MSG_DONTWAIT)
                else:
                    sent = self._sock.send(buffer, MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                queue.appendleft((buffer, fds))
                return
            except OSError:  # the worker is gone; its exit is handled elsewhere
                self.broken = True
                queue.clear()
                return
            if sent < len(buffer):  # the descriptors went with the bytes already sent
                queue.appendleft((buffer[sent:], ()))
