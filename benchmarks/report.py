"""Turning samples into numbers a reader can trust: medians, spreads, ratios, tables, JSON.

The ratio in every table is a framework's median divided by the best peer's median
(the best of the frameworks that are neither workpool nor a reference such as
serial); each ratio column says whether higher or lower is better. Medians, not
means: on a shared, noisy machine one slow repetition should not move the result.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.driver import WorkloadRun
from benchmarks.spec import Framework, Metric

__all__ = [
    "Stat",
    "WorkloadSummary",
    "print_facts",
    "print_overview",
    "print_workload",
    "summarize",
    "write_json",
]


@dataclass(frozen=True)
class Stat:
    """Median, minimum and maximum of one metric over the successful repetitions."""

    median: float
    low: float
    high: float
    count: int


@dataclass
class Row:
    """One framework's line in a workload's table."""

    framework: Framework
    stats: dict[str, Stat]
    runs: int
    errors: list[str]
    params: dict[str, Any]


@dataclass
class WorkloadSummary:
    """A workload's rows, and for each metric which peer did best."""

    run: WorkloadRun
    rows: list[Row]
    best_peer: dict[str, Row]

    def ratio(self, row: Row, metric: Metric) -> float | None:
        """``row``'s median over the best peer's median for ``metric``, if both exist."""
        best = self.best_peer.get(metric.key)
        mine = row.stats.get(metric.key)
        if best is None or mine is None:
            return None
        base = best.stats[metric.key].median
        return mine.median / base if base else None

    def row(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.framework.key == key), None)


def _stat(values: list[float]) -> Stat:
    return Stat(statistics.median(values), min(values), max(values), len(values))


def summarize(run: WorkloadRun) -> WorkloadSummary:
    """Medians and spreads per framework and metric, and the best peer per metric."""
    rows: list[Row] = []
    for framework in run.frameworks:
        measurements = run.measurements[framework.key]
        good = [m for m in measurements if m.error is None]
        stats: dict[str, Stat] = {}
        for metric in run.workload.metrics:
            values = [m.metrics[metric.key] for m in good if metric.key in m.metrics]
            if values:
                stats[metric.key] = _stat(values)
        errors = [f"rep {m.rep + 1}: {m.error}" for m in measurements if m.error is not None]
        rows.append(Row(framework, stats, len(measurements), errors, run.params[framework.key]))
    best: dict[str, Row] = {}
    for metric in run.workload.metrics:
        peers = [r for r in rows if r.framework.role == "peer" and metric.key in r.stats]
        if peers:
            pick = max if metric.better == "higher" else min
            best[metric.key] = pick(peers, key=lambda r: r.stats[metric.key].median)
    return WorkloadSummary(run, rows, best)


def _ratio_header(metric: Metric) -> str:
    return f"÷ best peer\n({metric.better} is better)"


def _ratio_cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def _notes(summary: WorkloadSummary, row: Row) -> str:
    """Parameters that differ from the workload's defaults, and failures."""
    defaults = summary.run.workload.params
    notes = [
        f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
        for k, v in row.params.items()
        if k in defaults and defaults[k] != v
    ]
    notes.extend(row.errors)
    return "; ".join(notes)


