"""Ctrl+C and the processes a pool starts: the parent's to handle, never theirs.

A terminal sends SIGINT to its whole foreground process group, the workers and helpers
too. Each of them ignores it, but only once its own code runs: a worker started by
spawn first imports the program again, the standard fork server first imports what it
preloads, and a Ctrl+C landing meanwhile would end it with a traceback of its own
beside the caller's. So the thread that starts one blocks SIGINT for the moment it
takes (the child inherits that mask, through fork and exec), and the child lets SIGINT
through again once it ignores it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["blocked_while_starting", "ignore"]


@contextlib.contextmanager
def blocked_while_starting() -> Iterator[None]:
    """Block SIGINT in this thread while a child is started in the block.

    The process still gets its Ctrl+C: the kernel hands it to a thread that does not
    block it (the main thread, unless it is the one starting), or holds it until the
    block ends.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def ignore() -> None:
    """In a child started by ``blocked_while_starting``: ignore SIGINT from now on.

    With a handler that does nothing, not ``SIG_IGN``: a program a task runs
    (``subprocess.run(["ffmpeg", ...])``) would inherit ``SIG_IGN`` through exec, and
    run on after a Ctrl+C that ended the pool, its worker and the program itself.
    Handlers go back to the default at exec, so it ends with the Ctrl+C, as it would
    under ``multiprocessing``. Unblocks SIGINT after, so that a task that installs a
    handler of its own gets its signals; one held back meanwhile is dropped. Call it
    from the main thread.
    """
    signal.signal(signal.SIGINT, _ignored)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _ignored(signum: int, frame: object) -> None:
    """SIGINT's handler in a worker: Ctrl+C is the parent's to handle."""
