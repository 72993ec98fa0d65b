"""A process that a task forked, come back into a worker's loop, ends there.

A task may fork (``os.fork``, or a library that does). A child meant to do work of its
own ends with ``os._exit``; one that returns from the task instead (or raises) comes
back into the loop that called the task, where it is a copy of the worker: on
processes it would answer on the worker's socket (its outcome taken for the task's,
the worker's next chunks read by two processes), on threads it would wait for chunks
that never come, a copy of the program that never ends. So it ends at once, as a
program ends when its main code returns or raises: with status 0, its ``SystemExit``'s
code, or 1 with the traceback on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

__all__ = ["end_if_forked"]


def end_if_forked(worker_pid: int, errors: Iterable[BaseException]) -> None:
    """End this process if it is not ``worker_pid`` but a fork a task made of it.

    ``errors`` are those the tasks just run raised (in the child, the child's own).
    Returns at once in the worker itself.
    """
    if os.getpid() == worker_pid:
        return
    status = 0
    try:
        for error in errors:
            status = _exit_status(error)
        print(
            f"workpool: process {os.getpid()}, forked by a task in process {worker_pid}, "
            f"returned from the task instead of exiting; it exits now, with status {status}",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # stderr closed or replaced by the task: it ends all the same
        pass
    # Not sys.exit: the worker's exit handlers and finally blocks are not this process's.
    os._exit(status)


def _exit_status(error: BaseException) -> int:
    """The status a program ends with when ``error`` escapes its main code."""
    if isinstance(error, SystemExit):
        if error.code is None:
            return 0
        if isinstance(error.code, int):
            return error.code
        print(error.code, file=sys.stderr)
        return 1
    import traceback

    traceback.print_exception(type(error), error, error.__traceback__)
    return 1
