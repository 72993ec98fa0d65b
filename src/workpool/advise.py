"""Threads, processes or neither: decided by timing the function on a sample.

Three things are measured on the first items of the input, in this process:

1. what one item costs when run inline (wall time, and how much of it is CPU time);
2. whether two threads get through items faster than one (they do when the work
   waits on I/O, releases the GIL, or runs on a free-threaded build);
3. what it costs to ship an item to another process and its result back (pickled
   sizes and pickling time; a large NumPy array costs the one copy into shared memory
   that a process pool makes of it per call).

On Python 3.14 with the GIL, CPU work that holds it is also run on two subinterpreters
(``interpreter_trial``), which may beat processes at it.

From these and the number of items still to do, the time each engine would need is
estimated, and the fastest wins; ``serial`` wins when no engine pays for its own
start-up. Every item run while measuring is a real task of the call: its result is
kept, never recomputed, and no item runs twice unless ``retries`` says so, with one
exception: a function that raised on the two threads for every item but not inline is
tied to the calling thread, and those items run again there, where a plain loop would
have run them (threads are then not offered).
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence

from workpool import _platform
from workpool._cpus import usable_cpus
from workpool._options import BACKENDS, PoolSpec, check_function
from workpool.chunking import PROCESS_CHUNK_SECONDS, THREAD_CHUNK_SECONDS
from workpool.inputs import InputSource
from workpool.records import Record
from workpool.serialize import PROTOCOL, dumps_data, dumps_function
from workpool.tasks import CallMode, call_items, rerun_failed_here

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.base import Backend
    from workpool.inputs import ItemSource
    from workpool.interpreter_trial import Trial

__all__ = [
    "Advice",
    "Measurement",
    "Sample",
    "advise",
    "can_ship",
    "decide",
    "decide_for",
    "measure",
]

# What a pool of worker processes costs to start and stop, estimated (measured here):
# workers forked from the zygote or a running fork server start in milliseconds; the
# first pool also imports the process engine; a fork server that must first start
# costs an interpreter start-up.
PROCESS_POOL_START_WARM = 0.02
PROCESS_POOL_START_FIRST = 0.05
PROCESS_POOL_START_COLD = 0.15
THREAD_POOL_START = 0.001
# Moving one chunk to a worker process and its results back, beyond pickling.
PROCESS_CHUNK_OVERHEAD = 100e-6
THREAD_CHUNK_OVERHEAD = 20e-6
# An engine must beat running inline by this factor to be chosen.
MARGIN = 0.85
# Items quicker than this are not timed on threads: handing them over costs more.
TINY_ITEM = 20e-6
# Inline timing fills this much wall time instead of its usual goal once the items
# are tiny and FAR_CHEAPER times cheaper than shipping the first one to a process
# and back: no engine can win then, and timing more would only delay the loop.
SHORT_GOAL = 0.001
# Shipping a tiny item takes microseconds, and one timing of it can hold a preemption, a
# page fault or a garbage collection many times as long (the first item's, taken alone,
# once made tiny squares look far cheaper than shipping on a busy machine). The first
# item's shipping is timed up to SHIPPING_TIMINGS times, while the timings so far took
# less than SHIPPING_RETIMED_WITHIN seconds (a time slice), and the fastest is kept.
SHIPPING_TIMINGS = 5
SHIPPING_RETIMED_WITHIN = 0.005
FAR_CHEAPER = 8
# An item this long is timed well on its own: the first one is the sample if it
# mostly waited (a warm-up would have shown as CPU time), else the one after it;
# two threads are timed on one item each, and slow items that wait are not timed on
# threads at all (waits overlap on threads; each item timed there would delay the
# call by its whole length).
SLOW_ITEM = 0.005
# Threads "scale" when two of them get through items this much faster than one.
THREADS_SCALE = 1.5
# CPU work that kept two CPUs busy on two threads is worth threads once it gains this much.
CPU_THREADS_GAIN = 1.1

#: Whether this Python has subinterpreters (``concurrent.interpreters``) to time.
_INTERPRETERS = "interpreter" in BACKENDS


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


class Measurement(
    Record,
    defaults={
        "gil_enabled": True,
        "interpreter_items": 0,
        "interpreter_speedup": None,
        "interpreter_start_seconds": 0.0,
        "interpreter_parallelism": None,
        "threads_fail": False,
    },
):
    """What was measured about a function: the inputs to ``decide``."""

    __slots__ = (
        "cpu_fraction",
        "gil_enabled",
        "interpreter_items",
        "interpreter_parallelism",
        "interpreter_speedup",
        "interpreter_start_seconds",
        "items",
        "seconds_per_item",
        "ship_bytes_per_item",
        "ship_seconds_per_item",
        "thread_items",
        "thread_parallelism",
        "thread_speedup",
        "threads_fail",
    )

    items: int  # items run inline
    seconds_per_item: float  # wall time of one item, inline
    cpu_fraction: float  # CPU time / wall time, inline (low: waits on I/O)
    thread_items: int  # items run on two threads
    thread_speedup: float | None  # items/s on two threads / items/s inline
    # CPU seconds the process used per wall second while two threads ran: near 1 when
    # the GIL lets one run at a time, near 2 when both really run. Unlike the speedup,
    # other load on the machine cannot inflate it.
    thread_parallelism: float | None
    ship_seconds_per_item: float  # pickling an item and its result, both ways
    ship_bytes_per_item: float  # pickled size of an item plus its result
    gil_enabled: bool
    interpreter_items: int  # items run on two subinterpreters
    # items/s on two started subinterpreters / items/s inline (None: not timed, or failed)
    interpreter_speedup: float | None
    interpreter_start_seconds: float  # starting two, beyond an item in each
    interpreter_parallelism: float | None  # like thread_parallelism, meanwhile
    # Every item run on the two threads raised, though not every one run inline: the
    # function is tied to the calling thread (an object made there), so no worker
    # thread can run it.
    threads_fail: bool


class Advice(Record):
    """Which engine to use for a function, how many workers, and why.

    ``backend``, ``workers`` and ``chunksize`` are the choice; ``reason`` says it with
    the numbers behind it, and ``measurements`` is a dict of those numbers. Read-only:
    ``replace(workers=4)`` makes a changed copy.
    """

    __slots__ = ("backend", "chunksize", "measurements", "reason", "workers")
    backend: str
    workers: int
    chunksize: int
    reason: str
    measurements: dict[str, Any]

    def __str__(self) -> str:
        return (
            f"backend={self.backend!r} workers={self.workers} chunksize={self.chunksize}: "
            f"{self.reason}"
        )


Advice.__module__ = "workpool"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"


def _bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _process_pool_start() -> float:
    """Estimated start-up of a process pool here, now: how workers would start."""
    import sys

    # A module another thread is importing is in sys.modules before its globals are
    # set: read them with a default (not imported yet, or not yet run: not running).
    zygote = sys.modules.get("workpool.backends.process.zygote")
    if getattr(zygote, "_zygote", None) is not None:
        return PROCESS_POOL_START_WARM
    forkserver = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    if getattr(forkserver, "_forkserver_pid", None):
        return PROCESS_POOL_START_WARM
    if threading.active_count() == 1:  # the zygote can still be made: fast, once imported
        return PROCESS_POOL_START_FIRST
    return PROCESS_POOL_START_COLD


def threads_scale(found: Measurement) -> bool:
    """Did two threads get through the work faster than one, for a reason that lasts?

    Work that waits (on I/O, sleeps) needs only the speedup. CPU work must have kept
    two CPUs busy at once (CPU time per wall second, which a lucky moment on a loaded
    machine cannot fake) and finished sooner; how much sooner scales the estimate.
    """
    if found.threads_fail:
        return False
    speedup = found.thread_speedup
    if speedup is None:
        if found.seconds_per_item < TINY_ITEM:  # handing items to threads costs more
            return False
        # Items too slow to time twice: judge by what they do.
        return found.cpu_fraction < 0.5 or not found.gil_enabled
    if found.cpu_fraction < 0.5:
        return speedup >= THREADS_SCALE
    return _gil_released(found) and speedup >= CPU_THREADS_GAIN


def _gil_released(found: Measurement) -> bool:
    """Did two threads of CPU work run on two CPUs at once?"""
    return (found.thread_parallelism or 0.0) >= THREADS_SCALE * 0.9


def _thread_plan(found: Measurement, count: int, cpus: int) -> tuple[float, int, int] | None:
    """(estimated seconds, workers, chunk size) on threads, or None when they cannot help."""
    per_item = max(found.seconds_per_item, 1e-9)
    waiting = found.cpu_fraction < 0.5  # the work mostly waits: more threads than CPUs
    if not threads_scale(found):
        return None
    speedup = found.thread_speedup
    workers = cpus
    if waiting:
        workers = min(32, max(cpus + 4, math.ceil(cpus / max(found.cpu_fraction, 0.03))))
    workers = max(1, min(workers, count))
    parallel = float(workers) if waiting else float(min(workers, cpus))
    if speedup is not None:  # two threads did not quite double: scale the rest alike
        parallel *= min(speedup, 2.0) / 2.0
    chunk = 1 if per_item > THREAD_CHUNK_SECONDS else int(THREAD_CHUNK_SECONDS / per_item)
    chunk = max(1, min(chunk, math.ceil(count / (workers * 4))))
    seconds = (
        THREAD_POOL_START
        + count * per_item / max(parallel, 1.0)
        + math.ceil(count / chunk) * THREAD_CHUNK_OVERHEAD / workers
    )
    return seconds, workers, chunk


def _process_plan(found: Measurement, count: int, cpus: int) -> tuple[float, int, int] | None:
    """(estimated seconds, workers, chunk size) on processes, or None with one CPU.

    Workers run items and their half of the pickling in parallel; the parent does the
    other half of the pickling for every item on its own, which bounds the speed.
    """
    if cpus < 2:
        return None
    workers = max(1, min(cpus, count))
    per_item = max(found.seconds_per_item, 1e-9) + found.ship_seconds_per_item / 2
    chunk = max(1, min(int(PROCESS_CHUNK_SECONDS / per_item), math.ceil(count / (workers * 4))))
    parallel = float(workers)
    if found.cpu_fraction >= 0.5 and _gil_released(found) and found.thread_speedup:
        # Two threads of this very work showed how well two CPUs run it here
        # (memory bandwidth, other load); processes get no better.
        parallel *= min(found.thread_speedup, 2.0) / 2.0
    in_workers = (count * per_item + math.ceil(count / chunk) * PROCESS_CHUNK_OVERHEAD) / parallel
    in_parent = count * found.ship_seconds_per_item / 2
    return _process_pool_start() + max(in_workers, in_parent), workers, chunk


def _interpreters_ran_in_parallel(found: Measurement) -> bool:
    """Did two subinterpreters keep two CPUs busy (like ``_gil_released`` for threads)?"""
    return (
        found.interpreter_speedup is not None
        and (found.interpreter_parallelism or 0.0) >= THREADS_SCALE * 0.9
    )


def _interpreter_plan(
    found: Measurement, count: int, cpus: int, started: bool
) -> tuple[float, int, int] | None:
    """(estimated seconds, workers, chunk size) on subinterpreters, if they were timed.

    Two of them ran ``interpreter_speedup`` times as fast as inline, shipping included;
    more run alike, up to one per CPU. Their start-up was measured too (one per worker,
    two at a time); ``started``: the pool they were timed on goes on, already started.
    They must have kept two CPUs busy: else the speedup was luck, or the work does not
    run in parallel there.
    """
    speedup = found.interpreter_speedup
    if speedup is None or cpus < 2 or not _interpreters_ran_in_parallel(found):
        return None
    workers = max(1, min(cpus, count))
    per_item = max(found.seconds_per_item, 1e-9)
    chunk = 1 if per_item > THREAD_CHUNK_SECONDS else int(THREAD_CHUNK_SECONDS / per_item)
    chunk = max(1, min(chunk, math.ceil(count / (workers * 4))))
    parallel = workers * min(speedup, 2.0) / 2.0
    start = 0.0 if started else found.interpreter_start_seconds * math.ceil(workers / 2)
    return start + count * per_item / max(parallel, 1e-9), workers, chunk


def decide(
    found: Measurement, remaining: int | None, *, interpreters_started: bool = False
) -> Advice:
    """Pick an engine for ``remaining`` more items (None: many) from what was measured.

    ``interpreters_started``: the subinterpreters timed are still running and would
    take the rest, so their start-up is already paid.
    """
    cpus = usable_cpus()
    count = remaining if remaining is not None else max(10_000, found.items * 100)
    plans: dict[str, tuple[float, int, int]] = {
        "serial": (count * found.seconds_per_item, 1, max(1, count))
    }
    for name, plan in (
        ("thread", _thread_plan(found, count, cpus)),
        ("process", _process_plan(found, count, cpus) if _platform.PROCESSES else None),
        ("interpreter", _interpreter_plan(found, count, cpus, interpreters_started)),
    ):
        if plan is not None:
            plans[name] = plan
    estimates = {name: plan[0] for name, plan in plans.items()}
    best = min(estimates, key=lambda name: estimates[name])
    if best != "serial" and estimates[best] > MARGIN * estimates["serial"]:
        best = "serial"
    interpreter = (
        "free-threaded CPython"
        if not found.gil_enabled
        else f"CPython {sys.version_info.major}.{sys.version_info.minor} with the GIL"
    )
    _, workers, chunksize = plans[best]
    reason = _explain(found, best, estimates, interpreter, count, remaining is None, cpus)
    measurements = {
        "interpreter": interpreter,
        "usable_cpus": cpus,
        "items_measured_inline": found.items,
        "seconds_per_item": found.seconds_per_item,
        "cpu_fraction": found.cpu_fraction,
        "items_measured_on_two_threads": found.thread_items,
        "two_thread_speedup": found.thread_speedup,
        "two_thread_cpu_parallelism": found.thread_parallelism,
        "fails_on_other_threads": found.threads_fail,
        "ship_seconds_per_item": found.ship_seconds_per_item,
        "ship_bytes_per_item": found.ship_bytes_per_item,
        "items_measured_on_two_interpreters": found.interpreter_items,
        "two_interpreter_speedup": found.interpreter_speedup,
        "items_to_run": count,
        "estimated_seconds": estimates,
    }
    return Advice(
        backend=best, workers=workers, chunksize=chunksize, reason=reason, measurements=measurements
    )


def can_ship(fn: Callable[..., Any], initializer: tuple[Any, ...] = ()) -> bool:
    """Whether ``fn``, and an ``(initializer, initargs)`` given with it, can be pickled
    for another process or subinterpreter."""
    try:
        dumps_function((fn, *initializer) if initializer else fn, reducer=_large_arrays_left_out)
    except Exception:
        return False
    return True


def decide_for(
    fn: Callable[..., Any],
    found: Measurement,
    remaining: int | None,
    *,
    interpreters_started: bool = False,
    initializer: tuple[Any, ...] = (),
) -> Advice:
    """``decide``, knowing the function: a choice that would ship ``fn`` elsewhere
    (processes, subinterpreters) is made again without them if ``fn`` cannot be pickled,
    or the ``(initializer, initargs)`` every worker there would run first.

    The check waits for such a choice: pickling a closure can cost an import of
    cloudpickle, which a call that stays in this process should not pay.
    """
    advice = decide(found, remaining, interpreters_started=interpreters_started)
    if advice.backend in ("process", "interpreter") and not can_ship(fn, initializer):
        unshippable = found.replace(ship_seconds_per_item=math.inf, ship_bytes_per_item=math.inf)
        advice = decide(unshippable, remaining, interpreters_started=interpreters_started)
    return advice


def _large_arrays_left_out(obj: Any) -> Any:
    """For a pickling that only asks *whether* a function pickles: a large array it holds
    (a script's global) pickles as None rather than be copied for nothing (its engine
    shares it: ``sharing.dumps_function_sharing``)."""
    from workpool.segments import numpy_if_array
    from workpool.sharing import DEFAULT_SHARE_THRESHOLD

    array = numpy_if_array(obj) is not None and not obj.dtype.hasobject
    if array and obj.nbytes >= DEFAULT_SHARE_THRESHOLD:
        return type(None), ()
    return NotImplemented


def _explain(
    found: Measurement,
    best: str,
    estimates: dict[str, float],
    interpreter: str,
    count: int,
    count_guessed: bool,
    cpus: int,
) -> str:
    cost = (
        f"One item takes {_seconds(found.seconds_per_item)} inline "
        f"({found.cpu_fraction:.0%} of it on the CPU) and {_seconds(found.ship_seconds_per_item)} "
        f"to pickle with its result ({_bytes(found.ship_bytes_per_item)})"
    )
    if not math.isfinite(found.ship_seconds_per_item):
        cost = (
            f"One item takes {_seconds(found.seconds_per_item)} inline "
            f"({found.cpu_fraction:.0%} of it on the CPU); the function, an item or a result "
            "cannot be pickled, so no other process or subinterpreter can run it"
        )
    if found.threads_fail:
        threads = (
            "every item it ran on two threads failed on a thread, unlike those it ran "
            "inline, so no worker thread can run it"
        )
    elif found.thread_speedup is None and found.cpu_fraction < 0.5 and threads_scale(found):
        threads = (
            "it mostly waits, so threads run it in parallel (not timed on two threads: "
            "an item this long shows what it does on its own)"
        )
    elif found.thread_speedup is None:
        threads = "two threads were not timed (too few items, or too little or too much work each)"
    else:
        if threads_scale(found):
            verdict = "so threads run it in parallel"
        elif found.cpu_fraction >= 0.5 and _gil_released(found):
            verdict = "so threads do not help (both CPUs were busy, yet no faster)"
        elif found.cpu_fraction >= 0.5 and found.gil_enabled:
            verdict = "so threads do not help (the work holds the GIL)"
        else:
            verdict = "so threads do not help"
        threads = (
            f"two threads ran {found.thread_speedup:.2f}x as fast as one on {interpreter}, "
            f"{verdict}"
        )
    if found.interpreter_speedup is not None:
        threads += (
            f"; two subinterpreters ran it {found.interpreter_speedup:.2f}x as fast as inline "
            f"(after {_seconds(found.interpreter_start_seconds)} to start)"
        )
    how_many = f"about {count:,} items" if count_guessed else f"{count:,} items"
    if best == "serial":
        # An engine that cannot run it at all (estimated at infinity) is no rival to name.
        others = {k: v for k, v in estimates.items() if k != "serial" and math.isfinite(v)}
        if others:
            runner = min(others, key=lambda k: others[k])
            choice = (
                f"For {how_many}, inline takes an estimated {_seconds(estimates['serial'])} "
                f"and {runner} {_seconds(others[runner])}: no pool pays for its start-up "
                "and shipping, so run serially."
            )
        elif len(estimates) > 1:  # the others cannot take it (it cannot be pickled)
            choice = "No engine that can run it would be faster, so run serially."
        else:
            plural = "" if cpus == 1 else "s"
            choice = f"With {cpus} usable CPU{plural} and threads that do not help, run serially."
    else:
        choice = (
            f"For {how_many}, {best} is estimated at {_seconds(estimates[best])} "
            f"against {_seconds(estimates['serial'])} inline."
        )
    return f"{cost}; {threads}. {choice}"


def measure(
    fn: Callable[..., Any],
    mode: CallMode,
    inputs: ItemSource,
    *,
    budget: float = 1.0,
    interpreters: PoolSpec | None = None,
    keep: list[Backend] | None = None,
    on_slow_cpu: Callable[[], None] | None = None,
    beside: Callable[[ItemSource], None] | None = None,
    rerun_failures: bool = True,
    sample: Sample | None = None,
    stop_at_failure: bool = False,
) -> tuple[Measurement, list[Any], list[Any], dict[int, BaseException]]:
    """Time ``fn`` on the first items of ``inputs``.

    Returns what was found, the items taken from ``inputs``, and their outcomes: values,
    and errors by position. Takes only as many items as ``budget`` seconds allow.
    ``interpreters`` is the pool to time subinterpreters on, where they may help (None:
    not timed); with ``keep``, that pool, if it ran every item, is appended there
    instead of shut down. ``on_slow_cpu`` is called once the items inline have shown
    themselves slow and busy on the CPU, the work a process pool usually wins on a
    build with the GIL: the caller may start one then, so that it starts while threads
    are timed. ``beside`` is called after that, with ``inputs``, once the items two
    threads will be timed on are taken, if those measured can be pickled: the items it
    takes are the call's next ones, after every item measured here, and it may run them
    elsewhere (on that pool) while threads are timed. It is not called when
    subinterpreters may be timed: they would take items after its own. When every item
    run on the two threads raised there (the function is tied to this thread), they run
    again in this one (a plain loop would have run them here), unless
    ``rerun_failures`` is False: the caller then tries them again itself, as its
    retries allow. ``stop_at_failure``: the call will raise the first failure, so the
    measuring ends at the first item that raises (what it found is then partial).

    ``sample``, if given, is where the items are kept as they run: when a task's
    ``KeyboardInterrupt`` (or anything else) ends the measuring, the caller still has
    the items that finished before it.
    """
    if sample is None:
        sample = Sample()
    started_early = False

    def start_early() -> None:
        nonlocal started_early
        if on_slow_cpu is not None and not started_early:
            started_early = True
            on_slow_cpu()

    inline = _time_inline(
        fn, mode, inputs, sample, budget, start_early if _gil_enabled() else None, stop_at_failure
    )
    stopped = stop_at_failure and bool(sample.errors)
    slow_cpu = (
        not stopped
        and on_slow_cpu is not None
        and _gil_enabled()
        and inline.per_item >= SLOW_ITEM
        and _cpu_fraction(inline) >= 0.5
    )
    if slow_cpu:
        start_early()
    run_beside = None
    if slow_cpu and beside is not None and not _interpreters_may_be_timed(interpreters):

        def run_beside() -> None:
            if math.isfinite(_shipping_cost(sample.items, sample.values, sample.errors)[0]):
                beside(inputs)

    threads = _TwoThreads()
    if not stopped:
        threads = _time_on_two_threads(
            fn, mode, inputs, sample, inline, budget, run_beside, rerun_failures
        )
    ship_seconds, ship_bytes = _shipping_cost(sample.items, sample.values, sample.errors)
    trial = None
    if (
        interpreters is not None
        and not (stop_at_failure and sample.errors)
        and _interpreters_may_help(inline, threads, ship_seconds)
    ):
        trial = _time_on_interpreters(
            fn, mode, inputs, sample, inline, budget, interpreters, keep, rerun_failures
        )
    trial_items = trial.items if trial else 0
    found = Measurement(
        # Every item run here: those timed, and those left too few to time elsewhere.
        items=len(sample.values) - threads.items - trial_items,
        seconds_per_item=inline.per_item,
        cpu_fraction=_cpu_fraction(inline),
        thread_items=threads.items,
        thread_speedup=threads.speedup,
        thread_parallelism=threads.parallelism,
        threads_fail=threads.fail,
        ship_seconds_per_item=ship_seconds,
        ship_bytes_per_item=ship_bytes,
        gil_enabled=_gil_enabled(),
        interpreter_items=trial_items,
        interpreter_speedup=trial.speedup if trial else None,
        interpreter_start_seconds=trial.start_seconds if trial else 0.0,
        interpreter_parallelism=trial.parallelism if trial else None,
    )
    return found, sample.items, sample.values, sample.errors


def _interpreters_may_be_timed(spec: PoolSpec | None) -> bool:
    """Whether a pool of subinterpreters would be timed here, where the work suits them."""
    return spec is not None and _gil_enabled() and _INTERPRETERS


def _interpreters_may_help(inline: _Inline, threads: _TwoThreads, ship_seconds: float) -> bool:
    """Whether subinterpreters are worth timing: CPU work, holding the GIL, that ships.

    Only on a build with the GIL (without one, threads do as well for less), for items
    that are not tiny, that mostly run on the CPU, that two threads did not run in
    parallel, and that can be pickled.
    """
    return (
        _INTERPRETERS
        and _gil_enabled()
        and inline.per_item >= TINY_ITEM
        and _cpu_fraction(inline) >= 0.5
        and (threads.parallelism or 0.0) < THREADS_SCALE * 0.9
        and math.isfinite(ship_seconds)
    )


def _time_on_interpreters(
    fn: Callable[..., Any],
    mode: CallMode,
    inputs: ItemSource,
    sample: Sample,
    inline: _Inline,
    budget: float,
    spec: PoolSpec,
    keep: list[Backend] | None,
    rerun_failures: bool,
) -> Trial | None:
    """Phase 4: the next items on two subinterpreters (see ``interpreter_trial``)."""
    from workpool.interpreter_trial import time_interpreters

    # Two items each at least: one each swings with when each thread wakes up.
    least = 4 if inline.per_item >= SLOW_ITEM else 8
    want = max(least, min(4096, int(2 * inline.goal / inline.per_item)))
    want = min(want, max(least, int(0.8 * budget / inline.per_item)))
    want -= want % 2
    batch = inputs.take(2 + want)
    if len(batch) < 4:  # too few left to time: run them here
        if batch:
            values, errors, _ = call_items(fn, mode, batch)
            sample.add(batch, values, errors)
        return None
    trial, values, errors = time_interpreters(
        fn, mode, batch, inline.per_item, spec, keep, rerun_failures
    )
    sample.add(batch, values, errors)
    return trial


class Sample:
    """The items taken while measuring, in input order, and their outcomes.

    Every item run while measuring is a real task of the call: its result is kept here
    and handed back, never computed again.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.values: list[Any] = []
        self.errors: dict[int, BaseException] = {}
        # Where the items whose errors stand ran, by position, if not in this thread.
        self.places: dict[int, str] = {}

    def add(
        self,
        batch: Sequence[Any],
        values: list[Any],
        errors: dict[int, BaseException],
        places: Mapping[int, str] | None = None,
    ) -> None:
        """Keep ``batch``, run next in input order, with its values and errors by position
        (and where those errors were raised, if not in this thread)."""
        offset = len(self.values)
        self.errors.update((offset + position, error) for position, error in errors.items())
        if places:
            self.places.update((offset + position, place) for position, place in places.items())
        self.values.extend(values)
        self.items.extend(batch)


