"""Items ``backend="auto"`` runs on its early process pool while it is still measuring.

Once the first items show slow CPU work, ``auto`` starts a process pool before it has
chosen (see ``oneshot._MeasuredPrefix``). While two threads are then timed in the
calling thread, the pool would idle; instead it takes the next items, two per worker,
so the measuring does useful work on the other CPUs::

    calling thread:  inline items ─▶ two threads timed ─▶ choose ─▶ outcomes() ─▶ ...
    early pool:            (starting) ─▶ EarlyItems, two items per worker ─┘

Two each: with the GIL, the timed threads keep one CPU busy, and the workers share
the others with them; one item each would leave those CPUs idle before the threads
are done.

Whatever is chosen, these items are real tasks of the call: their results follow the
measured items, in input order, and are never computed again. Failed items are tried
again on the pool as ``retries`` allows; an item that never reached a worker (its
arguments cannot be pickled, the pool broke) is handed back to run in the calling
thread, where ``auto`` would have run it had it chosen no processes. A result that
cannot be pickled fails its item, as on the process backend: ``auto`` sends items only
once those it measured, and their results, could be pickled. Their large arrays go in
shared memory through ``sharing``, the call's: the rest of the call, going on with this
pool, sends them again without another copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from workpool.errors import call_timed_out, is_cancelled
from workpool.run import RetryPolicy
from workpool.tasks import CallMode, Chunk, ResultBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.base import Backend
    from workpool.sharing import SharingContext

__all__ = ["EarlyItems"]


class EarlyItems:
    """One chunk per item, submitted at once to ``backend``; their outcomes, once all are in.

    The sink of those chunks: backend threads call ``claim`` and ``deliver``; the
    calling thread calls ``outcomes``.
    """

    def __init__(
        self,
        backend: Backend,
        fn: Callable[..., Any],
        mode: CallMode,
        items: Sequence[Any],
        start: int,
        *,
        retries: int,
        sharing: SharingContext,
    ) -> None:
        self.items = list(items)
        self.start = start  # the input position of items[0]
        self._values: list[Any] = [None] * len(self.items)
        self._errors: dict[int, BaseException] = {}
        self._unsent: list[int] = []  # offsets that never reached a worker
        self._retries = RetryPolicy(retries, backend.submit)
        self.sharing = sharing  # released by its owner, once no chunk of the call needs it
        self._lock = threading.Lock()
        self._left = len(self.items)  # items without a final outcome
        self._all_in = threading.Event()
        if not self.items:
            self._all_in.set()
        for offset in range(len(self.items)):
            chunk = Chunk(
                self,
                fn,
                mode,
                start + offset,
                self.items[offset : offset + 1],
                sharing=self.sharing,
            )
            try:
                backend.submit(chunk)
            except Exception:  # the pool broke, or cannot take the function after all
                self._settle(offset, None, unsent=True)

    def claim(self, chunk: Chunk) -> bool:
        return True  # never cancelled: the call waits for every one of them

    def deliver(self, batch: ResultBatch) -> None:
        retried = self._retries.resubmit(batch)
        offset = batch.chunk.start - self.start
        if 0 in retried:
            return
        error = batch.errors.get(0)
        if error is None:
            self._settle(offset, batch.values[0])
        elif not batch.retryable and not is_cancelled(error):
            self._settle(offset, None, unsent=True)  # it never ran: run it here instead
        else:
            self._retries.annotate(error, batch.chunk.start, batch.worker, batch.chunk.attempt)
            self._settle(offset, None, error)

    def _settle(
        self, offset: int, value: Any, error: BaseException | None = None, *, unsent: bool = False
    ) -> None:
        with self._lock:
            if unsent:
                self._unsent.append(offset)
            elif error is not None:
                self._errors[offset] = error
            else:
                self._values[offset] = value
            self._left -= 1
            if self._left == 0:
                self._all_in.set()

    def outcomes(
        self, timeout: float | None = None
    ) -> tuple[list[Any], dict[int, BaseException], list[int]]:
        """Wait for every item; their values, errors by offset, and the offsets never sent.

        Blocks until the pool has answered for every item (retries included), or raises
        ``TimeoutError`` after ``timeout`` seconds (the call's ``timeout``). The offsets
        never sent hold ``None``: the caller runs those items itself.
        """
        if not self._all_in.wait(timeout):
            assert timeout is not None
            raise call_timed_out(timeout)
        return self._values, dict(sorted(self._errors.items())), sorted(self._unsent)
