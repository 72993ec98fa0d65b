"""``checkpoint_tiny``: what journaling every result costs when the items cost nothing.

``workpool.map(square, range(1_000_000), backend="process")`` three ways, each in a
fresh process, pool start and shutdown included: without a checkpoint (the yardstick,
listed as the peer so that the ratio column divides by it), with ``checkpoint=`` on a
new file (every result pickled and committed), and the same call again on the file a
finished run left (nothing to run: the results are read back and the input checked).
The finished file is made by another process before the timer starts, so the resumed
call starts as cold as the others. Targets: on <= 1.25x off; resume <= 1/3 of on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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
    import workpool

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
        seconds, results = timed(
            lambda: workpool.map(
                square, range(n), backend="process", workers=WORKERS, checkpoint=checkpoint
            )
        )
        size = os.path.getsize(path) if checkpoint else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    check(len(results) == n, f"{len(results)} results for {n} items")
    check(sum(results) == (n - 1) * n * (2 * n - 1) // 6, "sum of squares")
    return Sample({"seconds": seconds, "items_per_s": n / seconds}, {"file_bytes": size})


WORKLOAD = Workload(
    name="checkpoint_tiny",
    summary="workpool.map(x*x) over range(1,000,000) on processes: checkpoint off, on, resumed",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(Metric("items_per_s", "items/s", "higher", "{:,.0f}"),),
    params={"items": 1_000_000},
    quick_params={"items": 1_000_000},
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