class _Inline(Record):
    """Phase 1's findings: the work run inline, in this thread."""

    __slots__ = ("cpu", "goal", "items", "per_item", "queued", "wall")
    items: int  # items run (the warm-up item included)
    per_item: float  # wall seconds of one timed item, less its time queued for a CPU
    wall: float  # wall seconds the timed items took (their calls only, not their input)
    cpu: float  # this thread's CPU seconds meanwhile
    queued: float  # seconds meanwhile that it was ready to run but other work had the CPUs
    goal: float  # the wall time the timed items were meant to fill


class _TwoThreads(
    Record, defaults={"items": 0, "speedup": None, "parallelism": None, "fail": False}
):
    """Phase 2's findings: the same work on two threads, if it was timed there."""

    __slots__ = ("fail", "items", "parallelism", "speedup")
    items: int
    speedup: float | None  # items/s on two threads / items/s inline
    parallelism: float | None  # process CPU seconds per wall second meanwhile
    fail: bool  # an item failed there that ran inline without failing


def _time_inline(
    fn: Callable[..., Any],
    mode: CallMode,
    inputs: ItemSource,
    sample: Sample,
    budget: float,
    on_slow_cpu: Callable[[], None] | None = None,
    stop_at_failure: bool = False,
) -> _Inline:
    """Phase 1: time items inline, in groups that grow so tiny items are timed in bulk.

    The first item warms up (imports, caches) and is not timed, unless it alone is most
    of the budget and imported nothing (a module imported on the first call can take
    longer than any item: the items after it are timed then, within a budget that
    starts after it). Items far cheaper than shipping the first one are timed for
    ``SHORT_GOAL`` only. The time per item is the groups' own, less the time spent
    queued for a CPU (``_unqueued``). That and the CPU time are read around each group's
    calls only, not around the reading of the input between them: an input that costs
    more to read than the calls (a generator over a cheap function) would otherwise have
    its own waits for a CPU taken off the calls' time, which on a loaded machine leaves
    no time timed at all, and the timing running on to its deadline.

    ``on_slow_cpu`` is called as soon as the warm-up item was slow and busy on the CPU
    without importing anything: its time was then the work's own, not a first call's.
    ``stop_at_failure``: no more items are taken once one has raised.
    """
    goal = min(0.02, budget * 0.3)
    deadline = time.perf_counter() + budget * 0.45
    first = inputs.take(1)
    if not first:
        return _Inline(items=0, per_item=0.0, wall=0.0, cpu=0.0, queued=0.0, goal=goal)
    modules = len(sys.modules)
    warm_cpu, warm_queued, warm_started = time.thread_time(), _seconds_queued(), time.perf_counter()
    values, errors, warm = call_items(fn, mode, first)
    # Read at once: a wait for a CPU after the item (on a loaded machine, a stretch in
    # a run queue can come at any moment) is not the item's, and must not come off it.
    alone = _warm_up_alone(warm, warm_started, warm_cpu, warm_queued, goal)
    sample.add(first, values, errors)
    if errors and stop_at_failure:
        return alone
    imported = len(sys.modules) != modules
    if warm >= SLOW_ITEM and imported:
        # Slow for what it imported, a first call's cost and no later item's: the next
        # items are the sample, timed as if measuring began now.
        deadline = time.perf_counter() + budget * 0.45
    elif warm >= SLOW_ITEM:
        # It is the sample if it is most of the budget, or if it mostly waited.
        if warm > budget * 0.25 or _cpu_fraction(alone) < 0.5:
            return alone
        if on_slow_cpu is not None and not errors:
            on_slow_cpu()
    ship_first = (
        0.0 if errors else _shipping_cost(first, values, errors, SHIPPING_RETIMED_WITHIN)[0]
    )
    wall = 0.0  # of the timed items, summed
    cpu = 0.0  # this thread's CPU time meanwhile, summed
    queued = 0.0  # the time it was ready to run but queued for a CPU meanwhile, summed
    work = 0.0  # the wall time less the time queued
    timed = 0
    group = 1
    while work < goal and time.perf_counter() < deadline:
        if timed and work >= SHORT_GOAL:
            per_item_so_far = work / timed
            if per_item_so_far >= SLOW_ITEM:  # one item after the warm-up is a sample
                break
            if per_item_so_far < TINY_ITEM and per_item_so_far * FAR_CHEAPER < ship_first:
                break
        batch = inputs.take(group)
        if not batch:
            break
        cpu_before, queued_before = time.thread_time(), _seconds_queued()
        values, errors, batch_wall = call_items(fn, mode, batch)
        queued += _seconds_queued() - queued_before
        cpu += time.thread_time() - cpu_before
        sample.add(batch, values, errors)
        wall += batch_wall
        timed += len(batch)
        if errors and stop_at_failure:
            break
        # A stretch in a run queue must not end the timing early: as long as the goal,
        # it would leave a few items timed, and each of them carrying its error. Nor
        # may it hide the work done: the CPU time spent is work, however long the
        # thread also waited (on a loaded machine, slow items then went on being timed
        # here, one after another, up to the deadline).
        work = _unqueued(wall, queued, cpu)
        # Grow the groups, but do not overshoot the goal by much.
        left = goal - work
        per_item_so_far = work / timed
        group = max(
            1, min(group * 2, 4096, int(left / per_item_so_far) if per_item_so_far else 4096)
        )
    if timed == 0:  # the warm-up item was all there was, or all there was time for
        return alone
    return _Inline(
        items=len(sample.values),
        per_item=_unqueued(wall, queued, cpu) / timed,
        wall=wall,
        cpu=cpu,
        queued=queued,
        goal=goal,
    )


