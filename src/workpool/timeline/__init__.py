"""Timelines: where the time of one parallel call went, as a Chrome trace.

``trace="run.json"`` on a call creates a ``Recorder``. While the call runs, the
caller's thread, the backend's threads and (through their result batches) the workers
report what they did, each as a few integers per chunk; nothing is formatted until
the call ends::

    caller thread ──feed/pickle/deliver spans──┐
    backend threads ──pool and worker starts───┤
    workers ──receive/run/return times, carried ├──> Recorder (lists of tuples, in memory)
        back with each result batch────────────┘            │ call ends, fails or is
                                                             │ interrupted
                                          chrome.write_trace ▼ (nesting enforced,
                                                      run.json   atomic rename)

Reading a trace back (``workpool trace summary`` / ``plot``) is the job of
``reading``, ``summary`` and ``plot``; none of this package is imported unless a call
asks for a trace or the command line reads one.
"""

from __future__ import annotations

from workpool.timeline.recorder import OUTCOMES as OUTCOMES
from workpool.timeline.recorder import Recorder as Recorder
from workpool.timeline.recorder import clock_offset as clock_offset
from workpool.timeline.recorder import now_ns as now_ns

__all__ = ["OUTCOMES", "Recorder", "clock_offset", "now_ns"]
