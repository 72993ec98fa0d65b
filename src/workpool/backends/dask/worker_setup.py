"""Run by Dask in each worker process of a local cluster that workpool starts (a preload).

Those processes share the caller's terminal, and so its process group: a Ctrl+C there
reaches them too, and each printed a ``KeyboardInterrupt`` traceback beside the
caller's. Ctrl+C is the caller's to handle (it cancels the call's tasks and closes the
cluster, which stops them), so they ignore it, as workpool's own worker processes do.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["dask_setup"]


def dask_setup(worker: object) -> None:
    """Dask calls this once the worker is made, on its event loop (the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