def _warm_up_alone(
    warm: float, started: float, cpu_started: float, queued_started: float, goal: float
) -> _Inline:
    """Phase 1's findings when the warm-up item, ``warm`` seconds long, is the sample."""
    cpu, queued = time.thread_time() - cpu_started, _seconds_queued() - queued_started
    return _Inline(
        items=1,
        per_item=_unqueued(warm, queued, cpu),
        wall=time.perf_counter() - started,
        cpu=cpu,
        queued=queued,
        goal=goal,
    )


def _unqueued(wall: float, queued: float, cpu: float) -> float:
    """``wall`` seconds of work less the ``queued`` seconds it was ready to run while
    other work had the CPUs, but never less than its ``cpu`` seconds on one.

    On a loaded machine one stretch in a run queue, as long as the whole timing of tiny
    items, would make each look many times slower than it is, and a pool worth it.
    """
    return max(wall - queued, min(cpu, wall))


def _cpu_fraction(inline: _Inline) -> float:
    """The share of its time the work spent on the CPU rather than waiting on something.

    Time spent ready to run while other programs had the CPUs is not waiting: on a busy
    machine CPU-bound work gets a fraction of a CPU, and must not be taken for I/O.
    """
    not_queued = inline.wall - min(inline.queued, inline.wall)
    if not_queued <= 0:
        return 1.0
    return min(1.0, inline.cpu / not_queued)


