"""The serial backend: every chunk runs at once, in the caller's thread.

Nothing is pickled and nothing runs concurrently, so a debugger, a profiler and
print() all behave as in a plain loop; it is also the right engine for work too small
to be worth shipping anywhere.
"""

from __future__ import annotations

from workpool._options import PoolSpec
from workpool.backends.base import Backend
from workpool.errors import BrokenPool
from workpool.tasks import Chunk, ResultBatch, call_items

__all__ = ["SerialBackend"]


class SerialBackend(Backend):
    """Runs each chunk inside ``submit``; the initializer runs before the first one."""

    name = "serial"
    target_chunk_seconds = 0.001

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__(spec)
        self.workers = 1
        self._initialized = spec.initializer is None
        self._broken: BrokenPool | None = None
        self._stopped = False

    def submit(self, chunk: Chunk) -> None:
        if self._stopped:
            raise RuntimeError("cannot submit work to a pool that has shut down")
        if self._broken is not None:
            raise self._broken
        if not self._initialized:
            self._initialize()
        if not chunk.sink.claim(chunk):
            return
        values, errors, elapsed = call_items(chunk.fn, chunk.mode, chunk.items)
        chunk.sink.deliver(ResultBatch(chunk, values, errors, elapsed, worker="the calling thread"))

    def _initialize(self) -> None:
        assert self.spec.initializer is not None
        try:
            self.spec.initializer(*self.spec.initargs)
        except Exception as exc:
            self._broken = BrokenPool(f"the initializer failed: {exc!r}")
            self._broken.__cause__ = exc
            raise self._broken from exc
        self._initialized = True

    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        self._stopped = True
