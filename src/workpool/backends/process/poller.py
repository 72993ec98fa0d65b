"""Waiting until descriptors are ready: ``select.poll``, with a value kept beside each.

The engine waits on sockets, pipes and pidfds: the supervisor on all of its workers'
at once, the zygote on its control socket and its signal pipe, a parent or a worker on
one descriptor now and then. ``selectors`` does all of that, but importing it costs
1-1.5 ms of CPU beyond ``select`` itself on the machine we measure on (its abstract
classes, a named tuple made by ``exec``), paid by every program's first process pool.
``poll``, which it would use underneath, exists wherever the engine runs (Linux and
the other POSIX systems), and is enough: each waits on a handful of descriptors.

As in ``selectors``, a hang-up or an error shows as readable (the read then says what
happened), and as writable where writing was asked for. Unlike an epoll or kqueue
selector, a change made while another thread waits applies from its next wait on:
whoever makes one from another thread must wake the waiter (the supervisor's wake-up
pipe).
"""

from __future__ import annotations

import math
import select

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["READ", "WRITE", "Poller", "wait_readable"]

READ: int = select.POLLIN
WRITE: int = select.POLLOUT


class Poller:
    """Descriptors, what each waits for (``READ``, ``WRITE``) and a value of the caller's."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._registered: dict[int, tuple[int, Any]] = {}

    def register(self, fd: int, events: int, data: Any = None) -> None:
        self._poll.register(fd, events)
        self._registered[fd] = events, data

    def modify(self, fd: int, events: int, data: Any = None) -> None:
        self._poll.modify(fd, events)
        self._registered[fd] = events, data

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; done before it is closed (a closed number may come back as another)."""
        self._poll.unregister(fd)
        del self._registered[fd]

    def wait(self, timeout: float | None) -> list[tuple[Any, int]]:
        """``(data, events)`` of each descriptor ready within ``timeout`` seconds (None: ever)."""
        ready = self._poll.poll(None if timeout is None else math.ceil(max(timeout, 0) * 1e3))
        found = []
        for fd, happened in ready:
            wanted, data = self._registered[fd]
            events = (READ if happened & ~WRITE else 0) | (WRITE if happened & ~READ else 0)
            found.append((data, events & wanted))
        return found


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Block until ``fd`` is readable or ``timeout`` seconds pass; True if it is."""
    poller = Poller()
    poller.register(fd, READ)
    return bool(poller.wait(timeout))
