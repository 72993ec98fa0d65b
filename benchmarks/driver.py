"""The driver: plans the runs, interleaves frameworks across repetitions, collects samples.

Every measurement is a fresh ``python -m benchmarks.run_one`` process. Within a
workload, repetition ``r`` runs every framework once, in a base order (shuffled once
with a seed) rotated by ``r``: each framework takes every position in turn, so a
machine that gets busier or quieter during the run penalises all frameworks alike
instead of whichever happened to run last.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.machine import load_average
from benchmarks.peers import missing
from benchmarks.spec import Framework, Workload

__all__ = ["Measurement", "Plan", "WorkloadRun", "plan_workload", "run_workload"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    """One repetition of one framework: its numbers, or why it has none."""

    rep: int
    position: int
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rep": self.rep,
            "position": self.position,
            "metrics": self.metrics,
            "info": self.info,
            "error": self.error,
        }


@dataclass
class Plan:
    """Which frameworks of a workload will run, and a note for each one that will not."""

    workload: Workload
    frameworks: list[Framework]
    skipped: list[str]


@dataclass
class WorkloadRun:
    """Everything measured for one workload: per framework, every repetition."""

    workload: Workload
    frameworks: list[Framework]
    params: dict[str, dict[str, Any]]  # framework key -> parameters it ran with
    context: dict[str, Any]  # workload parameters plus calibration results
    calibration: dict[str, Any]
    measurements: dict[str, list[Measurement]]
    skipped: list[str]
    seconds: float = 0.0


def _selected(framework: Framework, selection: Sequence[str] | None) -> bool:
    """``--frameworks mp`` selects ``mp`` and its variants such as ``mp_c1000``."""
    if not selection:
        return True
    return any(framework.key == s or framework.key.startswith(s + "_") for s in selection)


def plan_workload(workload: Workload, selection: Sequence[str] | None) -> Plan:
    """The frameworks to run: those selected whose libraries are installed."""
    skipped: list[str] = []
    absent = missing(workload.needs)
    if absent:
        note = f"{workload.name}: skipped, {', '.join(absent)} not installed"
        return Plan(workload, [], [note])
    chosen: list[Framework] = []
    for framework in workload.frameworks:
        if not _selected(framework, selection):
            continue
        absent = missing(framework.needs)
        if absent:
            skipped.append(
                f"{workload.name}/{framework.key}: skipped, {', '.join(absent)} not installed"
            )
            continue
        chosen.append(framework)
    return Plan(workload, chosen, skipped)


def _child_env() -> dict[str, str]:
    """This environment, with the repository root importable in every child and worker."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    """The measurement's record: the last stdout line that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "metrics" in record:
                return record
    return None


def _error_summary(stderr: str, fallback: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else fallback


def _run_isolated(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run ``command`` in a new session; on timeout kill its whole process group.

    Killing only the measurement process would orphan its pool's workers (and a fork
    server), which could then linger and load the machine for every later
    measurement; a session of its own lets us take them all down together.
    """
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return process.returncode, stdout, stderr


def measure_once(
    workload: Workload, framework: Framework, params: dict[str, Any], timeout: float
) -> tuple[dict[str, float], dict[str, Any], str | None]:
    """Run one measurement process; its metrics, info, and an error message or None.

    The driver adds ``process_ms``, the child's life from launch to exit as seen from
    here, and the machine's load average just before the launch.
    """
    command = [
        sys.executable,
        "-m",
        "benchmarks.run_one",
        workload.name,
        framework.key,
        "--params",
        json.dumps(params),
    ]
    info: dict[str, Any] = {"load_1m_before": load_average()}
    start = time.perf_counter()
    try:
        returncode, stdout, stderr = _run_isolated(command, timeout)
    except subprocess.TimeoutExpired:
        return {}, info, f"timed out after {timeout:g} s (its process group was killed)"
    process_ms = (time.perf_counter() - start) * 1000
    record = _last_json_line(stdout)
    if returncode != 0 or record is None:
        return {}, info, _error_summary(stderr, f"exit status {returncode}, no result")
    metrics = {k: float(v) for k, v in record["metrics"].items()}
    metrics["process_ms"] = process_ms
    info.update(record.get("info", {}))
    return metrics, info, None


def run_workload(
    plan: Plan,
    *,
    reps: int,
    quick: bool,
    seed: int,
    timeout: float,
    on_progress: Callable[[str], None] = lambda _: None,
) -> WorkloadRun:
    """Measure every planned framework ``reps`` times, interleaved and rotated."""
    workload = plan.workload
    started = time.perf_counter()
    context: dict[str, Any] = dict(workload.params)
    if quick:
        context.update(workload.quick_params)
    calibration: dict[str, Any] = {}
    if workload.calibrate is not None and plan.frameworks:
        on_progress(f"{workload.name}: calibrating")
        calibration = workload.calibrate(context)
        context.update(calibration)
    params = {
        f.key: {**workload.params_for(f, quick=quick), **calibration} for f in plan.frameworks
    }
    order = list(plan.frameworks)
    random.Random(f"{seed}:{workload.name}").shuffle(order)
    measurements: dict[str, list[Measurement]] = {f.key: [] for f in plan.frameworks}
    for rep in range(reps):
        shift = rep % len(order) if order else 0
        for position, framework in enumerate(order[shift:] + order[:shift]):
            on_progress(f"{workload.name}: rep {rep + 1}/{reps}, {framework.key}")
            metrics, info, error = measure_once(workload, framework, params[framework.key], timeout)
            measurements[framework.key].append(Measurement(rep, position, metrics, info, error))
    if workload.derive is not None:
        successful = {
            key: [m.metrics for m in runs if m.error is None] for key, runs in measurements.items()
        }
        workload.derive(successful, context)
    return WorkloadRun(
        workload=workload,
        frameworks=plan.frameworks,
        params=params,
        context=context,
        calibration=calibration,
        measurements=measurements,
        skipped=plan.skipped,
        seconds=time.perf_counter() - started,
    )
