"""The scaling study as a table, in words, and as JSON."""

from __future__ import annotations

import json
import multiprocessing
import platform
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import workpool
from workpool._cpus import usable_cpus
from workpool.backends.process import default_start_method
from workpool.bench.runner import Configuration, WorkloadResult

__all__ = ["machine_facts", "print_report", "summarize", "write_json"]


def machine_facts() -> dict[str, Any]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "usable_cpus": usable_cpus(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "free_threaded": not gil,
        "platform": platform.platform(),
        "start_method": default_start_method(),
        "available_start_methods": multiprocessing.get_all_start_methods(),
        "workpool": workpool.__version__,
    }


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _best(result: WorkloadResult, backend: str) -> Configuration | None:
    configs = [c for c in result.pooled if c.backend == backend]
    return min(configs, key=lambda c: c.median) if configs else None


SCALES = 1.5  # a speedup at least this large counts as "runs in parallel"
TIE = 0.05  # speedups this close (relative) are within a noisy machine's reach of each other


def summarize(result: WorkloadResult, facts: dict[str, Any]) -> str:
    """One or two sentences on what the numbers show for this workload, and why.

    The explanation follows the measurement: it says why threads scaled only when
    they did, calls speedups within a few percent of each other a tie rather than
    crowning one, and owns up when nothing scaled.
    """
    name = result.workload.name
    thread, process = _best(result, "thread"), _best(result, "process")
    assert thread is not None and process is not None
    t_speed, p_speed = result.speedup(thread), result.speedup(process)
    interp = _best(result, "interpreter")
    i_speed = result.speedup(interp) if interp is not None else 0.0
    ranked = sorted(
        [("the serial loop", 1.0), ("threads", t_speed), ("processes", p_speed)]
        + ([("subinterpreters", i_speed)] if interp is not None else []),
        key=lambda pair: pair[1],
        reverse=True,
    )
    leaders = [who for who, speed in ranked if speed >= ranked[0][1] * (1 - TIE)]
    if len(leaders) == 1:
        verdict = "wins" if leaders[0] == "the serial loop" else "win"
        headline = f"{leaders[0]} {verdict}"
    else:
        headline = " and ".join([", ".join(leaders[:-1]), leaders[-1]]) + " tie"
    lead = (
        f"{name}: {headline}"
        + (f" ({ranked[0][1]:.2f}x serial)" if ranked[0][1] != 1.0 else "")
        + f"; threads reach {t_speed:.2f}x (at {thread.workers}), "
        f"processes {p_speed:.2f}x (at {process.workers})"
        + (f", subinterpreters {i_speed:.2f}x (at {interp.workers})" if interp else "")
        + "."
    )
    cpus = facts["usable_cpus"]
    if t_speed >= SCALES:
        if name == "io":
            why = "Waiting uses no CPU, so even more workers than CPUs keep helping"
        elif facts["free_threaded"]:
            why = "This interpreter has no GIL, so threads run Python code in parallel"
        else:
            why = "The work releases the GIL (as NumPy does while it computes)"
        if "threads" in leaders:
            why += "; threads do it without starting processes or pickling anything."
        else:
            why += ", though the other engines used the CPUs better here."
    elif p_speed >= SCALES:
        why = (
            f"Threads take turns under the GIL, while processes use all {cpus} CPUs; "
            "the work per item is large enough to pay for shipping it."
        )
    elif max(t_speed, p_speed) < 1.0 and name == "tiny":
        why = (
            "Each item takes less time than sending it to a worker, so no pool beats the "
            "plain loop: give each task more work, or keep it serial."
        )
    else:
        why = (
            "Nothing scaled here: the work may be bound by memory bandwidth, or the "
            "machine was busy with other work while it ran."
        )
    if interp is not None and i_speed >= SCALES and not facts["free_threaded"]:
        why += (
            " Subinterpreters each have their own GIL, so they run Python code in parallel "
            "inside this one process as well."
        )
    return f"{lead} {why}"


def print_report(results: list[WorkloadResult], facts: dict[str, Any], console: Console) -> None:
    build = "free-threaded" if facts["free_threaded"] else "with the GIL"
    console.print(
        f"[bold]workpool bench[/bold]: {facts['usable_cpus']} usable CPUs, "
        f"Python {facts['python']} ({build}), start method {facts['start_method']}, "
        f"{facts['platform']}"
    )
    for result in results:
        table = Table(title=f"{result.workload.name}: {result.workload.description}")
        table.add_column("backend")
        table.add_column("workers", justify="right")
        table.add_column("time (median)", justify="right")
        table.add_column("min-max", justify="right")
        table.add_column("speedup", justify="right")
        table.add_column("efficiency", justify="right")
        serial = result.serial
        table.add_row(
            "serial",
            "1",
            _seconds(serial.median),
            f"{_seconds(min(serial.seconds))}-{_seconds(max(serial.seconds))}",
            "1.00x",
            "-",
        )
        for config in result.pooled:
            table.add_row(
                config.backend,
                str(config.workers),
                _seconds(config.median),
                f"{_seconds(min(config.seconds))}-{_seconds(max(config.seconds))}",
                f"{result.speedup(config):.2f}x",
                f"{result.efficiency(config):.0%}",
            )
        console.print(table)
        console.print(summarize(result, facts))
        console.print()
    starts = {
        b: [c.start_seconds for r in results for c in r.pooled if c.backend == b]
        for b in ("thread", "process", "interpreter")
    }
    measured = [f"{b} pools {_seconds(min(s))}-{_seconds(max(s))}" for b, s in starts.items() if s]
    if measured:  # none when every workload was skipped
        console.print(f"Times exclude starting the pool, measured apart: {', '.join(measured)}.")


def write_json(results: list[WorkloadResult], facts: dict[str, Any], path: Path) -> None:
    data = {
        "machine": facts,
        "workloads": [
            {
                "name": r.workload.name,
                "description": r.workload.description,
                "summary": summarize(r, facts),
                "serial_seconds": r.serial.seconds,
                "configurations": [
                    {
                        "backend": c.backend,
                        "workers": c.workers,
                        "seconds": c.seconds,
                        "median_seconds": c.median,
                        "speedup": r.speedup(c),
                        "efficiency": r.efficiency(c),
                        "pool_start_seconds": c.start_seconds,
                    }
                    for c in r.pooled
                ],
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
