"""Knowing for certain that a worker process has ended.

A process's usual sentinel is the read end of a pipe whose write end the process
holds: it becomes readable once every copy of that write end is closed, which is not
the same as the process having died. Any process that inherited the worker's
descriptors keeps it silent: a subprocess that a task started, or a process forked
elsewhere in the program at the instant the worker was being started. The supervisor
would then wait for ever on a dead worker, or, having killed it, go on killing it.

What no other process can keep from us:

- a *pidfd* (Linux 5.3+; not in portable mode, see ``_platform.py``): readable once
  its process has ended, whoever holds what.
  Every worker gets one where the system has them, the pool's own children and the
  zygote's workers alike; signals sent through it cannot reach a recycled pid;
- ``waitpid``, for the pool's own children (``fork``, ``spawn``, ``exec``). Without a
  pidfd the supervisor asks it about every such worker on a steady beat of
  ``RECHECK_MAX`` seconds, shared by all of them (one wake-up per beat however many
  workers there are), so that a worker that dies on its own while another process
  holds its descriptors is still seen; and about a worker it has reason to think is
  ending (it killed it, or its socket closed) sooner: after ``RECHECK_FIRST``, then
  less and less often until the beat.

Without pidfds (macOS, portable mode) the zygote's workers are watched through their
exit pipes, whose write ends only the zygote holds; the pool's own children
(``start_method="fork"`` or ``"spawn"``) through their multiprocessing sentinel and
waitpid as above. Every wait here blocks with a deadline; none spins.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from workpool import _platform

__all__ = [
    "RECHECK_FIRST",
    "RECHECK_MAX",
    "kill",
    "next_check",
    "open_pidfd",
    "wait_for",
]

# How soon to ask waitpid about a worker that should be ending; and how often at most
# (the beat) about any worker that only waitpid can watch.
RECHECK_FIRST = 0.005
RECHECK_MAX = 0.25


def next_check(now: float, pause: float) -> float:
    """When to ask waitpid again, ``pause`` seconds from ``now``; a full pause falls on the beat.

    The beat is every multiple of ``RECHECK_MAX`` on the monotonic clock, so that the
    checks of all workers resting on it come due together.
    """
    if pause < RECHECK_MAX:
        return now + pause
    return (now // RECHECK_MAX + 1) * RECHECK_MAX


def open_pidfd(pid: int) -> int | None:
    """A pidfd for process ``pid``, or None where the system has none (or it is gone)."""
    if not _platform.USE_PIDFD:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill(pid: int, pidfd: int | None) -> None:
    """SIGKILL, through the pidfd when there is one; a process already gone is no error."""
    with contextlib.suppress(OSError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def wait_for(exitcode: Callable[[], int | None], timeout: float | None) -> int | None:
    """Ask ``exitcode()`` (a waitpid) until it knows, pausing longer each time; None at timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = RECHECK_FIRST
    while (code := exitcode()) is None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        time.sleep(pause if left is None else min(pause, left))
        pause = min(2 * pause, RECHECK_MAX)
    return code
