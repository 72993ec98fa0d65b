"""How many CPUs this process may really use: affinity mask and cgroup quota included."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus"]


def _affinity_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cgroup_quota_cpus() -> float | None:
    """The CPU limit set by a cgroup v2 ``cpu.max`` or v1 ``cfs_quota``, if any."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
            return None
        v1_quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        v1_period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text())
            if quota_us > 0:
                return quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
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