def _seconds_queued() -> float:
    """Seconds this thread has spent ready to run but waiting for a CPU (Linux), else 0.

    The kernel's schedstat for the thread: time on a CPU, time waiting in a run queue,
    and time slices, in that order.
    """
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _time_on_two_threads(
    fn: Callable[..., Any],
    mode: CallMode,
    inputs: ItemSource,
    sample: Sample,
    inline: _Inline,
    budget: float,
    beside: Callable[[], None] | None = None,
    rerun_failures: bool = True,
) -> _TwoThreads:
    """Phase 2: about as much work as inline, split over two threads started together.

    Skipped for tiny items: threads could not pay for themselves, and timing them would
    be noise; and for slow items that mostly wait, which threads overlap. ``beside`` is
    called once their items are taken, before they run. When every item raised there
    (though not every one inline), the function is tied to this thread: with
    ``rerun_failures``, those items run again here (``tasks.rerun_failed_here``). When
    only some raised, their errors stand, as on any engine.

    Other work may run meanwhile (other programs, or ``beside``'s items on other
    processes), so the time the threads spent ready to run while others had the CPUs
    is left out of their wall time for the speedup, as it is of the inline time: what
    is compared is what each way of running does with the CPU it gets. Not for the
    parallelism: a thread of work that holds the GIL also waits for a CPU while the
    other one holds it and runs, and that time left out would make one CPU's worth of
    work look like two on a loaded machine.
    """
    if not inline.items or inline.per_item < TINY_ITEM:
        return _TwoThreads()
    if inline.per_item >= SLOW_ITEM and _cpu_fraction(inline) < 0.5:
        return _TwoThreads()
    # Enough items that each thread runs several (one, if one is long enough to time),
    # and the pair about the inline goal.
    least = 2 if inline.per_item >= SLOW_ITEM else 8
    want = max(least, min(4096, int(2 * inline.goal / inline.per_item)))
    want = min(want, int(0.8 * budget / inline.per_item))  # two threads: about half that long
    want -= want % 2  # two equal halves, so neither thread waits on the other
    batch = list(inputs.take(want)) if want >= 2 else []
    if len(batch) < 2:  # the input ran out: run the rest inline
        if batch:
            values, errors, _ = call_items(fn, mode, batch)
            sample.add(batch, values, errors)
        return _TwoThreads()
    if beside is not None:
        beside()
    values, errors, wall, cpu, queued = _run_on_two_threads(fn, mode, batch)
    # Every item failed there, though not every one inline: the function is tied to the
    # calling thread. (Some failing is what any engine may see of a task that fails now
    # and then: those failures are the items' own, as they would be on any engine, and
    # are not run again, since no engine runs a task twice unless retries say so.)
    tied = len(errors) == len(batch) and len(sample.errors) < len(sample.values)
    places = None
    if tied and rerun_failures:
        rerun_failed_here(fn, mode, batch, values, errors)
    elif not tied:
        middle = len(batch) // 2
        places = {p: f"thread workpool-advise-{int(p >= middle)}" for p in errors}
    sample.add(batch, values, errors, places)
    if tied:
        return _TwoThreads(items=len(batch), fail=True)
    running = wall - min(queued, wall * 0.9)
    if running <= 0:
        return _TwoThreads(items=len(batch))
    return _TwoThreads(
        items=len(batch), speedup=len(batch) * inline.per_item / running, parallelism=cpu / wall
    )


