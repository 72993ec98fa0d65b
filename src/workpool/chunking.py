"""Adaptive chunk sizes: as many items per chunk as take a few milliseconds to run.

A chunk is the unit a worker receives at once. Too small, and the cost of moving it
(pickling, a system call, a wake-up) dominates tiny tasks; too large, and the last
chunks leave workers idle while one finishes. The sizer starts with single items,
measures how long items take, and grows toward a target time per chunk. Nor does a
chunk hold more items than the input gives in that time: a chunk is sent once it is
full, so an input that trickles would otherwise hold back the items already read.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator

__all__ = ["PROCESS_CHUNK_SECONDS", "THREAD_CHUNK_SECONDS", "ChunkSizer", "ChunkTimes"]

# How long one chunk should take on a worker: long enough that moving it costs little
# beside running it. The engines size their chunks by these, and ``advise`` assumes them.
# A chunk for a worker process is pickled and crosses a socket (about 0.1 ms a trip);
# serial work takes the same size, since each chunk still costs a delivery to the caller.
PROCESS_CHUNK_SECONDS = 0.01
# A chunk for a thread of this process, or a subinterpreter fed through a pipe, is handed
# over in tens of microseconds.
THREAD_CHUNK_SECONDS = 0.002

# No chunk grows past this: it bounds the memory in flight, and keeps tiny items in
# chunks small enough to keep every worker fed. An input of unknown length leaves the
# sizer no other cap, so a generator of 200,000 tiny items went out in three or four
# chunks of up to 65,536, a worker idle while the last ran; at this size, imap over it
# takes a fifth less time, and a known-length map of tiny items the same.
MAX_CHUNK_ITEMS = 8_192
# How much a chunk may grow over the largest one measured so far.
MAX_GROWTH = 16
# A chunk with this many times the items of any measured before replaces their estimate.
OUTGROWN = 4
# No chunk of large arrays holds much more than this. The chunks in flight (and, in
# order, those finished behind a slower one) keep their items in memory here, and on
# Dask each array's copy on the workers; sized by time alone, cheap tasks over an
# endless input of 1 MiB arrays went out in chunks of thousands, 4 GB read ahead.
MAX_CHUNK_BYTES = 64 << 20


class ChunkSizer:
    """Decides how many items the next chunk holds. Not thread-safe: one per run.

    ``target_seconds`` is the time a chunk should take on a worker; no chunk holds more
    than ``max_items``, nor more than ``MAX_CHUNK_BYTES`` of the items' arrays, nor more
    than the input was last seen to give in ``target_seconds``. With a known ``total``,
    chunks are also capped so every worker gets several of them.
    """

    def __init__(
        self,
        *,
        fixed: int | None,
        workers: int,
        total: int | None,
        target_seconds: float,
        max_items: int = MAX_CHUNK_ITEMS,
    ) -> None:
        self._fixed = fixed
        self._target = target_seconds
        self._workers = max(1, workers)
        self._max_items = max_items
        cap = max_items
        if total is not None:
            cap = min(cap, max(1, math.ceil(total / (workers * 4))))
        self._cap = cap
        self._seconds_per_item: float | None = None
        self._largest_measured = 0
        self._bytes_per_item = 0  # of the arrays among an item's arguments, last seen
        self._read_seconds_per_item = 0.0  # waiting for the input's next item, last seen

    @property
    def seconds_per_item(self) -> float | None:
        """The current estimate of one item's run time, once something was measured."""
        return self._seconds_per_item

    def next_size(self) -> int:
        if self._fixed is not None:
            return self._fixed
        if self._seconds_per_item is None:
            return 1
        if self._seconds_per_item <= 0:
            wanted = self._cap
        else:
            wanted = int(self._target / self._seconds_per_item)
        # Growth is capped, in case the items measured so far were the cheap ones; but
        # a chunk expected to take an eighth of the target is safe to send at once,
        # which brings tiny items to full-size chunks in a round trip or two.
        limit = max(max(1, self._largest_measured) * MAX_GROWTH, wanted // 8)
        if self._bytes_per_item:
            limit = min(limit, MAX_CHUNK_BYTES // self._bytes_per_item)
        if self._read_seconds_per_item:
            limit = min(limit, int(self._target / self._read_seconds_per_item))
        return max(1, min(wanted, limit, self._cap))

    def upfront_sizes(self, count: int) -> Iterator[int]:
        """Sizes for chunks of ``count`` items, all cut before anything is measured.

        Each worker's first chunk holds one item, and each round of chunks twice as many
        as the one before, up to a quarter of each worker's share; toward the end they
        shrink again, each to a part of what is left, down to single items. The first
        results come after one item's time, not a whole share's; tiny items still reach
        large chunks within a few rounds; and no worker is left with a long last chunk
        while the others have nothing to do.
        """
        if self._fixed is not None:
            yield from itertools.repeat(self._fixed)
            return
        workers = self._workers
        cap = min(self._max_items, max(1, math.ceil(count / (workers * 4))))
        left = count
        size = 1
        while True:
            for _ in range(workers):
                chunk = max(1, min(size, cap, math.ceil(left / (2 * workers))))
                left -= chunk
                yield chunk
            size *= 2

    def observe_item_bytes(self, nbytes: int) -> None:
        """Record the bytes of the arrays an item just read holds (a chunk's first)."""
        self._bytes_per_item = nbytes

    def observe_reading(self, items: int, seconds: float) -> None:
        """Record that reading ``items`` items from the input took ``seconds``.

        The last reading counts alone: an input that stalled once (a page of a file, a
        network read) costs one small chunk, and one that slows down is followed at once.
        """
        if items > 0 and self._fixed is None:
            self._read_seconds_per_item = seconds / items

    def observe(self, items: int, seconds: float) -> None:
        """Record that ``items`` items ran in ``seconds`` on a worker."""
        if items <= 0 or self._fixed is not None:
            return
        per_item = seconds / items
        if self._seconds_per_item is None or items >= OUTGROWN * self._largest_measured:
            # A chunk this much larger than all before it spreads the fixed cost of a
            # chunk (its delivery, a few tens of microseconds) over its items: the
            # smaller chunks' estimates, which that cost inflates, count no more.
            self._seconds_per_item = per_item
        else:  # weight by evidence: a big chunk's measure counts more than one item's
            weight = min(0.5, items / (items + self._largest_measured + 1) + 0.1)
            self._seconds_per_item += weight * (per_item - self._seconds_per_item)
        self._largest_measured = max(self._largest_measured, items)


class ChunkTimes:
    """The run times of a pool's last chunks: whether a worker may be sent work ahead.

    A worker sent its next chunk while it runs one never waits for the parent between
    them (on a machine whose CPUs are all busy, that wait is the scheduler's latency, a
    millisecond or more; on Dask, a round trip through its scheduler). But a chunk
    queued behind a long task waits there while other workers may run out of work: a
    map of tasks of skewed lengths took up to twice as long as multiprocessing's, whose
    workers take a task when they are free. So work goes ahead once chunks are seen to
    be short (a median under ``LONG_SECONDS``: longer, that wait costs a few percent at
    most), or once ``RECENT`` chunks have been seen and were even (the longest at most
    ``UNEVEN`` times the median). Then a chunk sent ahead can only wait behind a task
    much longer than all those before it.
    """

    RECENT = 8
    LONG_SECONDS = 0.025
    UNEVEN = 3.0

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.RECENT)
        self.send_ahead = False

    def add(self, seconds: float) -> None:
        """One more chunk ran for ``seconds``."""
        self._recent.append(seconds)
        recent = sorted(self._recent)
        median = recent[len(recent) // 2]
        even = len(recent) == self.RECENT and recent[-1] <= self.UNEVEN * median
        self.send_ahead = median < self.LONG_SECONDS or even
