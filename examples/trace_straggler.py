"""One slow task in an ordered map, seen through ``trace=``, and what ``ordered=False`` changes.

200 tasks of 10 ms run on two worker processes; task 40 takes 300 ms. The same map
runs twice, with results in input order (the default) and without, and each run writes
its timeline. In the ordered run the results after task 40 cannot be delivered before
it, but the other worker goes on running the tasks after it (up to four windows of
chunks are read ahead and held), so both runs take about as long, and the timeline
shows one worker on the slow task while the other stays busy.

Usage: ``python examples/trace_straggler.py [DIRECTORY]`` (the traces go there; default
the current directory), then ``workpool trace summary DIRECTORY/trace-ordered.json``
or ``workpool trace plot DIRECTORY/trace-ordered.json -o trace.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import workpool

SLOW = 40


def work(x: int) -> int:
    time.sleep(0.3 if x == SLOW else 0.01)
    return x


def main(directory: Path) -> None:
    for ordered in (True, False):
        path = directory / f"trace-{'ordered' if ordered else 'unordered'}.json"
        began = time.perf_counter()
        results = workpool.map(
            work, range(200), backend="process", workers=2, ordered=ordered, trace=path
        )
        took = time.perf_counter() - began
        assert sorted(results) == list(range(200))
        print(f"ordered={ordered}: {took:.2f} s; its timeline is in {path}")
    print(f"where the time went: workpool trace summary {directory / 'trace-ordered.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
