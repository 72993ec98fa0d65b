"""``checkpoint_slow``: journaling beside items that take 10 ms each.

``workpool.map(nap, range(400), backend="process")`` where each item sleeps 10 ms, with
and without ``checkpoint=`` (a new file), each in a fresh process. Journaling happens
beside the work, on a thread of its own, so the two should differ by noise only; the
ratio column is checkpoint on over off (the "off" row is listed as the peer).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import nap


def run_naps(checkpointed: bool, params: Mapping[str, Any]) -> Sample:
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()

    n = int(params["items"])
    directory = tempfile.mkdtemp(prefix="workpool-bench-")
    path = os.path.join(directory, "run.ckpt") if checkpointed else None
    try:
        seconds, results = timed(
            lambda: workpool.map(nap, range(n), backend="process", workers=WORKERS, checkpoint=path)
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    check(results == list(range(n)), "results out of order or missing")
    ideal = n * 0.01 / WORKERS
    return Sample({"seconds": seconds, "over_ideal": seconds / ideal})


WORKLOAD = Workload(
    name="checkpoint_slow",
    summary="workpool.map over 400 items of 10 ms on processes: checkpoint off and on",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(Metric("over_ideal", "wall / ideal", "lower", "{:.3f}"),),
    params={"items": 400},
    frameworks=(
        Framework(
            "off",
            "workpool.map, no checkpoint (yardstick)",
            partial(run_naps, False),
            role="peer",
        ),
        Framework(
            "on",
            "workpool.map, checkpoint= on a new file",
            partial(run_naps, True),
            role="workpool",
        ),
    ),
)
