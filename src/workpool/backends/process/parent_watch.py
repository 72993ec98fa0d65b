"""A worker never outlives the pool's process, however that process dies.

Two ways, chosen by ``_platform.py``:

- Linux: the kernel kills a worker whose parent dies (``PR_SET_PDEATHSIG``, for the
  pool's own children), and a thread in every worker waits for its socket's other end
  to close (``POLLRDHUP``: it notices the close without reading, so it never competes
  with the worker's main loop for data).
- portable (macOS, other POSIX, ``WORKPOOL_PORTABLE=1``): the pool's process makes
  one pipe and keeps its write end; nothing is ever written to it. Each worker gets
  the read end and a thread that waits for it to become readable, which happens only
  at end of file: when every write end is closed, that is, when the parent is gone,
  whatever killed it (SIGKILL included)::

      pool's process                                  each worker
      write end (held, never written) ---- pipe ----> read end: readable = EOF
                                                      -> os._exit(1)

  Only the pool's process may hold the write end, or its death goes unseen: the pipe
  is close-on-exec, so no program it starts inherits it, and a fork hook closes it in
  every process forked from it by Python (``os.fork``, multiprocessing's ``fork``).
  (A child forked by C code that bypasses Python's fork hooks keeps a copy; its
  workers then end when that child does.)

Where neither is available (a worker started without the read end, on a system
without ``POLLRDHUP``), the worker asks ``getppid`` twice a second.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import threading
import time

from workpool import _platform
from workpool.backends.process import prctl
from workpool.backends.process.poller import wait_readable
from workpool.backends.process.unix_sockets import Socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["WatchEnd", "read_end", "watch_parent"]

_lock = threading.Lock()
_pipe: tuple[int, int] | None = None  # (read end, write end) in the pool's process


class WatchEnd:
    """The read end of the parent-death pipe, as it travels to a worker.

    A forked worker inherits the descriptor as it is; pickled for a spawned worker or
    a fork server's, it is duplicated into the new process (as multiprocessing
    passes descriptors).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        from multiprocessing.reduction import DupFd

        return (_attach, (DupFd(self.fd),))


def _attach(duplicated: Any) -> WatchEnd:
    return WatchEnd(duplicated.detach())


def read_end() -> int:
    """In the pool's process: the pipe's read end to hand to workers; -1 on Linux's path.

    The pipe is made on first need and kept for the life of the process.
    """
    global _pipe
    if _platform.USE_RDHUP:
        return -1
    with _lock:
        if _pipe is None:
            _pipe = os.pipe()  # both ends close-on-exec
        return _pipe[0]


def _forget_in_child() -> None:
    """A process forked from the pool's must not hold the write end (see above)."""
    global _pipe, _lock
    if _pipe is not None:
        with contextlib.suppress(OSError):
            os.close(_pipe[1])
    # The read end stays open: a worker forked by multiprocessing watches it.
    _pipe = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def watch_parent(parent_pid: int, sock: Socket, watch: WatchEnd | None) -> None:
    """In a worker: end this process when the pool's process ends, even mid-task.

    ``parent_pid`` is the pid the worker should see as its parent, or 0 when its
    parent is a fork server or the zygote, whose death says nothing about the pool's.
    """
    if parent_pid and prctl.die_with_parent() and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect
    if watch is not None and watch.fd >= 0:
        fd = watch.fd

        def wait() -> None:
            _wait_for_eof(fd)

    elif _platform.USE_RDHUP:
        fd = sock.fileno()

        def wait() -> None:
            _watch_socket(fd)

    else:
        first_parent = parent_pid or os.getppid()

        def wait() -> None:
            while os.getppid() == first_parent:
                time.sleep(0.5)
            os._exit(1)

    # Not threading.Thread: its start() waits until the new thread runs, which in a
    # worker just forked took 1-45 ms here (its pages are copied on first write, and
    # its CPUs are busy starting the pool), every time on the way to the first task.
    # Nothing waits for the watch to begin: whenever it looks, a parent gone is seen.
    _thread.start_new_thread(wait, ())


def _wait_for_eof(fd: int) -> None:
    """End this process once pipe ``fd`` is readable: nobody writes, so that is EOF."""
    wait_readable(fd, None)
    os._exit(1)


def _watch_socket(fd: int) -> None:
    """End this process when the peer of socket ``fd`` goes; return if ``fd`` is closed here.

    ``poll`` reports a descriptor closed under it (``POLLNVAL``) at once, every time:
    that is the worker ending on its own, and the watch ends too rather than spin.
    """
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    while True:
        for _, events in poller.poll():
            if events & select.POLLNVAL:
                return
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                os._exit(1)
