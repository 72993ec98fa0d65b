"""Notebook question 4: one thread adds numbers to a list while another takes them out.

The notebook guarded a shared list with a ``threading.Lock``, but its consumer simply
gave up with a message whenever the list happened to be empty, and nothing stopped the
producer from letting the list grow without limit. This example shows two correct
versions of the same hand-off:

(a) By hand: the list is still protected by one ``threading.Lock``, and a
    ``threading.Condition`` built on that lock lets the consumer sleep until an item
    arrives and the producer sleep while the list is full. The list never holds more
    than ``CAPACITY`` numbers and no attempt to take an item is wasted.

(b) With workpool: the producer is a plain generator handed to
    ``workpool.imap(..., backend="thread")``. ``imap`` pulls from the generator only as
    worker threads free up, so only a few items are ever produced ahead of the consumer.
    The locking, waiting and waking are all done inside the library.

Both parts end by checking that every produced number was consumed exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import workpool

COUNT = 12  # numbers to hand over in each part
CAPACITY = 3  # the most numbers the shared list may hold in part (a)
SEED = 4  # fixed seed: the same numbers on every run

# An item is (sequence number, value): the sequence number makes "exactly once" checkable
# even when two random values happen to be equal.
Item = tuple[int, int]


def make_numbers(count: int, seed: int) -> list[Item]:
    """The numbers the producer will hand over, numbered 0..count-1."""
    rng = random.Random(seed)
    return [(seq, rng.randint(1, 100)) for seq in range(count)]


def check_exactly_once(label: str, produced: list[Item], consumed: list[Item]) -> None:
    """Assert that ``consumed`` holds every produced item once and nothing else."""
    missing = Counter(produced) - Counter(consumed)
    extra = Counter(consumed) - Counter(produced)
    assert not missing, f"{label}: never consumed: {dict(missing)}"
    assert not extra, f"{label}: consumed more often than produced: {dict(extra)}"
    assert len(consumed) == len(produced), f"{label}: {len(consumed)} != {len(produced)}"
    print(f"check ({label}): all {len(produced)} produced items were consumed exactly once")


# --- (a) a bounded list guarded by a Lock and a Condition ---------------------------------


class BoundedList:
    """A list shared by threads, with room for at most ``capacity`` items."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[Item] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # waits and wakes under the same lock
        self.closed = False  # set by the producer once it has added its last item
        self.producer_waits = 0
        self.consumer_waits = 0

    def put(self, item: Item) -> None:
        with self.changed:
            while len(self.items) >= self.capacity:
                self.producer_waits += 1
                print(f"  producer: list is full ({self.capacity} items), waiting")
                self.changed.wait()
            self.items.append(item)
            print(f"  added   {item[1]:3d}  list={[value for _, value in self.items]}")
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def take(self) -> Item | None:
        """The oldest item, waiting for one if needed; ``None`` once closed and empty."""
        with self.changed:
            while not self.items and not self.closed:
                self.consumer_waits += 1
                print("  consumer: list is empty, waiting")
                self.changed.wait()
            if not self.items:
                return None
            item = self.items.pop(0)
            print(f"  removed {item[1]:3d}  list={[value for _, value in self.items]}")
            self.changed.notify_all()
            return item


def by_hand(numbers: list[Item]) -> None:
    print(f"(a) Lock + Condition, list capacity {CAPACITY}")
    shared = BoundedList(CAPACITY)
    consumed: list[Item] = []

    def produce() -> None:
        for seq, item in enumerate(numbers):
            shared.put(item)
            # Fast for the first half (the list fills up and the producer must wait),
            # slow for the second half (the list runs dry and the consumer must wait).
            time.sleep(0.0005 if seq < len(numbers) // 2 else 0.004)
        shared.close()

    def consume() -> None:
        while (item := shared.take()) is not None:
            consumed.append(item)
            time.sleep(0.002)  # simulate work on the item

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    print(f"  final list: {shared.items}")
    print(
        f"  the producer waited {shared.producer_waits} times for room, "
        f"the consumer waited {shared.consumer_waits} times for an item"
    )
    assert not shared.items
    check_exactly_once("Lock + Condition", numbers, consumed)


# --- (b) a generator feeding workpool.imap on threads ------------------------------------


def take(item: Item) -> tuple[Item, str]:
    """The consumer's work on one item; runs on a workpool thread."""
    time.sleep(0.001)  # simulate work on the item
    return item, threading.current_thread().name


def with_workpool(numbers: list[Item]) -> None:
    workers = 2
    print(f"(b) a generator feeding workpool.imap(backend='thread', workers={workers})")
    produced = 0
    consumed: list[Item] = []
    largest_lead = 0

    def producer() -> Iterator[Item]:
        nonlocal produced, largest_lead
        for item in numbers:
            lead = produced - len(consumed)  # items produced but not yet consumed
            largest_lead = max(largest_lead, lead)
            print(f"  produce {item[1]:3d}  (not yet consumed: {lead})")
            produced += 1
            yield item

    # chunksize=1 hands items over one at a time, like the list in part (a).
    for item, thread_name in workpool.imap(
        take, producer(), backend="thread", workers=workers, chunksize=1
    ):
        consumed.append(item)
        print(f"  consumed {item[1]:3d} (taken on {thread_name})")

    print(
        f"  at most {largest_lead} of {len(numbers)} items were ever waiting: "
        "imap reads its input only as fast as the workers take it"
    )
    assert largest_lead < len(numbers), "imap read the whole input up front"
    assert consumed == numbers, "imap returns results in input order"
    check_exactly_once("workpool.imap", numbers, consumed)


def main() -> None:
    numbers = make_numbers(COUNT, SEED)
    print(f"numbers to hand over: {[value for _, value in numbers]}")
    print()
    by_hand(numbers)
    print()
    with_workpool(numbers)


if __name__ == "__main__":
    main()
