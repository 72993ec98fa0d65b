"""Whether threads started here may be daemons, for every module that starts one.

A subinterpreter refuses daemon threads, and a task on ``backend="interpreter"`` may
run a pool of its own (with its workers, watchdog, timeline or journal). Each thread
workpool would make a daemon is then an ordinary one, which whoever started it joins
all the same when its pool or call ends.
"""

from __future__ import annotations

import threading

__all__ = ["DAEMONS"]

DAEMONS: bool = getattr(threading, "_daemon_threads_allowed", lambda: True)()
