"""Frames on a socket: an 8-byte little-endian length, then the body.

Workers send and receive whole frames, blocking. The supervisor never blocks on a
socket: ``FrameReader`` collects whatever has arrived and ``FrameWriter`` writes what
the socket takes now, keeping the rest for later.
"""

from __future__ import annotations

import socket
import struct
from collections import deque

__all__ = ["FrameReader", "FrameWriter", "recv_frame", "send_frame"]

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