def print_workload(console: Console, summary: WorkloadSummary) -> None:
    """One table: framework, median, min-max, ratio to the best peer, extras, runs, notes."""
    workload = summary.run.workload
    primary = workload.primary
    best = summary.best_peer.get(primary.key)
    caption = (
        f"median of the repetitions, each in a fresh process; best peer: "
        f"{best.framework.label if best else 'none measured'}"
    )
    if summary.run.calibration:
        found = ", ".join(f"{k}={v:.4g}" for k, v in summary.run.calibration.items())
        caption += f"\ncalibrated once for this run: {found}"
    table = Table(
        title=f"[bold]{workload.name}[/]: {workload.summary}",
        caption=caption,
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("key", style="dim", overflow="fold")
    table.add_column("framework", overflow="fold")  # narrow terminal: wrap, never elide
    table.add_column(f"{primary.label}\nmedian", justify="right")
    table.add_column("min-max", justify="right", overflow="fold")
    table.add_column(_ratio_header(primary), justify="right")
    for metric in workload.extras:
        table.add_column(f"{metric.label}\nmedian", justify="right")
        if metric.ratio:
            table.add_column(_ratio_header(metric), justify="right")
    table.add_column("runs", justify="right")
    table.add_column("notes")
    for row in summary.rows:
        stat = row.stats.get(primary.key)
        cells = [
            row.framework.key,
            row.framework.label,
            primary.format(stat.median if stat else None),
            f"{primary.format(stat.low)}-{primary.format(stat.high)}" if stat else "-",
            _ratio_cell(summary.ratio(row, primary)),
        ]
        for metric in workload.extras:
            extra = row.stats.get(metric.key)
            cells.append(metric.format(extra.median if extra else None))
            if metric.ratio:
                cells.append(_ratio_cell(summary.ratio(row, metric)))
        ok = stat.count if stat else 0
        cells += [f"{ok}/{row.runs}", _notes(summary, row)]
        style = {"workpool": "bold", "reference": "dim"}.get(row.framework.role)
        table.add_row(*cells, style=style)
    console.print(table)
    for note in summary.run.skipped:
        console.print(f"[yellow]note:[/] {note}")
    console.print()


def print_facts(console: Console, facts: dict[str, Any], config: dict[str, Any]) -> None:
    """The machine and software versions, first, so every number below has its context."""
    table = Table(title="[bold]machine and versions[/]", title_justify="left", show_header=False)
    table.add_column("fact")
    table.add_column("value")
    table.add_row("usable CPUs (sched_getaffinity)", str(facts["usable_cpus"]))
    table.add_row("memory", f"{facts['memory_gib']} GiB")
    build = ", free-threaded" if facts.get("free_threaded") else ""
    table.add_row("Python", f"{facts['python']} ({facts['implementation']}{build})")
    table.add_row("platform", facts["platform"])
    table.add_row("multiprocessing default start method", facts["mp_default_start_method"])
    load = facts["load_average_1m"]
    table.add_row("load average (1 min) at start", "-" if load is None else f"{load:.2f}")
    for name, value in facts["environment"].items():
        table.add_row(f"environment: {name}", value)
    for name, found in facts["versions"].items():
        table.add_row(name, found or "[yellow]not installed[/]")
    mode = "quick" if config["quick"] else "full"
    table.add_row("run", f"{mode} mode, {config['reps']} repetitions, seed {config['seed']}")
    console.print(table)
    console.print()


def _verdict(ratio: float, metric: Metric) -> str:
    """'1.30x better' / '2.00x worse', whichever way the metric counts as better."""
    better = ratio >= 1 if metric.better == "higher" else ratio <= 1
    factor = ratio if ratio >= 1 else 1 / ratio
    if abs(factor - 1) < 0.005:
        return "even"
    return f"{factor:.2f}x {'better' if better else 'worse'}"


def print_overview(console: Console, summaries: list[WorkloadSummary]) -> None:
    """workpool against the best peer, one line per workload and compared metric."""
    table = Table(title="[bold]workpool vs the best peer[/]", title_justify="left")
    for header in ("workload", "metric", "workpool", "best peer", "peer's value", "workpool is"):
        table.add_column(header, justify="right" if header != "best peer" else "left")
    rows = 0
    for summary in summaries:
        mine = summary.row("workpool")
        workload = summary.run.workload
        metrics = [workload.primary, *(m for m in workload.extras if m.ratio)]
        for metric in metrics:
            best = summary.best_peer.get(metric.key)
            if mine is None or best is None or metric.key not in mine.stats:
                continue
            ratio = summary.ratio(mine, metric)
            table.add_row(
                workload.name,
                f"{metric.label} ({metric.better} is better)",
                metric.format(mine.stats[metric.key].median),
                best.framework.label,
                metric.format(best.stats[metric.key].median),
                _verdict(ratio, metric) if ratio else "-",
            )
            rows += 1
    if rows:
        console.print(table)


def _workload_json(summary: WorkloadSummary) -> dict[str, Any]:
    run = summary.run
    frameworks: dict[str, Any] = {}
    for row in summary.rows:
        frameworks[row.framework.key] = {
            "label": row.framework.label,
            "role": row.framework.role,
            "params": row.params,
            "runs": [m.to_json() for m in run.measurements[row.framework.key]],
            "median": {k: s.median for k, s in row.stats.items()},
            "min": {k: s.low for k, s in row.stats.items()},
            "max": {k: s.high for k, s in row.stats.items()},
            "ratio_to_best_peer": {
                m.key: summary.ratio(row, m) for m in run.workload.metrics if m.key in row.stats
            },
        }
    return {
        "summary": run.workload.summary,
        "metrics": {m.key: {"label": m.label, "better": m.better} for m in run.workload.metrics},
        "primary": run.workload.primary.key,
        "context": run.context,
        "calibration": run.calibration,
        "best_peer": {k: r.framework.key for k, r in summary.best_peer.items()},
        "frameworks": frameworks,
        "skipped": run.skipped,
        "seconds": run.seconds,
    }


def write_json(
    path: Path,
    facts: dict[str, Any],
    config: dict[str, Any],
    summaries: list[WorkloadSummary],
    notes: list[str],
) -> None:
    """Every repetition's raw numbers, the medians and ratios, and the machine facts."""
    document = {
        "facts": facts,
        "config": config,
        "workloads": {s.run.workload.name: _workload_json(s) for s in summaries},
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