def _run_on_two_threads(
    fn: Callable[..., Any], mode: CallMode, batch: list[Any]
) -> tuple[list[Any], dict[int, BaseException], float, float, float]:
    """Run each half of ``batch`` on its own thread, started together.

    Returns values, errors by position, the wall time from the start to the last
    finish, the CPU time the whole process used meanwhile, and the seconds the two
    threads spent ready to run but queued for a CPU, on average. The two threads read
    the clocks themselves: this thread, waking to join them on a loaded machine, may
    wait for a CPU long after they are done.
    """
    middle = len(batch) // 2
    halves = [batch[:middle], batch[middle:]]
    outcomes: list[tuple[list[Any], dict[int, BaseException], float]] = [([], {}, 0.0)] * 2
    queued = [0.0, 0.0]
    starts: list[tuple[float, float]] = []  # (wall, process CPU) clocks, as each began
    ends: list[tuple[float, float]] = []  # ... and as each ended
    # What call_items lets through (a KeyboardInterrupt a task raised): the caller's,
    # raised there once both threads are done, as a plain loop would raise it.
    escaped: list[BaseException] = []
    start_line = threading.Barrier(3)

    def run(index: int) -> None:
        start_line.wait()
        starts.append((time.perf_counter(), time.process_time()))
        before = _seconds_queued()
        try:
            outcomes[index] = call_items(fn, mode, halves[index])
        except BaseException as exc:
            escaped.append(exc)
        queued[index] = _seconds_queued() - before
        ends.append((time.perf_counter(), time.process_time()))

    threads = [
        threading.Thread(target=run, args=(i,), name=f"workpool-advise-{i}") for i in range(2)
    ]
    for thread in threads:
        thread.start()
    start_line.wait()
    for thread in threads:
        thread.join()
    (started, cpu_started), (ended, cpu_ended) = min(starts), max(ends)
    wall, cpu = ended - started, cpu_ended - cpu_started
    if escaped:
        raise escaped[0]
    values = outcomes[0][0] + outcomes[1][0]
    errors = dict(outcomes[0][1])
    errors.update((middle + position, error) for position, error in outcomes[1][1].items())
    return values, errors, wall, cpu, (queued[0] + queued[1]) / 2


