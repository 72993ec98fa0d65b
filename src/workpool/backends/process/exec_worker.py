"""The first code a worker started by exec runs (see ``exec_launch.py``).

It reads what the launcher wrote into its preparation pipe, makes the interpreter look
like the parent's (``sys.path``, working directory, ``sys.argv``, environment:
``preload.take_place``), and becomes an ordinary worker.
"""

from __future__ import annotations

import os
import signal

__all__ = ["main"]


def _read_all(fd: int) -> bytes:
    parts = []
    while part := os.read(fd, 1 << 16):
        parts.append(part)
    os.close(fd)
    return b"".join(parts)


def main(prep_fd: int) -> None:
    """Run the worker whose descriptors and settings wait in pipe ``prep_fd``; then exit."""
    # Ctrl+C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import pickle

    prep = pickle.loads(_read_all(prep_fd))
    from workpool.backends.process.preload import take_place

    take_place(prep["place"])
    slots_fd, slots_count = prep["slots"]
    # The descriptors came in inheritable; a program this worker runs must not keep
    # them (an inherited exit pipe would hide the worker's own end).
    for fd in (prep["socket"], slots_fd, prep["exit_pipe"], prep["watch"]):
        if fd >= 0:
            os.set_inheritable(fd, False)

    from workpool.backends.process.parent_watch import WatchEnd
    from workpool.backends.process.slots import SharedSlots
    from workpool.backends.process.unix_sockets import from_descriptor
    from workpool.backends.process.worker import worker_main

    sock = from_descriptor(prep["socket"])
    watch = WatchEnd(prep["watch"]) if prep["watch"] >= 0 else None
    worker_main(sock, SharedSlots(slots_count, fd=slots_fd), prep["slot"], prep["parent"], watch)
    # Leave without the interpreter's teardown, as a forked worker does: the work is
    # done, and a thread (the parent watch) may still be waiting.
    os._exit(0)
