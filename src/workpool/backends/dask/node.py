"""This Dask worker's local process pools, kept from one call to the next.

Starting a local pool means starting fresh interpreters by exec and importing workpool
in each: a tenth of a second or more of a node's CPU, which every call would pay again
if each call started its own. So a pool outlives the session (one call or ``Pool``)
it was started for: it is lent to one session at a time, and returned::

    session opens    lend(settings) ------> an idle pool with the same settings,
                                            or a new one
    session closes   give_back(pool, clean)
                       clean: every chunk it was given came back
                         --> idle here, for the next session; stopped after
                             IDLE_SECONDS unused
                       not clean (its call was cancelled while it ran tasks) or broken
                         --> terminated now: killing its processes is how
                             that work stops

The settings are those a worker process is made with: the initializer (as pickled
bytes), ``max_tasks_per_worker`` and the pool's size. A pool serves the Dask worker it
was started for (its *owner*: Dask workers may share a process) and dies with it:
``stop_idle`` is called as that worker closes (``remote.py``), the processes watch
their parent, and the process engine's exit hook terminates every pool still running
when the worker's interpreter exits.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from workpool._options import PoolSpec
from workpool.backends.dask.payload import Prepickled
from workpool.backends.process import ProcessBackend

__all__ = [
    "IDLE_SECONDS",
    "LocalPool",
    "PoolSettings",
    "give_back",
    "idle_pools",
    "lend",
    "stop_idle",
]

# An idle pool unused for this long is stopped (its processes hold memory).
IDLE_SECONDS = 60.0
# Functions each pool remembers (by their pickled bytes), so a later call that runs the
# same function does not send it to the processes again.
_FUNCTIONS_KEPT = 256


class PoolSettings(NamedTuple):
    """What makes two sessions' local pools interchangeable."""

    initializer: bytes | None  # a pickled callable taking no arguments
    max_tasks_per_worker: int | None
    workers: int


class LocalPool:
    """A local process pool of this node, and the functions it has been given."""

    def __init__(self, settings: PoolSettings, owner: str) -> None:
        self.settings = settings
        self.owner = owner  # the address of the Dask worker it serves
        spec = PoolSpec(
            backend="process",
            workers=settings.workers,
            initializer=None if settings.initializer is None else Prepickled(settings.initializer),
            max_tasks_per_worker=settings.max_tasks_per_worker,
            start_method="exec",  # a nanny's worker is daemonic and threaded
        )
        self.engine = ProcessBackend(spec)
        self.idle_since = time.monotonic()
        self._functions: OrderedDict[bytes, Prepickled] = OrderedDict()
        self._lock = threading.Lock()

    def function(self, payload: bytes, name: str) -> Prepickled:
        """The function pickled as ``payload``: the same object for the same bytes.

        The engine sends a function to its processes once per object, so reusing the
        object across sessions saves sending it again.
        """
        with self._lock:
            fn = self._functions.get(payload)
            if fn is None:
                fn = self._functions[payload] = Prepickled(payload, name)
                if len(self._functions) > _FUNCTIONS_KEPT:
                    self._functions.popitem(last=False)
            else:
                self._functions.move_to_end(payload)
            return fn


class _Idle:
    """The pools waiting for a session, and the thread that stops those unused too long."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pools: list[LocalPool] = []
        self._reaper: threading.Thread | None = None

    def take(self, settings: PoolSettings, owner: str) -> LocalPool | None:
        with self._lock:
            for index, pool in enumerate(self._pools):
                if pool.settings == settings and pool.owner == owner:
                    return self._pools.pop(index)
        return None

    def take_all(self, owner: str) -> list[LocalPool]:
        with self._lock:
            taken = [pool for pool in self._pools if pool.owner == owner]
            self._pools = [pool for pool in self._pools if pool.owner != owner]
            self._lock.notify_all()
        return taken

    def put(self, pool: LocalPool) -> None:
        pool.idle_since = time.monotonic()
        with self._lock:
            self._pools.append(pool)
            self._lock.notify_all()
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="workpool-dask-pool-reaper", daemon=True
                )
                self._reaper.start()

    def count(self) -> int:
        with self._lock:
            return len(self._pools)

    def _reap(self) -> None:
        """Stop pools idle for IDLE_SECONDS; end when none is left."""
        while True:
            with self._lock:
                if not self._pools:
                    self._reaper = None
                    return
                now = time.monotonic()
                expired = [p for p in self._pools if now - p.idle_since >= IDLE_SECONDS]
                self._pools = [p for p in self._pools if p not in expired]
                if not expired:
                    oldest = min(p.idle_since for p in self._pools)
                    self._lock.wait(oldest + IDLE_SECONDS - now)
            for pool in expired:
                pool.engine.terminate()


_idle = _Idle()


def lend(settings: PoolSettings, owner: str) -> LocalPool:
    """A pool with these settings for a session of the Dask worker ``owner``: an idle
    one of its own, else a new one."""
    while True:
        pool = _idle.take(settings, owner)
        if pool is None:
            return LocalPool(settings, owner)
        if pool.engine.accepting:
            return pool
        pool.engine.terminate()  # broke while idle (its processes could not restart)


def give_back(pool: LocalPool, *, clean: bool) -> None:
    """A session is done with ``pool``; ``clean``: nothing it was given still runs there."""
    if clean and pool.engine.accepting:
        _idle.put(pool)
    else:
        pool.engine.terminate()


def stop_idle(owner: str) -> None:
    """The Dask worker ``owner`` is closing: terminate its idle pools now."""
    for pool in _idle.take_all(owner):
        pool.engine.terminate()


def idle_pools() -> int:
    """How many pools wait for a session on this worker (for tests and diagnostics)."""
    return _idle.count()
