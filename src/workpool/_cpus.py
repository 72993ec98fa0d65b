"""How many CPUs this process may really use: affinity mask and cgroup quota included."""

from __future__ import annotations

import math
import os

__all__ = ["usable_cpus"]


def _affinity_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def _cgroup_quota_cpus() -> float | None:
    """The CPU limit set by a cgroup v2 ``cpu.max`` or v1 ``cfs_quota``, if any."""
    try:
        v2 = _read("/sys/fs/cgroup/cpu.max")
        if v2 is not None:
            quota, period = v2.split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1_quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        v1_period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if v1_quota is not None and v1_period is not None and int(v1_quota) > 0:
            return int(v1_quota) / int(v1_period)
    except ValueError:
        return None
    return None


def usable_cpus() -> int:
    """CPUs this process can run on: the smaller of its affinity mask and cgroup quota."""
    count = _affinity_cpus()
    quota = _cgroup_quota_cpus()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    if hasattr(os, "process_cpu_count"):  # 3.13+: honours PYTHON_CPU_COUNT
        count = min(count, os.process_cpu_count() or count)
    return max(1, count)
