"""The one interface every engine implements; ``Pool`` and map runs know only this."""

from __future__ import annotations

import abc
from typing import ClassVar

from workpool._options import PoolSpec
from workpool.tasks import Chunk

__all__ = ["Backend"]


class Backend(abc.ABC):
    """An engine that runs chunks and hands each one's results to the chunk's sink.

    Life cycle: created (workers start), ``submit`` any number of times from any
    thread, ``shutdown`` once. Every submitted chunk ends in exactly one of: its sink's
    ``claim`` refuses it (cancelled), or its sink's ``deliver`` receives a batch with a
    value or an exception for every item.
    """

    #: The name users give in ``backend=...``.
    name: ClassVar[str]
    #: How long one chunk should take on a worker, for adaptive chunk sizes: long
    #: enough that moving the chunk costs little beside running it.
    target_chunk_seconds: ClassVar[float]

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.workers = spec.workers

    @abc.abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Queue ``chunk`` to run. Thread-safe and non-blocking.

        Raises ``BrokenPool`` when the pool cannot run work any more, and
        ``RuntimeError`` once the backend has stopped.
        """

    @abc.abstractmethod
    def shutdown(self, *, wait: bool, cancel_pending: bool) -> None:
        """Stop once the work already submitted is done; idempotent.

        ``cancel_pending`` drops chunks that have not started: their sinks receive
        ``CancelledError`` for every item. ``wait`` blocks until every worker is gone.
        """

    def terminate(self) -> None:
        """Stop at once: drop pending chunks and stop workers without finishing their work.

        The default waits for running work, which is all a thread can do.
        """
        self.shutdown(wait=True, cancel_pending=True)