def _shipping_cost(
    items: Sequence[Any],
    values: list[Any],
    errors: dict[int, BaseException],
    retime_within: float = 0.0,
) -> tuple[float, float]:
    """Mean time to pickle and unpickle an item and its result, and their size.

    Timed again, the fastest kept, while the timings so far took under
    ``retime_within`` seconds (``SHIPPING_RETIMED_WITHIN``).

    As a process pool ships them: a large NumPy array goes through shared memory,
    copied there once per call however many items hold it, so it costs one copy of it
    (where the sample first holds it) and a reference's few bytes, not its pickling.
    """
    picks = list(itertools.islice((i for i in range(len(items)) if i not in errors), 64))
    if not picks:
        return 0.0, 0.0
    fastest = math.inf
    began = time.perf_counter()
    for _ in range(SHIPPING_TIMINGS):  # once only without retime_within: the break below
        shared: dict[int, Any] = {}
        started = time.perf_counter()
        size = 0
        for i in picks:
            for obj in (items[i], values[i]):
                try:
                    data = _dumps_as_shipped(obj, shared)
                    pickle.loads(data)  # some objects pickle, yet cannot be rebuilt
                except (Exception, SystemExit):  # SystemExit: a __reduce__'s, not the program's
                    return math.inf, math.inf  # cannot cross to a process at all
                size += len(data)
        fastest = min(fastest, time.perf_counter() - started)
        if time.perf_counter() - began >= retime_within:
            break
    return fastest / len(picks), size / len(picks)


