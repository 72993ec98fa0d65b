"""``task_timeout`` for workers that cannot be stopped from outside: threads, subinterpreters.

A worker about to run a timed task registers it here. A watchdog thread sleeps until
the earliest deadline; when a task passes its deadline, the watchdog reports
``TaskTimeout`` for it at once and hands the worker to the backend to *abandon*: take
it out of service and start another in its place. The abandoned worker finishes its
task in the background; when it unregisters, it learns it was abandoned and drops its
result.

Whose clock decides: a worker that runs its task elsewhere (a subinterpreter) learns of
the task's start and end only when its thread reads them, which on a loaded machine may
be long after. Such a worker gives the times the task itself took (``started``, and an
``ended`` reading the watchdog can take without it), so a quick task is never timed out
for the time its worker took to hear that it ended; one that ran past its deadline by its
own clock times out even if the watchdog had not yet woken.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from workpool.backends.base import deliver
from workpool.clock import capped_wait, now_ns
from workpool.daemons import DAEMONS
from workpool.errors import TaskTimeout
from workpool.tasks import Chunk, ResultBatch

__all__ = ["DeadlineWatch", "TimedTask"]


class TimedTask:
    """A task with a deadline, and the worker running it."""

    __slots__ = (
        "abandoned",
        "chunk",
        "deadline",
        "ended",
        "label",
        "started",
        "started_ns",
        "thread",
    )

    def __init__(
        self,
        chunk: Chunk,
        thread: threading.Thread,
        label: str,
        started: float,
        ended: Callable[[], float | None] | None,
    ) -> None:
        assert chunk.task_timeout is not None
        self.chunk = chunk
        self.thread = thread
        self.label = label  # names the worker in messages: "thread workpool-thread-2"
        self.started = started  # on time.monotonic
        self.deadline = started + chunk.task_timeout
        self.ended = ended  # when the task's call returned (time.monotonic), None until then
        self.started_ns = now_ns()  # for the timeline, when the call is traced
        self.abandoned = False

    def ended_in_time(self) -> bool:
        """Whether the task's call has returned, by its own clock, within its deadline."""
        ended = self.ended() if self.ended is not None else None
        return ended is not None and ended <= self.deadline


class DeadlineWatch:
    """The watchdog of one backend, sharing the backend's lock.

    ``abandon(overdue)`` is called with the lock held: the backend takes those workers
    out of service and starts others. ``finished()``, also under the lock, says when
    the watchdog may end (the backend is stopping and nothing is left to watch).
    ``kind`` says what cannot be stopped, in messages: "a thread", "a subinterpreter".
    """

    def __init__(
        self,
        lock: threading.Lock,
        *,
        name: str,
        kind: str,
        abandon: Callable[[list[TimedTask]], None],
        finished: Callable[[], bool],
    ) -> None:
        self._lock = lock
        self._deadlines = threading.Condition(lock)
        self._name = name
        self._kind = kind
        self._abandon = abandon
        self._finished = finished
        self._timed: dict[threading.Thread, TimedTask] = {}
        self.thread: threading.Thread | None = None  # the watchdog, while it runs

    @property
    def watching(self) -> bool:
        """Whether any task is being timed. Read with the lock held."""
        return bool(self._timed)

    def watch(
        self,
        chunk: Chunk,
        thread: threading.Thread,
        label: str,
        started: float | None = None,
        ended: Callable[[], float | None] | None = None,
    ) -> TimedTask:
        """Start the clock on ``chunk``, run by ``thread``. Call without the lock.

        ``started``: when the task began, on ``time.monotonic`` (default: now).
        ``ended``: says when the task's call returned, or None while it runs; the
        watchdog reads it at the deadline (from its own thread: it must not block).
        """
        assert chunk.task_timeout is not None
        if started is None:
            started = time.monotonic()
        timed = TimedTask(chunk, thread, label, started, ended)
        with self._lock:
            self._timed[thread] = timed
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=self._name, daemon=DAEMONS)
                self.thread.start()
            self._deadlines.notify()
        return timed

    def unwatch(self, timed: TimedTask, ended: float | None = None) -> bool:
        """Stop the clock on a finished task; True if it timed out: drop its results.

        ``timed.abandoned`` then says whether the worker was taken out of service.
        ``ended``: when the task's call returned, on ``time.monotonic``, if known. A task
        that ended past its deadline times out here, if the watchdog has not yet said
        so; its worker, free again, stays in service.
        """
        with self._lock:
            self._timed.pop(timed.thread, None)
            if timed.abandoned or ended is None or ended <= timed.deadline:
                return timed.abandoned
        self._report(timed, ran=ended - timed.started)
        return True

    def wake(self) -> None:
        """Have the watchdog look again (the backend's state changed). Lock held."""
        self._deadlines.notify_all()

    def _run(self) -> None:
        while True:
            overdue: list[TimedTask] = []
            with self._lock:
                if self._finished():
                    self.thread = None
                    return
                now = time.monotonic()
                for timed in list(self._timed.values()):
                    if timed.deadline <= now and timed.ended_in_time():
                        timed.deadline = math.inf  # its worker is about to hear of its end
                    elif timed.deadline <= now:
                        timed.abandoned = True
                        del self._timed[timed.thread]
                        overdue.append(timed)
                if overdue:
                    self._abandon(overdue)
                else:
                    deadlines = [t.deadline for t in self._timed.values()]
                    earliest = min(deadlines, default=math.inf)
                    self._deadlines.wait(
                        capped_wait(earliest - now) if earliest < math.inf else None
                    )
            for timed in overdue:
                self._report(timed)

    def _report(self, timed: TimedTask, ran: float | None = None) -> None:
        """Fail a task with ``TaskTimeout``: one abandoned, or one that ``ran`` seconds.

        Call without the lock.
        """
        chunk = timed.chunk
        if ran is None:
            error = TaskTimeout(
                f"{chunk.task_name()} ran longer than task_timeout={chunk.task_timeout:g}s; "
                f"{self._kind} cannot be stopped, so {timed.label} finishes it in the "
                "background and its result is discarded"
            )
        else:
            error = TaskTimeout(
                f"{chunk.task_name()} ran {ran:.3g}s on {timed.label}, longer than "
                f"task_timeout={chunk.task_timeout:g}s; its result is discarded"
            )
        if chunk.trace is not None:
            chunk.trace.fault(
                chunk.trace.worker_track(timed.label),
                "timeout",
                (chunk.start, len(chunk.items), chunk.attempt),
                timed.started_ns,
                now_ns(),
                chunk.start,
                str(error),
            )
        batch = ResultBatch.failed(chunk, error, retryable=True)
        batch.worker = timed.label
        deliver(batch)  # a done-callback's SystemExit must not end the watchdog
