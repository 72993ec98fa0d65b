"""What becomes of a pool's work when the interpreter exits, on the local backends.

``concurrent.futures`` promises that the program does not exit before the work given to
an executor that was shut down is done, ``shutdown(wait=False)`` included: that call
means "finish it, without me waiting here". So a pool that was shut down finishes its
work at exit. A pool still open then is abandoned instead (process pools terminate it:
no worker outlives the program), and so is everything when the program ends on Ctrl+C
or is interrupted by one while it waits.

The process engine applies this rule in its own exit hook (``process/exit_hook.py``),
which must also run before multiprocessing's, and so does the Dask engine, whose hook
must run before Dask's thread pools stop; both end their pools with ``end_all``.
Thread workers register here.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import weakref
from typing import Protocol

__all__ = ["Endable", "end_all", "ended_by_ctrl_c", "finish_before_exit"]


class Finishable(Protocol):
    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None: ...


_finishing: weakref.WeakSet[Finishable] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


class Endable(Protocol):
    @property
    def shutting_down(self) -> bool:
        """Whether ``shutdown`` was called: the pool finishes its work, then ends."""

    def join(self) -> None: ...
    def terminate(self) -> None: ...


def end_all(pools: list[Endable]) -> None:
    """At exit: terminate the pools still open; those shut down first finish their work.

    On Ctrl+C (the one that ends the program, or one that lands meanwhile, at any point
    of this) every pool is terminated at once.
    """
    finishing: list[Endable] = []
    try:
        if not ended_by_ctrl_c():
            finishing = [pool for pool in pools if pool.shutting_down]
        for pool in pools:
            if pool not in finishing:
                pool.terminate()
        for pool in finishing:
            pool.join()
    except KeyboardInterrupt:  # what is left, the pool it interrupted included, ends now
        finishing = pools
    for pool in finishing:
        pool.terminate()  # one that has ended already: nothing happens


def ended_by_ctrl_c() -> bool:
    """Whether the program is exiting because of an uncaught ``KeyboardInterrupt``."""
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


def finish_before_exit(pool: Finishable) -> None:
    """``pool`` was shut down: at exit, wait until it has done the work it holds."""
    global _registered
    with _lock:
        _finishing.add(pool)
        if not _registered:
            atexit.register(_finish_everything)
            _registered = True


def _finish_everything() -> None:
    if ended_by_ctrl_c():
        return
    # A Ctrl+C while waiting leaves the rest: worker threads end with the process.
    with contextlib.suppress(KeyboardInterrupt):
        for pool in list(_finishing):
            pool.shutdown(wait=True, cancel_pending=False)