# What pickles as it is, holding no array (the common tiny item and result).
_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def _dumps_as_shipped(obj: Any, shared: dict[int, Any]) -> bytes:
    """``dumps_data(obj)``, with each large array in it shared once (``_shared_once``).

    What can hold no array pickles with the C pickler alone: asking a Python reducer
    about every object would make tiny items look costlier to ship than they are.
    """
    if "numpy" not in sys.modules or isinstance(obj, _SCALARS) or _scalars_only(obj):
        return dumps_data(obj)
    reducer = functools.partial(_shared_once, shared)
    buffer = io.BytesIO()
    try:
        _ConsultingPickler(buffer, reducer).dump(obj)
    except Exception:
        return dumps_function(obj, reducer=reducer)
    return buffer.getvalue()


def _scalars_only(obj: Any) -> bool:
    """A short tuple or list of ``_SCALARS`` (an item of starmap, say)."""
    return (
        type(obj) in (tuple, list)
        and len(obj) <= 16
        and all(isinstance(part, _SCALARS) for part in obj)
    )


class _ConsultingPickler(pickle.Pickler):
    """The standard pickler, asking ``reducer`` about every object first."""

    def __init__(self, file: io.BytesIO, reducer: Callable[[Any], Any]) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._reducer = reducer

    def reducer_override(self, obj: Any) -> Any:
        return self._reducer(obj)


