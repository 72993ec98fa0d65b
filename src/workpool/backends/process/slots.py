"""Memory shared by the parent and its workers: three integers per worker slot.

A worker writes into its slot which chunk and which item it is running, and since
when; the supervisor reads it when the worker dies or overruns (see ``protocol.py``).
The memory is anonymous (``anonymous.py``) and mapped by both sides, so it crosses into a worker by
file descriptor, whatever the start method.
"""

from __future__ import annotations

import mmap
import os

from workpool.anonymous import anonymous_file
from workpool.backends.process.protocol import SLOT_FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SharedSlots"]

_INT64 = 8


class SharedSlots:
    """``count`` slots of ``SLOT_FIELDS`` int64 each, mapped in this process.

    ``slot(i)`` is a writable view of slot ``i``. Pickling it for a new process (spawn
    or fork server) passes the file descriptor; forked processes inherit it as is.
    """

    def __init__(self, count: int, fd: int | None = None) -> None:
        self.count = count
        self.size = max(1, count) * SLOT_FIELDS * _INT64
        self.fd = anonymous_file(self.size, "workpool-slots") if fd is None else fd
        self._map = mmap.mmap(self.fd, self.size)
        self.view = memoryview(self._map).cast("q")

    def slot(self, index: int) -> memoryview:
        return self.view[index * SLOT_FIELDS : (index + 1) * SLOT_FIELDS]

    def __reduce__(self) -> tuple[Any, tuple[Any, int]]:
        from multiprocessing.reduction import DupFd

        return (_attach, (DupFd(self.fd), self.count))

    def close(self) -> None:
        """Give the file descriptor back; the mapping goes when its last view does."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _attach(duplicated: Any, count: int) -> SharedSlots:
    return SharedSlots(count, fd=duplicated.detach())
