"""Facts about the machine and the software under test, printed before any table.

Benchmark numbers mean little without them: the CPUs this process may use, the
interpreter, and the exact versions of workpool and every peer.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import sysconfig
from typing import Any

from benchmarks.peers import OPTIONAL, version

__all__ = ["collect_facts", "load_average"]

# Environment variables that change what a measurement means when they are set.
RELEVANT_ENV = (
    "PYTHONDONTWRITEBYTECODE",  # modules without a cached .pyc compile at every import
    "PYTHONPYCACHEPREFIX",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
)


def load_average() -> float | None:
    """The 1-minute load average, a rough sign of a busy (noisy) machine."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


def collect_facts() -> dict[str, Any]:
    """Everything a reader needs to judge the numbers, as JSON-ready values."""
    return {
        "usable_cpus": _usable_cpus(),
        "os_cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "executable": sys.executable,
        "platform": platform.platform(),
        "mp_default_start_method": multiprocessing.get_start_method(allow_none=False),
        "load_average_1m": load_average(),
        "environment": {name: os.environ[name] for name in RELEVANT_ENV if name in os.environ},
        "versions": {
            "workpool": version("workpool"),
            **{dist: version(dist) for dist in OPTIONAL.values()},
        },
    }
