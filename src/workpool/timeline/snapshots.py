"""A long traced call's file, rewritten as it goes: a program killed outright keeps most of it.

A traced call writes its file once, when it ends, however it ends, except when its
process dies without running another line (SIGKILL, the OOM killer, a power cut). So
once a call has run for ``FIRST_AFTER`` seconds, a thread of its own rewrites the file
as a partial trace, then again after twice as long each time (never more than
``LONGEST_WAIT`` apart)::

    call starts    1 s      2 s           4 s                     8 s       call ends
        |-----------|--------|-------------|-----------------------|-- ... --|
                  write    write         write                   write     final write

Killed at any moment, the file holds at least the first half of the call; in all, the
rewrites cost about as much as the final write, once or twice, and run beside the
call rather than in its way. A call shorter than ``FIRST_AFTER`` writes once, as
before, and starts no thread.

The thread is started by whichever thread reports a result first after the call's
first second (``Recorder.note_progress``), not with the call: a program that has run
no thread yet may still fork its zygote (``backends/process/zygote.py``). Each write
(``timeline.rewrite``) goes through ``chrome.write_trace``, which takes the
recorder's file lock and gives way to the final write, so a rewrite never lands
after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from workpool.daemons import DAEMONS

__all__ = ["FIRST_AFTER", "LONGEST_WAIT", "RUNNING", "Rewriter"]

FIRST_AFTER = 1.0
LONGEST_WAIT = 300.0
#: The ``reason`` a rewritten file gives for being partial.
RUNNING = "still running when this was written: the program ended before the call did"


class Rewriter:
    """The thread that rewrites one call's file until the call ends."""

    def __init__(self, write: Callable[[], None]) -> None:
        self._write = write
        self._ended = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="workpool-trace-rewriter", daemon=DAEMONS
        )
        self._thread.start()

    def stop(self) -> None:
        """No more rewrites; waits for one in progress (the final write would, anyway)."""
        self._ended.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        wait = FIRST_AFTER
        while not self._ended.is_set():
            try:
                self._write()
            except Exception:  # the final write meets the same trouble, and says so
                return
            if self._ended.wait(wait):
                return
            wait = min(wait * 2, LONGEST_WAIT)
