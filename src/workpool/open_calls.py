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

from collections.abc import Generator

from workpool.exit_lists import ATEXIT, ExitList

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["close_at_exit"]


def close_at_exit(results: Generator[Any, None, None]) -> None:
    """Close ``results`` when the program exits, unless it is finished or collected first."""
    _open.add(results)


def _close_everything(still_open: list[Generator[Any, None, None]]) -> None:
    for results in still_open:
        try:
            results.close()
        except ValueError:  # another thread is reading it at this very moment: leave it
            continue


_open = ExitList(_close_everything, ATEXIT)
