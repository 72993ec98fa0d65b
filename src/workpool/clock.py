"""The one clock of timelines, and how a worker's readings are put on the caller's.

Every timestamp a trace holds is ``now_ns()`` (``time.perf_counter_ns``): in the caller,
in its threads and in its worker processes, which read it and send it back with their
results. On Linux, macOS and Windows that clock is the same for every process of one
machine. For a worker whose clock may differ (another node, another time namespace),
its engine measures an offset when the worker says hello (``clock_offset``) and adds
it to the worker's readings as they arrive. This module imports nothing, so workers
and engines can use it without loading the timeline package.

It also says how long one blocking wait may be (``capped_wait``): a deadline a user
sets may lie beyond what the system's waits can count.
"""

from __future__ import annotations

import time

__all__ = ["LONGEST_WAIT", "capped_wait", "clock_offset", "now_ns"]

now_ns = time.perf_counter_ns

# poll counts its timeout in milliseconds in a C int (some 24.8 days), a lock's wait
# stops at threading.TIMEOUT_MAX, and neither takes infinity; yet task_timeout=30 * 86_400
# or timeout=math.inf are fair ways to say "a month" or "never". A longer wait is cut to
# this, and every waiter, which loops, looks at its deadline again when it wakes.
LONGEST_WAIT = 86_400.0


def capped_wait(seconds: float) -> float:
    """``seconds`` as a timeout every blocking wait accepts (at most ``LONGEST_WAIT``)."""
    return min(seconds, LONGEST_WAIT)


def clock_offset(sent_ns: int, worker_ns: int, received_ns: int) -> int:
    """What to add to a worker's clock readings to put them on this process's clock.

    ``sent_ns`` and ``received_ns`` are this process's clock just before asking the
    worker for its clock and just after its answer, ``worker_ns`` the worker's reading
    in between. A reading inside that interval is what a shared clock gives, and any
    correction would only add the round trip's noise: the offset is 0. Otherwise the
    worker's reading is taken to be the middle of the round trip (as NTP does), which
    is right to within half the round trip.
    """
    if sent_ns <= worker_ns <= received_ns:
        return 0
    return (sent_ns + received_ns) // 2 - worker_ns
