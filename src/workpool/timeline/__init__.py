"""Timelines: where the time of one parallel call went, as a Chrome trace.

``trace="run.json"`` on a call creates a ``Recorder``. While the call runs, the
caller's thread, the backend's threads and (through their result batches) the workers
report what they did, each as a few integers per chunk; nothing is formatted until
the call ends::

    caller thread ──feed/pickle/deliver spans──┐
    backend threads ──pool and worker starts───┤
    workers ──receive/run/return times, carried ├──> Recorder (lists of tuples, in memory)
        back with each result batch────────────┘            │ call ends, fails or is
                                                             │ interrupted: finish()
                                          chrome.write_trace ▼ (nesting enforced,
                                                      run.json   atomic rename)

Reading a trace back (``workpool trace summary`` / ``plot``) is the job of
``reading``, ``summary`` and ``plot``; none of this package is imported unless a call
asks for a trace or the command line reads one.
"""

from __future__ import annotations

from workpool.timeline.recorder import OUTCOMES as OUTCOMES
from workpool.timeline.recorder import Recorder as Recorder

__all__ = ["OUTCOMES", "Recorder", "finish", "rewrite"]


def finish(recorder: Recorder, *, partial: bool = False, reason: str = "") -> str:
    """Write the trace file (once; later calls do nothing) and return its path.

    ``partial`` marks a call that failed or was interrupted, ``reason`` says how.
    The file is replaced atomically: a reader sees the old file or the new one,
    never half of one. Raises ``OSError`` if it cannot be written.
    """
    recorder.stop_rewriting()
    if recorder.claim_writing():
        from workpool.timeline.chrome import write_trace  # json, only now

        write_trace(recorder, partial=partial, reason=reason)
    return recorder.path


def rewrite(recorder: Recorder) -> None:
    """Write the trace of a call that still runs, as a partial one (``snapshots.py``).

    Nothing is written once the final write has been claimed. Raises ``OSError`` if
    the file cannot be written.
    """
    from workpool.timeline.chrome import write_trace
    from workpool.timeline.snapshots import RUNNING

    write_trace(recorder, partial=True, reason=RUNNING, running=True)
