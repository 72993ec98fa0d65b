"""``workpool bench``: the pool-size scaling study (serial vs threads vs processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from workpool.bench.plot import PlotUnavailable, write_plot
from workpool.bench.report import machine_facts, print_report, write_json
from workpool.bench.runner import WorkloadResult, time_workload
from workpool.bench.workloads import WORKLOADS, build_workloads

__all__ = ["WORKLOADS", "OutputUnwritable", "PlotUnavailable", "run_bench"]


class OutputUnwritable(Exception):
    """The study ran, but a file asked for (``--json``, ``--plot``) could not be written."""


def run_bench(
    *,
    workloads: list[str],
    workers: list[int],
    quick: bool,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    console: Console | None = None,
) -> list[WorkloadResult]:
    """Run the study, print it, and write the JSON and plot files asked for."""
    console = console or Console()
    if plot_path is not None:  # fail before the work, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise PlotUnavailable(
                "--plot needs matplotlib: pip install 'workpool[plot]' (or pip install matplotlib)"
            ) from exc
    # Decide how process workers start before the status display starts its thread:
    # the zygote is made only while the program runs a single thread.
    from workpool.backends.process import default_start_method

    default_start_method()
    built, notes = build_workloads(workloads, quick=quick)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    runs = 3 if quick else 5
    results: list[WorkloadResult] = []
    with console.status("measuring...") as status:
        for workload in built:
            results.append(time_workload(workload, workers, runs, on_step=status.update))
    facts = machine_facts()
    print_report(results, facts, console)
    if json_path is not None:
        _write(json_path, write_json, results, facts)
        console.print(f"Raw numbers written to {json_path}")
    if plot_path is not None and results:
        _write(plot_path, write_plot, results, facts)
        console.print(f"Plot written to {plot_path}")
    return results


def _write(
    path: Path,
    writer: Callable[[list[WorkloadResult], dict[str, Any], Path], None],
    results: list[WorkloadResult],
    facts: dict[str, Any],
) -> None:
    """Write one output file; its ``OSError`` (a full disk, say) as ``OutputUnwritable``."""
    try:
        writer(results, facts, path)
    except OSError as exc:
        raise OutputUnwritable(f"cannot write {path}: {exc.strerror or exc}") from exc
