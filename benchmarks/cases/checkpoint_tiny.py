"""``checkpoint_tiny``: what journaling every result costs when the items cost nothing.

``workpool.map(square, range(1_000_000), backend="process")`` three ways, each in a
fresh process, pool start and shutdown included: without a checkpoint (the yardstick,
listed as the peer so that the ratio column divides by it), with ``checkpoint=`` on a
new file (every result pickled and committed), and the same call again on the file a
finished run left (nothing to run: the results are read back and the input checked).
The finished file is made by another process before the timer starts, so the resumed
call starts as cold as the others. Targets: on <= 1.25x off; resume <= 1/3 of on.

The three run side by side in every repetition, so each repetition gives a pair of
ratios: ``on/off`` and ``resume/on`` (the medians of those are the numbers to read on a
busy machine, where the wall time of a 0.2 s call swings by half). The calling
process's CPU time is reported too: everything journaling adds happens there (the
writer is one of its threads), and other work on the machine disturbs it far less.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import square

_FINISH = (
    "import sys, workpool\n"
    "from benchmarks.workloads import square\n"
    "workpool.map(square, range(int(sys.argv[2])), backend='process', workers=int(sys.argv[3]),"
    " checkpoint=sys.argv[1])\n"
)


def run_checkpoint(how: str, params: Mapping[str, Any]) -> Sample:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    n = int(params["items"])
    directory = tempfile.mkdtemp(prefix="workpool-bench-")
    path = os.path.join(directory, "run.ckpt")
    try:
        if how == "resume":  # a finished run's file, made by another process
            subprocess.run(
                [sys.executable, "-c", _FINISH, path, str(n), str(WORKERS)],
                check=True,
                cwd=os.getcwd(),
            )
        checkpoint = None if how == "off" else path
        cpu = time.process_time()
        seconds, results = timed(
            lambda: workpool.map(
                square, range(n), backend="process", workers=WORKERS, checkpoint=checkpoint
            )
        )
        cpu = time.process_time() - cpu
        size = os.path.getsize(path) if checkpoint else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    check(len(results) == n, f"{len(results)} results for {n} items")
    check(sum(results) == (n - 1) * n * (2 * n - 1) // 6, "sum of squares")
    metrics = {"seconds": seconds, "cpu_seconds": cpu, "items_per_s": n / seconds}
    return Sample(metrics, {"file_bytes": size})


def add_ratios(samples: dict[str, list[dict[str, float]]], context: Mapping[str, Any]) -> None:
    """Give "on" its ratio to the "off" run of its repetition, "resume" its ratio to "on"."""
    off, on, resume = (samples.get(key, []) for key in ("off", "on", "resume"))
    # A failed run breaks the pairing: say nothing rather than guess.
    if len(on) == len(off):
        for this, other in zip(on, off):
            this["ratio"] = this["seconds"] / other["seconds"]
            this["cpu_ratio"] = this["cpu_seconds"] / other["cpu_seconds"]
    if len(resume) == len(on):
        for this, other in zip(resume, on):
            this["ratio"] = this["seconds"] / other["seconds"]
            this["cpu_ratio"] = this["cpu_seconds"] / other["cpu_seconds"]


WORKLOAD = Workload(
    name="checkpoint_tiny",
    summary="workpool.map(x*x) over range(1,000,000) on processes: checkpoint off, on, resumed",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(
        Metric("ratio", "paired: on/off, resume/on", "lower", "{:.2f}x"),
        Metric("cpu_seconds", "caller CPU s", "lower", "{:.3f}"),
        Metric("cpu_ratio", "paired caller CPU ratio", "lower", "{:.2f}x"),
        Metric("items_per_s", "items/s", "higher", "{:,.0f}"),
    ),
    params={"items": 1_000_000},
    quick_params={"items": 1_000_000},
    derive=add_ratios,
    frameworks=(
        Framework(
            "off",
            "workpool.map, no checkpoint (yardstick)",
            partial(run_checkpoint, "off"),
            role="peer",
        ),
        Framework(
            "on",
            "workpool.map, checkpoint= on a new file",
            partial(run_checkpoint, "on"),
            role="workpool",
        ),
        Framework(
            "resume",
            "workpool.map, checkpoint= of a finished run",
            partial(run_checkpoint, "resume"),
            role="workpool",
        ),
    ),
)
