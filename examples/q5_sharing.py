"""Notebook question 5: the ways to share data between processes, measured on one job.

The notebook lists ``multiprocessing.Queue``, ``Pipe``, ``Value``, ``Array`` and
``shared_memory`` as the tools for sharing data between processes. This example gives
every one of them (and ``workpool``) the same job, so that what each costs can be
compared: two worker processes get a large block of float64 numbers (200 MB unless
``--size-mb`` says otherwise), each sums its part, and the parent checks the total
against ``numpy.sum`` over the whole block.

For every way the example reports the wall time of the whole job (starting the
workers, handing the data over, summing, collecting the sums), how many extra copies
of the block it makes (counted from what the method does, not measured), and, when
``psutil`` is installed, the peak extra memory of the whole process tree while it ran.
That peak is a sum of PSS (proportional set size), sampled every few milliseconds by a
helper process: plain RSS would count a page of shared memory once in every process
that maps it and make sharing look like copying.

What the numbers show: ``Queue`` and ``Pipe`` pickle the data, so every byte is copied
out of the parent and rebuilt in the child; ``Array``, ``shared_memory`` and workpool
copy the block once into memory that all processes map. ``Value`` holds one number, so
it is shown doing what it is for: a shared running total behind a lock. The last way
lets the workers write into a block the parent owns. The closing lines turn the
numbers into advice on when copying is the right choice anyway.

Worker functions live at module level and the work starts under the ``__main__``
guard, so the example runs with any start method (fork, forkserver or spawn).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import multiprocessing as mp
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import workpool

MB = 1 << 20
WORKERS = 2  # processes in every way
PARTS = 4  # the workpool ways run 4 tasks, a quarter of the block each, on the 2 workers
SAMPLE_SECONDS = 0.005  # how often the memory watcher samples
DEV_SHM = "/dev/shm"


def named_segments() -> set[str]:
    """The shared-memory segments in /dev/shm.

    Semaphores (``sem.*``) live there too, but come and go with every multiprocessing
    Lock of every program on the machine: they say nothing about this one.
    """
    if not os.path.isdir(DEV_SHM):
        return set()
    return {name for name in os.listdir(DEV_SHM) if not name.startswith("sem.")}


Array = np.ndarray[Any, np.dtype[np.float64]]


def part_bounds(length: int, parts: int, part: int) -> tuple[int, int]:
    """Start and stop of part ``part`` when ``length`` items are cut into ``parts``."""
    return length * part // parts, length * (part + 1) // parts


# How many times sending an array through a Queue or a Pipe copies each byte, counted
# from what the standard library does (and checked with tracemalloc on Python 3.11):
# - the parent pickles it. With pickle protocol 4, the default before Python 3.14, NumPy
#   first turns the array into a bytes object, which the pickler copies into its stream:
#   2 copies. With protocol 5 the pickler copies the array's memory straight in: 1.
# - the child reads the stream from the pipe into a buffer (1), and unpickling copies
#   it into the bytes object the new array then uses as its memory (1).
# The copies are made in passing, so fewer are alive at any one time.
PICKLING_COPIES = 1 if pickle.DEFAULT_PROTOCOL >= 5 else 2
PICKLED_COPIES = PICKLING_COPIES + 2
PICKLED_HOW = (
    f"made in passing, {PICKLING_COPIES} in the parent to pickle each half and 2 in the "
    "child to receive and unpickle it"
)


def halves(data: Array) -> list[Array]:
    return [data[slice(*part_bounds(len(data), WORKERS, i))] for i in range(WORKERS)]


# --- 1. multiprocessing.Queue: the data is pickled into the queue --------------------------


def queue_worker(tasks: mp.Queue[Array], results: mp.Queue[float]) -> None:
    part = tasks.get()  # unpickled here: this process's own copy
    results.put(float(part.sum()))


def via_queue(data: Array) -> float:
    tasks: mp.Queue[Array] = mp.Queue()
    results: mp.Queue[float] = mp.Queue()
    procs = [mp.Process(target=queue_worker, args=(tasks, results)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    for half in halves(data):
        tasks.put(half)  # a background thread pickles it and writes it to a pipe
    total = sum(results.get() for _ in procs)
    for proc in procs:
        proc.join()
    tasks.close()
    tasks.join_thread()  # the queue's feeder thread is gone before the next fork
    return total


# --- 2. multiprocessing.Pipe: the same, one pipe per worker --------------------------------


def pipe_worker(conn: Connection) -> None:
    part = conn.recv()  # unpickled here: this process's own copy
    conn.send(float(part.sum()))
    conn.close()


def via_pipe(data: Array) -> float:
    pipes = [mp.Pipe() for _ in range(WORKERS)]
    procs = [mp.Process(target=pipe_worker, args=(child,)) for _, child in pipes]
    for proc in procs:
        proc.start()
    for (parent, child), half in zip(pipes, halves(data)):
        child.close()  # the worker holds its end now
        parent.send(half)  # pickled whole, then written while the worker reads
    total = 0.0
    for parent, _ in pipes:
        total += parent.recv()
        parent.close()
    for proc in procs:
        proc.join()
    return total


# --- 3. multiprocessing.Array: one copy into shared memory, workers look at it -------------


def array_worker(raw: Any, start: int, stop: int, results: mp.Queue[float]) -> None:
    block = np.frombuffer(raw, dtype=np.float64)  # a view of the shared memory, no copy
    results.put(float(block[start:stop].sum()))


def via_array(data: Array) -> float:
    # RawArray is Array(..., lock=False): no lock, since the workers only read it.
    raw = mp.RawArray("d", len(data))
    np.frombuffer(raw, dtype=np.float64)[:] = data  # the one copy
    results: mp.Queue[float] = mp.Queue()  # the sums are two floats: a queue is fine
    procs = [
        mp.Process(target=array_worker, args=(raw, *part_bounds(len(data), WORKERS, i), results))
        for i in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    total = sum(results.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total


# --- 4. multiprocessing.Value: not for bulk data, but a shared total under a lock ---------


def value_worker(raw: Any, start: int, stop: int, total: Any) -> None:
    partial = float(np.frombuffer(raw, dtype=np.float64)[start:stop].sum())
    # "+=" reads, adds and writes back: two workers doing it at once could lose one
    # sum, so it happens under the Value's own lock.
    with total.get_lock():
        total.value += partial


def via_value(data: Array) -> float:
    # A Value holds one C number (here 8 bytes); the block itself still needs a way in,
    # so it travels in a RawArray as in (3). The Value replaces the results queue.
    raw = mp.RawArray("d", len(data))
    np.frombuffer(raw, dtype=np.float64)[:] = data  # the one copy
    total = mp.Value("d", 0.0)  # lock=True by default
    procs = [
        mp.Process(target=value_worker, args=(raw, *part_bounds(len(data), WORKERS, i), total))
        for i in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return float(total.value)


# --- 5. shared_memory.SharedMemory: a named segment the workers attach to ------------------


def shm_worker(name: str, length: int, start: int, stop: int, results: mp.Queue[float]) -> None:
    segment = shared_memory.SharedMemory(name=name)  # attach by name
    try:
        block = np.ndarray((length,), dtype=np.float64, buffer=segment.buf)
        results.put(float(block[start:stop].sum()))
        del block  # the buffer cannot be closed while an array still uses it
    finally:
        segment.close()  # unmaps it here; the segment itself lives on


def via_shared_memory(data: Array) -> float:
    segment = shared_memory.SharedMemory(create=True, size=data.nbytes)
    try:
        block = np.ndarray(data.shape, dtype=data.dtype, buffer=segment.buf)
        block[:] = data  # the one copy
        del block
        results: mp.Queue[float] = mp.Queue()
        procs = [
            mp.Process(
                target=shm_worker,
                args=(segment.name, len(data), *part_bounds(len(data), WORKERS, i), results),
            )
            for i in range(WORKERS)
        ]
        for proc in procs:
            proc.start()
        total = sum(results.get() for _ in procs)
        for proc in procs:
            proc.join()
        return total
    finally:
        # The segment has a name in /dev/shm, and the name outlives every process that
        # uses it: close() only unmaps it from one process. Without unlink() the memory
        # stays taken, as a file in /dev/shm, until someone removes it or the machine
        # reboots. Python's resource tracker unlinks forgotten segments when the program
        # ends, warning about "leaked shared_memory objects", but that is a safety net
        # which a SIGKILL of the process group takes away. So: unlink() in a finally,
        # first (removing the name while it is still mapped is allowed), then close().
        segment.unlink()
        segment.close()


# --- 6. workpool.map: big arrays go through shared memory by themselves --------------------


def part_sum(data: Array, part: int) -> tuple[float, bool, int]:
    """The sum of quarter ``part``; whether the worker could write to the block; its pid."""
    start, stop = part_bounds(len(data), PARTS, part)
    return float(data[start:stop].sum()), bool(data.flags.writeable), os.getpid()


def via_workpool_map(data: Array) -> float:
    # The same array in all 4 tasks: copied into one anonymous segment for the call,
    # sent to each worker as a reference, mapped read-only there, freed after the call.
    results = workpool.map(
        part_sum, itertools.repeat(data, PARTS), range(PARTS), backend="process", workers=WORKERS
    )
    writable = {w for _, w, _ in results}
    pids = {pid for _, _, pid in results}
    print(
        f"   workers saw the block {'WRITABLE' if any(writable) else 'read-only'}; "
        f"{PARTS} tasks ran in {len(pids)} worker process{'es' if len(pids) != 1 else ''}"
    )
    return sum(s for s, _, _ in results)


# --- 7. workpool.share(writable=True): workers write, the parent reads ---------------------


def prefix_sums(data: Array, out: Array, row: int) -> None:
    """Fill row ``row`` of ``out`` with the running sums of quarter ``row`` of ``data``.

    Each task writes only its own row, so no two workers ever write the same bytes and
    no lock is needed. Writes that could overlap (say, every task adding into one
    total) would need what the notebook's threads used, a Lock, here one that works
    across processes. A ``multiprocessing.Lock`` travels only by inheritance, so it
    cannot be handed to workpool's workers, even in ``initargs``; a
    ``multiprocessing.Manager().Lock()`` can, at a round trip to the manager per use.
    Giving each worker a slice of its own, as here, is simpler and costs nothing.
    """
    start, stop = part_bounds(len(data), PARTS, row)
    np.cumsum(data[start:stop], out=out[row, : stop - start])


def via_workpool_share(data: Array) -> float:
    # The output block is created in shared memory, writable by the workers; the input
    # travels as in (6). The workers return nothing: the parent reads their writes.
    out = workpool.share(np.zeros((PARTS, len(data) // PARTS)), writable=True)
    workpool.map(
        prefix_sums,
        itertools.repeat(data, PARTS),
        itertools.repeat(out, PARTS),
        range(PARTS),
        backend="process",
        workers=WORKERS,
    )
    last = out[:, -1]  # each row's last running sum is its quarter's sum
    print(f"   the parent reads the workers' writes: last column = {last}")
    return float(last.sum())


# --- measuring --------------------------------------------------------------------------


def watch_tree(conn: Connection, root_pid: int) -> None:
    """Helper process: the peak PSS of ``root_pid`` and its descendants, between start/stop.

    It runs in a process of its own so that the parent has no sampling thread (forking
    a process that runs threads is unsafe) and is never too busy to be sampled.
    """
    import psutil

    me = os.getpid()
    root = psutil.Process(root_pid)

    def tree_pss() -> int:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in procs:
            if proc.pid == me:
                continue
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:  # ended, or became a zombie, while we looked
                continue
        return total

    try:
        while conn.recv() == "start":
            baseline = peak = tree_pss()
            conn.send("ready")
            while not conn.poll(SAMPLE_SECONDS):
                peak = max(peak, tree_pss())
            conn.recv()  # "stop"
            conn.send((max(peak, tree_pss()) - baseline) / MB)
    except (EOFError, OSError):  # the parent closed its end: it is done with us
        pass


class MemoryWatcher:
    """Peak extra memory (PSS, MB) of this process tree while a block of code runs."""

    def __init__(self) -> None:
        self._conn, child = mp.Pipe()
        self._proc = mp.Process(target=watch_tree, args=(child, os.getpid()), daemon=True)
        self._proc.start()
        child.close()

    def start(self) -> None:
        self._conn.send("start")
        self._conn.recv()  # the baseline is taken

    def stop(self) -> float:
        self._conn.send("stop")
        return float(self._conn.recv())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("quit")
        self._conn.close()  # also ends the watcher if it was in the middle of a sample
        self._proc.join(timeout=5)


@dataclass
class Row:
    label: str
    seconds: float
    copies: int | None  # extra copies of the block; None: no data travels
    peak_mb: float | None  # peak extra memory of the process tree, or None if unmeasured
    how: str


def measure(
    label: str,
    method: Callable[[Array], float | None],
    data: Array,
    expected: float,
    watcher: MemoryWatcher | None,
    copies: int | None,
    how: str,
) -> Row:
    """Run one way, check its total, print what it cost and return its row."""
    print(label)
    if watcher is not None:
        watcher.start()
    start = time.perf_counter()
    total = method(data)
    seconds = time.perf_counter() - start
    peak = watcher.stop() if watcher is not None else None
    if total is not None and not math.isclose(total, expected, rel_tol=1e-9, abs_tol=1e-9):
        raise SystemExit(f"{label}: total {total!r} != numpy's {expected!r}")
    outcome = "sum ok" if total is not None else "done"
    memory = f", peak +{peak:.0f} MB" if peak is not None else ""
    counted = f"{copies} extra cop{'y' if copies == 1 else 'ies'}" if copies is not None else ""
    print(f"   {outcome} in {seconds:.3f} s{memory}; {counted or 'no data'}: {how}")
    return Row(label, seconds, copies, peak, how)


def noop_worker() -> None:
    pass


def start_only(data: Array) -> None:
    """Start and join two multiprocessing workers that get no data: the start-up cost."""
    procs = [mp.Process(target=noop_worker) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()


def noop(x: int) -> int:
    return x


# --- the whole comparison -------------------------------------------------------------


WAYS: list[tuple[str, Callable[[Array], float], int, str]] = [
    ("1. multiprocessing.Queue", via_queue, PICKLED_COPIES, PICKLED_HOW),
    ("2. multiprocessing.Pipe", via_pipe, PICKLED_COPIES, PICKLED_HOW),
    (
        "3. multiprocessing.RawArray",
        via_array,
        1,
        "the parent copies the block into the array once; the workers view it",
    ),
    (
        "4. multiprocessing.Value",
        via_value,
        1,
        "the block goes in a RawArray as in 3; the Value only holds the 8-byte total",
    ),
    (
        "5. shared_memory.SharedMemory",
        via_shared_memory,
        1,
        "the parent copies the block into a named segment once; unlinked at the end",
    ),
    (
        "6. workpool.map (automatic)",
        via_workpool_map,
        1,
        "workpool copies the block into an anonymous segment once for the call",
    ),
    (
        "7. workpool.share(writable)",
        via_workpool_share,
        1,
        "the input as in 6; the output, as big again, is written in place, not copied back",
    ),
]


def print_table(rows: list[Row]) -> None:
    width = max(len(row.label) for row in rows)
    print(f"{'way':<{width}}  {'seconds':>8}  {'extra copies':>12}  {'peak extra MB':>13}")
    for row in rows:
        copies = "-" if row.copies is None else str(row.copies)
        peak = "n/a" if row.peak_mb is None else f"{row.peak_mb:.0f}"
        print(f"{row.label:<{width}}  {row.seconds:>8.3f}  {copies:>12}  {peak:>13}")


def advice(rows: list[Row], size_mb: int) -> list[str]:
    """Two or three sentences, from the measurements, on when copying is right anyway."""
    by_label = {row.label.split(". ", 1)[-1]: row for row in rows}
    startup = by_label["start 2 processes, no data"].seconds
    copying = min(
        by_label["multiprocessing.Queue"].seconds, by_label["multiprocessing.Pipe"].seconds
    )
    sharing = min(
        by_label[name].seconds
        for name in ("multiprocessing.RawArray", "shared_memory.SharedMemory")
    )
    extra = copying - sharing
    lines = []
    if extra > 0:
        per_mb = extra / size_mb
        lines.append(
            f"Handing {size_mb} MB over by copy (the faster of Queue and Pipe, {copying:.3f} s) "
            f"cost {extra:.3f} s more than one copy into shared memory (the faster of RawArray "
            f"and SharedMemory, {sharing:.3f} s): about {per_mb * 1000:.2f} ms per MB."
        )
        lines.append(
            f"Starting {WORKERS} processes costs {startup:.3f} s whatever they are given, so "
            f"below about {startup / per_mb:,.1f} MB the copy costs less than that start-up: "
            "for small data, copying is the right choice, simpler and with nothing to unlink "
            "or guard."
        )
    else:
        lines.append(
            f"At {size_mb} MB, copying (the faster of Queue and Pipe, {copying:.3f} s) was no "
            f"slower than shared memory ({sharing:.3f} s), with {startup:.3f} s spent just "
            f"starting {WORKERS} processes: for data this small, copying is the right choice, "
            "simpler and with nothing to unlink or guard."
        )
    queue_peak = by_label["multiprocessing.Queue"].peak_mb
    memory = f" (for +{queue_peak:.0f} MB at the peak here)" if queue_peak is not None else ""
    lines.append(
        "Copying is also right when workers change the data they are given: each may "
        f"scribble on its private copy{memory} without a lock and without the others "
        f"seeing, while the {size_mb} MB block that way 7's workers wrote in place is safe "
        "only because each of them writes rows no other touches."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb", type=int, default=200, help="size of the block of numbers (default 200)"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="do not sample memory (no psutil needed)"
    )
    args = parser.parse_args()
    if args.size_mb < 1:
        parser.error("--size-mb must be at least 1")

    dev_shm_before = named_segments()
    # The watcher starts first, before the block exists, so that it shares none of it.
    watcher = None if args.no_memory or find_spec("psutil") is None else MemoryWatcher()
    try:
        length = args.size_mb * MB // 8 // PARTS * PARTS  # float64s, a multiple of PARTS
        data = np.arange(length, dtype=np.float64)
        expected = float(data.sum())
        print(
            f"{length:,} float64 numbers ({data.nbytes / MB:.0f} MB), {WORKERS} worker "
            f"processes, start method {mp.get_start_method()!r}; numpy's sum: {expected:.6g}"
        )
        if watcher is None:
            print("(peak memory not measured: psutil is not installed or --no-memory)")
        # Warm up, untimed, what the first use of each kind starts once per program: a
        # fork server (under forkserver), workpool's own, and the resource tracker that
        # SharedMemory registers its segments with.
        start_only(data[:1])
        workpool.map(noop, range(WORKERS), backend="process", workers=WORKERS)
        resource_tracker.ensure_running()
        print()

        rows = [
            measure(
                "0. start 2 processes, no data",
                start_only,
                data,
                expected,
                watcher,
                None,
                "start-up cost alone",
            )
        ]
        for label, method, copies, how in WAYS:
            rows.append(measure(label, method, data, expected, watcher, copies, how))
    finally:
        if watcher is not None:
            watcher.close()

    print()
    print_table(rows)
    print()
    print(
        "extra copies: whole copies of the block each way makes, counted from what it does;"
        " peak extra MB: the highest PSS of the process tree above its level before the way"
        f" started, sampled every {SAMPLE_SECONDS * 1000:.0f} ms (short peaks can be missed)."
    )
    print()
    for line in advice(rows, args.size_mb):
        print(line)

    left = named_segments() - dev_shm_before
    print()
    if left:
        raise SystemExit(f"left behind in {DEV_SHM}: {sorted(left)}")
    print(f"{DEV_SHM}: nothing left behind")


if __name__ == "__main__":
    main()
