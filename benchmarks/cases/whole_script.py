"""``whole_script``: the commonest program, timed as a user meets it, from launch to exit.

A script imports the library, maps a function over 8 items on 2 processes, prints the
results and exits. Each measurement runs that script ``runs`` times as a new
interpreter (``python script.py``) and reports the median: the interpreter's start,
every import, the pool's start and shutdown and the interpreter's exit are all in it,
and nothing the harness itself imported is (``cold_start`` times the pool in a process
that has already imported the harness). Metrics, in milliseconds: wall time from
launch to exit, and the CPU time of the script and its children.

Two function kinds: one defined in the script (``__main__``; workpool sends it by
value), and one importable by name (``operator.neg``). The ``python`` row runs the same
script with the built-in ``map``: the interpreter's own start and exit, the floor.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from benchmarks.measure import check
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload

# The lines that map ``fn`` over ``ITEMS`` and print the results, per library.
MAPS = {
    "workpool": (
        "import workpool",
        f"print(workpool.map(fn, ITEMS, backend='process', workers={WORKERS}))",
    ),
    "mp": (
        "import multiprocessing",
        f"with multiprocessing.Pool({WORKERS}) as pool:\n    print(pool.map(fn, ITEMS))",
    ),
    "ppe": (
        "from concurrent.futures import ProcessPoolExecutor",
        f"with ProcessPoolExecutor({WORKERS}) as pool:\n    print(list(pool.map(fn, ITEMS)))",
    ),
    "python": ("", "print(list(map(fn, ITEMS)))"),
}

FUNCTIONS = {
    "main": "def fn(x):\n    return x * x",  # sent by value: it lives in __main__
    "importable": "from operator import neg as fn",  # sent by name
}

ITEMS = range(8)
EXPECTED = {"main": [x * x for x in ITEMS], "importable": [-x for x in ITEMS]}


def script(library: str, function: str) -> str:
    """The program: imports at the top, the work under the ``__main__`` guard."""
    imports, work = MAPS[library]
    body = "\n".join("    " + line for line in work.splitlines())
    return (
        f"{imports}\n{FUNCTIONS[function]}\nITEMS = range({len(ITEMS)})\n\n"
        f'if __name__ == "__main__":\n{body}\n'
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_script(library: str, function: str, params: Mapping[str, Any]) -> Sample:
    """Run the script ``runs`` times; the median wall and CPU milliseconds of a run."""
    runs = int(params["runs"])
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "script.py")
        with open(path, "w") as file:
            file.write(script(library, function))
        for _ in range(runs):
            cpu_before = _children_cpu()
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, path], cwd=directory, capture_output=True, text=True
            )
            walls.append((time.perf_counter() - start) * 1000)
            cpus.append((_children_cpu() - cpu_before) * 1000)
            check(done.returncode == 0, f"the script failed: {done.stderr[-2000:]}")
            check(done.stdout.strip() == str(EXPECTED[function]), f"printed {done.stdout!r}")
    return Sample(
        {"ms": statistics.median(walls), "cpu_ms": statistics.median(cpus)},
        {"runs": runs, "min_ms": min(walls), "max_ms": max(walls)},
    )


def _framework(library: str, function: str, label: str, **kwargs: Any) -> Framework:
    key = library if function == "main" else f"{library}_{function}"
    return Framework(key, label, partial(run_script, library, function), **kwargs)


WORKLOAD = Workload(
    name="whole_script",
    summary=f"a script maps a function over 8 items on {WORKERS} processes: launch to exit",
    primary=Metric("ms", "ms", "lower", "{:,.1f}"),
    extras=(Metric("cpu_ms", "CPU ms", "lower", "{:,.1f}", ratio=True),),
    params={"runs": 9},
    quick_params={"runs": 5},
    frameworks=(
        _framework("workpool", "main", "workpool.map, __main__ function", role="workpool"),
        _framework("mp", "main", "multiprocessing.Pool.map, __main__ function"),
        _framework("ppe", "main", "ProcessPoolExecutor.map, __main__ function"),
        # Reference rows: the same with a function importable by name, and no pool.
        _framework(
            "workpool",
            "importable",
            "workpool.map, operator.neg",
            role="reference",
        ),
        _framework("mp", "importable", "multiprocessing.Pool.map, operator.neg", role="reference"),
        _framework("python", "main", "the built-in map (no pool)", role="reference"),
    ),
)
