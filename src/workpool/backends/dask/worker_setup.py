"""Run by Dask in each worker process of a local cluster that workpool starts (a preload).

Those processes share the caller's terminal, and so its process group and its stderr.

- A Ctrl+C there reaches them too, and each printed a ``KeyboardInterrupt`` traceback
  beside the caller's. Ctrl+C is the caller's to handle (it cancels the call's tasks and
  closes the cluster, which stops them), so they ignore it, as workpool's own worker
  processes do.
- A worker being closed with a heartbeat to the scheduler still on its way logs that
  heartbeat's failure, with a traceback, at ERROR: closing the worker closes its
  connections under the heartbeat. Nothing has failed (the worker was asked to stop),
  so that one message, from a worker that is closing, is dropped.
- A worker that dies of a signal (SIGSEGV in an extension module, or in the interpreter
  itself) left only the nanny's line "killed by signal 11", nothing of where. Each now
  prints every thread's Python stack to its stderr first, as ``python -X faulthandler``
  does, then dies of the same signal as before.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import threading

__all__ = ["dask_setup"]

_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"
_ENDING = frozenset({"closing", "closing_gracefully", "closed", "failed"})


def dask_setup(worker: object) -> None:
    """Dask calls this once the worker is made, on its event loop (the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _report_fatal_signals()
    logging.getLogger("distributed.worker").addFilter(_HeartbeatWhileClosing(worker))


def _report_fatal_signals() -> None:
    """Enable ``faulthandler`` on this process's stderr, unless it is on already or cannot be."""
    if faulthandler.is_enabled():  # -X faulthandler or PYTHONFAULTHANDLER: theirs stands
        return
    with contextlib.suppress(AttributeError, OSError, RuntimeError, ValueError):
        faulthandler.enable()  # fails only without a stderr that has a descriptor


class _HeartbeatWhileClosing(logging.Filter):
    """Drops the heartbeat's failure logged by ``worker`` once it is closing."""

    def __init__(self, worker: object) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_HEARTBEAT_FAILED):
            return True
        status = getattr(self._worker, "status", None)
        return getattr(status, "name", None) not in _ENDING
