"""Every workload, in the order the report shows them.

Each module here defines one ``WORKLOAD``: what it measures, its parameters, and its
frameworks. Importing them is cheap: pool libraries are imported only when a
framework runs, in its own measurement process.
"""

from __future__ import annotations

from benchmarks.cases import (
    auto_tiny,
    big_array,
    big_result,
    checkpoint_slow,
    checkpoint_tiny,
    cold_start,
    cpu_tasks,
    dask_coarse,
    dask_crash,
    dask_first,
    dask_tiny,
    held_array,
    imap_memory,
    io_threads,
    roundtrip,
    skewed_tasks,
    tiny_imap,
    tiny_map,
    trace_overhead,
    whole_script,
)
from benchmarks.spec import Workload

__all__ = ["WORKLOADS", "get_workload"]

WORKLOADS: tuple[Workload, ...] = (
    tiny_map.WORKLOAD,
    tiny_imap.WORKLOAD,
    cpu_tasks.WORKLOAD,
    skewed_tasks.WORKLOAD,
    roundtrip.WORKLOAD,
    cold_start.WORKLOAD,
    whole_script.WORKLOAD,
    io_threads.WORKLOAD,
    big_array.WORKLOAD,
    big_result.WORKLOAD,
    held_array.WORKLOAD,
    auto_tiny.WORKLOAD,
    imap_memory.WORKLOAD,
    checkpoint_tiny.WORKLOAD,
    checkpoint_slow.WORKLOAD,
    dask_tiny.WORKLOAD,
    dask_coarse.WORKLOAD,
    dask_crash.WORKLOAD,
    dask_first.WORKLOAD,
    trace_overhead.TINY,
    trace_overhead.ONE_MS,
)


def get_workload(name: str) -> Workload:
    """The workload called ``name``; ``KeyError`` lists the valid names."""
    for workload in WORKLOADS:
        if workload.name == name:
            return workload
    known = ", ".join(w.name for w in WORKLOADS)
    raise KeyError(f"no workload {name!r} (known: {known})")
