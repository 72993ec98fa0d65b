"""Calls whose results are still being read when the program exits: closed before it ends.

A lazy call (``imap``, ``Pool.imap``) whose results the program stopped reading without
closing it is closed when its iterator is collected. At exit, that happens while the
interpreter tears itself down, which is too late: nothing can be imported any more
(its trace was lost, with an "Exception ignored" message) and the journal's writer
thread has stopped (the results it held were not committed). So the iterators of calls
with a checkpoint or a trace are noted here, and an exit hook closes those still open,
as ``close()`` would: what was journaled is committed, the trace is written.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Generator
from typing import Any

__all__ = ["close_at_exit"]

_open: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def close_at_exit(results: Generator[Any, None, None]) -> None:
    """Close ``results`` when the program exits, unless it is finished or collected first."""
    global _registered
    with _lock:
        _open.add(results)
        if not _registered:
            atexit.register(_close_everything)
            _registered = True


def _close_everything() -> None:
    with _lock:
        still_open = list(_open)
    for results in still_open:
        try:
            results.close()
        except ValueError:  # another thread is reading it at this very moment: leave it
            continue