def _shared_once(shared: dict[int, Any], obj: Any) -> Any:
    """A reducer: a large array pickles as a reference would, after one copy of it (what
    sharing it costs) the first time it is met; ``shared`` holds the arrays met. A
    read-only memmap is not copied at all: workers map its file."""
    from workpool.mapped_files import read_only_memmap

    if _large_arrays_left_out(obj) is NotImplemented:
        return NotImplemented
    if id(obj) not in shared:
        shared[id(obj)] = obj  # held, so that no other array takes its id meanwhile
        if read_only_memmap(obj) is None:
            obj.copy(order="K")
    return type(None), ()


# Measurements remembered per function, for backend="auto", for the life of the process.
_remembered: weakref.WeakKeyDictionary[Any, Measurement] = weakref.WeakKeyDictionary()
_remembered_strong: dict[int, tuple[Any, Measurement]] = {}


def remembered(fn: Callable[..., Any]) -> Measurement | None:
    try:
        return _remembered.get(fn)
    except TypeError:  # not weak-referenceable (some builtins)
        entry = _remembered_strong.get(id(fn))
        return entry[1] if entry is not None and entry[0] is fn else None


def remember(fn: Callable[..., Any], found: Measurement) -> None:
    try:
        _remembered[fn] = found
    except TypeError:
        if len(_remembered_strong) > 256:
            _remembered_strong.clear()
        _remembered_strong[id(fn)] = (fn, found)


def advise(
    fn: Callable[..., Any],
    sample: Iterable[Any],
    *,
    star: bool = False,
    total: int | None = None,
    budget: float = 1.0,
) -> Advice:
    """Time ``fn`` on ``sample`` and say which engine, how many workers and chunk size.

    ``fn`` really runs on (part of) the sample, in this process. ``total`` is how many
    items the real job has; by default the sample's length if it has one, else many.
    ``star=True`` calls ``fn(*item)``. ``budget`` bounds the measuring, in seconds.
    """
    check_function(fn)
    if not isinstance(star, bool):
        raise TypeError(f"star must be True or False; got {star!r} ({type(star).__name__})")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        raise TypeError(
            f"budget must be a number of seconds; got {budget!r} ({type(budget).__name__})"
        )
    if not budget > 0:  # also refuses NaN
        raise ValueError(f"budget must be a positive number of seconds; got {budget!r}")
    if total is not None:
        if not isinstance(total, int) or isinstance(total, bool):
            raise TypeError(
                f"total must be an integer >= 0 or None; got {total!r} ({type(total).__name__})"
            )
        if total < 0:
            raise ValueError(f"total must be an integer >= 0 or None; got {total!r}")
    if not isinstance(sample, Iterable):
        raise TypeError(f"sample must be iterable; got {type(sample).__name__}")
    if total is None and hasattr(sample, "__len__"):
        total = len(sample)  # type: ignore[arg-type]
    mode = CallMode.STAR if star else CallMode.ONE
    found, items, values, errors = measure(
        fn,
        mode,
        InputSource(sample),
        budget=budget,
        interpreters=PoolSpec(backend="interpreter", workers=2),
        # No result is kept: an item that failed on a thread or subinterpreter is not
        # run again here to get one (each item runs once, as the measurements count).
        rerun_failures=False,
    )
    if not values:
        raise ValueError("sample is empty: there is nothing to measure")
    if len(errors) == len(values):  # timings of failures say nothing of the real work
        first = errors[min(errors)]
        # A TypeError over items that are tuples or lists: star=True was likely forgotten.
        star_forgotten = (
            not star
            and isinstance(first, TypeError)
            and isinstance(items[min(errors)], (tuple, list))
        )
        hint = (
            " (star=True calls fn(*item), for items that are argument tuples)"
            if star_forgotten
            else ""
        )
        raise ValueError(
            f"every one of the {len(values)} sample items fn ran raised, so there is no work "
            f"to advise on; the first raised {type(first).__name__}: {first}{hint}"
        ) from first
    return decide_for(fn, found, total)
