"""Unix stream socket pairs, and descriptors sent over them, without the ``socket`` module.

The engine talks to its zygote and to each worker over a socket pair, and sends file
descriptors (shared memory, exit pipes) beside its messages. All of that is in
``_socket``, the C module that ``socket`` wraps. The wrapper adds nothing the engine
uses, but importing it builds four enums of the platform's constants: 4-6 ms of CPU
on the 2-CPU machine we measure on, as much as the rest of the engine's start-up
imports together, paid by every program's first process pool and by each worker
started as a fresh interpreter. So the engine uses ``_socket`` through this module.

A ``socket.socket`` is a ``Socket`` too (a subclass), so sockets made elsewhere, such
as the ones ``multiprocessing`` hands a worker it started, work here as they are.
Unix only, as the process engine is.
"""

from __future__ import annotations

import _socket
import struct
from collections.abc import Sequence

__all__ = [
    "MSG_CTRUNC",
    "MSG_DONTWAIT",
    "RECEIVE_FLAGS",
    "Socket",
    "ancillary_space",
    "descriptors_in",
    "from_descriptor",
    "pair",
    "recv_fds",
    "rights",
    "send_fds",
]

Socket = _socket.socket

MSG_DONTWAIT: int = _socket.MSG_DONTWAIT
# Set on a receive that brought fewer descriptors than were sent (this process had no
# free descriptor number left for the rest, which the system then closed).
MSG_CTRUNC: int = getattr(_socket, "MSG_CTRUNC", 0)
# Received descriptors are closed by exec, like every descriptor Python opens.
RECEIVE_FLAGS: int = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_FD = struct.Struct("i")


def pair() -> tuple[Socket, Socket]:
    """Two connected stream sockets, neither inherited by a program this one execs."""
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)


def from_descriptor(fd: int) -> Socket:
    """The socket whose descriptor is ``fd`` (one a process was given by number)."""
    return _socket.socket(fileno=fd)


def ancillary_space(count: int) -> int:
    """Room, in a receive's ancillary buffer, for ``count`` descriptors."""
    return _socket.CMSG_SPACE(count * _FD.size)


def rights(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    """The ancillary data that carries ``fds`` beside a message's bytes."""
    packed = struct.pack(f"{len(fds)}i", *fds)
    return [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)]


def descriptors_in(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors a receive brought, in the order they were sent."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(data) - len(data) % _FD.size  # a truncated one is no descriptor
            fds.extend(value for (value,) in _FD.iter_unpack(data[:whole]))
    return fds


def send_fds(sock: Socket, data: bytes, fds: Sequence[int]) -> int:
    """Send ``data`` with ``fds`` beside its first bytes; how many bytes were sent."""
    return sock.sendmsg([data], rights(fds))


def recv_fds(sock: Socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """Up to ``size`` bytes, and the descriptors (``max_fds`` at most) that came with them."""
    data, ancillary, _, _ = sock.recvmsg(size, ancillary_space(max_fds), RECEIVE_FLAGS)
    return data, descriptors_in(ancillary)
