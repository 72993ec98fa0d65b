"""Finished tasks' results, fetched on the Dask client's event loop the moment they finish.

The engine's courier thread delivers results; fetching them is the client's business,
and the client does it on its own event loop. A courier that asked for each batch
itself crossed threads twice more per batch: the loop told it a task had finished, it
asked the loop to fetch the result, the loop told it the result was there. On a busy
machine each of those wake-ups waits for a CPU: a sequential ``submit().result()``
took some 4 ms longer than Dask's own ``Future.result()``, which fetches in the same
coroutine that saw the task finish. So does this::

    client's event loop                                  courier thread
    -------------------                                  --------------
    watch(future): wait until it settles
      not finished (an error, cancelled) -------------> arrived([future], {})
      finished: queued for the next fetch; if none
      is under way, fetch every queued one at once
      (those that finish meanwhile wait for the next)
      fetched ------------------------------------------> arrived(futures, payloads)

A fetch that fails leaves the futures it could not fetch out of ``payloads``; the
courier then asks each future why. A fetch that hangs (the scheduler was lost: Dask
waits out its connection timeout, and tries again) is given up by ``abandon``, which the
courier calls once the client stops running: it hands back every future queued or
being fetched, without payloads. The courier settles each future once whoever hands it
over first, so a fetch that ends after all is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ResultFetcher"]

# Called with futures and the payloads fetched for some of them (by key), from the
# client's event loop or from ``abandon``'s caller: it must only hand them on (a
# queue's put), never wait.
Arrived = Callable[[list[Any], dict[str, Any]], None]


class ResultFetcher:
    """Fetches the results of a client's Dask futures as they finish; see the module doc."""

    def __init__(self, client: Any, arrived: Arrived) -> None:
        self._client = client
        self._arrived = arrived
        self._lock = threading.Lock()  # the loop and the courier both take the lists
        self._queued: list[Any] = []  # finished, waiting for the next fetch
        self._fetching: list[Any] = []  # in the fetch under way
        self._task: asyncio.Task[None] | None = None  # the fetch under way
        self._given_up: asyncio.Task[None] | None = None  # the fetch ``abandon`` cancelled

    def watch(self, future: Any) -> None:
        """Hand ``future`` over to ``arrived`` once it settles (any thread may call this)."""
        self._client.loop.add_callback(self._wait, future)

    @property
    def fetching(self) -> list[Any]:
        """The futures whose results are being fetched now (to cancel them)."""
        with self._lock:
            return list(self._fetching)

    def abandon(self) -> list[Any]:
        """Give up every fetch, queued or under way; the futures they were for.

        For when the client stopped running: a fetch then cannot succeed, though Dask
        would wait for it (and later fetches, while it does not run, fail at once).
        """
        with self._lock:
            given_up = self._queued + self._fetching
            self._queued, self._fetching = [], []
            task = self._given_up = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it is gone too
                self._client.loop.add_callback(task.cancel)
        return given_up

    async def _wait(self, future: Any) -> None:
        while future.status == "pending":
            await future._state.wait()
        if future.status != "finished":  # nothing to fetch: the courier asks why
            self._arrived([future], {})
            return
        with self._lock:
            self._queued.append(future)
            if self._task is not None:
                return  # the fetch under way takes it next
            self._task = asyncio.current_task()
        try:
            await self._fetch_queued()
        except asyncio.CancelledError:
            if not self._gave_up():
                raise
        finally:
            with self._lock:
                self._task = None

    async def _fetch_queued(self) -> None:
        """Fetch what is queued, at once, until nothing is (on the client's loop)."""
        while True:
            with self._lock:
                futures = self._fetching = self._queued
                self._queued = []
                if not futures:
                    return
            payloads = await self._fetch(futures)
            with self._lock:
                self._fetching = []
            self._arrived(futures, payloads)

    async def _fetch(self, futures: list[Any]) -> dict[str, Any]:
        """The payloads of ``futures`` by key; one that could not be fetched is left out."""
        if getattr(self._client, "status", None) != "running":
            return {}
        # A cancelled future's fetch raises a CancelledError too (Dask's subclass).
        try:
            return dict(zip([f.key for f in futures], await self._gather(futures)))
        except asyncio.CancelledError:
            if self._gave_up():
                raise
        except Exception:
            pass
        payloads: dict[str, Any] = {}  # one of them failed meanwhile: one by one
        for future in futures:
            try:
                payloads[future.key] = (await self._gather([future]))[0]
            except asyncio.CancelledError:
                if self._gave_up():
                    raise
            except Exception:
                continue
        return payloads

    def _gave_up(self) -> bool:
        """Whether ``abandon`` cancelled the fetch running now (not Dask, a future)."""
        with self._lock:
            return self._given_up is not None and self._given_up is asyncio.current_task()

    async def _gather(self, futures: list[Any]) -> list[Any]:
        return list(await self._client._gather(futures))
