"""What workpool does, when the program exits, to the objects of its own still alive.

Several parts of workpool act at exit on what they left running: pools still open are
shut down, pools shut down finish their work, process pools still running are ended,
lazy calls left open are closed. Each part keeps an ``ExitList`` of its objects::

    ExitList(hook, moment)    its members held weakly: one collected needs nothing
      .add(member)            the first one registers ``hook`` with Python, once
      .discard(member)        one that has ended needs nothing at exit
      at exit                 hook(the members still alive)

Two moments are offered. ``THREADS``: among ``threading``'s exit hooks, which run once
the main thread has ended, before non-daemon threads are joined and before any ``atexit``
hook; ``concurrent.futures`` finishes its executors there, and Dask's thread pools are
still alive. ``ATEXIT``: an ``atexit`` hook (those registered last run first).

A child forked from this process (``os.fork``, or multiprocessing's fork start method)
inherits the hooks and copies of the lists, but the pools on them are not the child's:
their threads did not come along, and their workers belong to the parent. Waiting for
them would never end; ending them would end the parent's workers. So a child starts with
every list empty, and its hooks act only on what it adds itself.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal

    Moment = Literal["threads", "atexit"]

__all__ = ["ATEXIT", "THREADS", "ExitList"]

THREADS: Moment = "threads"
ATEXIT: Moment = "atexit"


class ExitList:
    """Objects that ``hook`` is called with at exit, if they are still alive then.

    What the members are is for the hook's signature to say: the class is not generic,
    as that would load ``typing`` with the engine.
    """

    def __init__(self, hook: Callable[[list[Any]], None], moment: Moment) -> None:
        self._hook = hook
        self._moment = moment
        self._members: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._registered = False
        _every_list.append(self)

    def add(self, member: object) -> None:
        with self._lock:
            self._members.add(member)
            if not self._registered:
                self._register()

    def discard(self, member: object) -> None:
        self._members.discard(member)

    def members(self) -> list[Any]:
        """The members still alive, now."""
        with self._lock:
            return list(self._members)

    def register_now(self) -> None:
        """Register the hook now (an ``atexit`` one again, to run before those since)."""
        with self._lock:
            if self._registered and self._moment == ATEXIT:
                atexit.unregister(self._run)
            self._register()

    def _register(self) -> None:
        register = atexit.register
        if self._moment == THREADS:
            # A private hook of threading's, there since Python 3.9; without it, the
            # last atexit hook is the nearest moment.
            register = getattr(threading, "_register_atexit", atexit.register)
        try:
            register(self._run)
        except RuntimeError:  # the program is exiting already (this runs in an atexit
            return  # hook of its own): that moment has passed, and nothing is left to do
        self._registered = True

    def _run(self) -> None:
        self._hook(self.members())

    def _forget_in_child(self) -> None:
        self._members = weakref.WeakSet()
        self._lock = threading.Lock()  # another thread may have held it at the fork


_every_list: list[ExitList] = []


def _forget_in_child() -> None:
    for exit_list in _every_list:
        exit_list._forget_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
    os.register_at_fork(after_in_child=_forget_in_child)
