"""At interpreter exit, no worker may outlive the program: every live pool is terminated.

Pools register here while their supervisor runs (``track``) and leave when it ends
(``forget``); the exit hook terminates those still registered, then runs what must
come after them (``afterwards``: the zygote is told to end).

``atexit`` runs handlers last registered first. multiprocessing registers its own the
first time it is imported: it joins every live ``multiprocessing.Process``, which would
wait for ever on idle workers started that way. So a launcher that starts workers with
multiprocessing calls ``run_before_multiprocessing()``, which registers our hook again
after multiprocessing's. Workers from the zygote are not ``Process`` objects and need
none of this.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["afterwards", "forget", "run_before_multiprocessing", "track"]


class Terminable(Protocol):
    def terminate(self) -> None: ...


_live: weakref.WeakSet[Terminable] = weakref.WeakSet()
_afterwards: list[Callable[[], None]] = []


def track(pool: Terminable) -> None:
    """Terminate ``pool`` at exit, if it is still running then."""
    _live.add(pool)


def forget(pool: Terminable) -> None:
    _live.discard(pool)


def afterwards(callback: Callable[[], None]) -> None:
    """Run ``callback`` at exit once every pool has been terminated."""
    _afterwards.append(callback)


def _terminate_everything() -> None:
    for pool in list(_live):
        pool.terminate()
    for callback in _afterwards:
        callback()


def run_before_multiprocessing() -> None:
    """Make our exit hook run before multiprocessing's (see the module docstring)."""
    import multiprocessing.util  # noqa: F401 - registers multiprocessing's own hook

    atexit.unregister(_terminate_everything)
    atexit.register(_terminate_everything)


atexit.register(_terminate_everything)
