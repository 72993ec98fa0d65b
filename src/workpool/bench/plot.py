"""The scaling study as a figure: speedup against workers, per workload and backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workpool.bench.runner import WorkloadResult

__all__ = ["PlotUnavailable", "write_plot"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def write_plot(results: list[WorkloadResult], facts: dict[str, Any], path: Path) -> None:
    """Write a PNG with one panel per workload; raises PlotUnavailable without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'workpool[plot]' (or pip install matplotlib)"
        ) from exc

    columns = min(2, len(results))
    rows = (len(results) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results):
        sizes = sorted({c.workers for c in result.pooled})
        ax.plot(sizes, sizes, linestyle="--", color="grey", label="ideal (linear)")
        ax.axhline(1.0, color="black", linewidth=0.8, label="serial")
        for backend, marker, label in (
            ("thread", "o", "threads"),
            ("process", "s", "processes"),
            ("interpreter", "^", "subinterpreters"),
        ):
            configs = sorted(
                (c for c in result.pooled if c.backend == backend), key=lambda c: c.workers
            )
            if not configs:
                continue
            ax.plot(
                [c.workers for c in configs],
                [result.speedup(c) for c in configs],
                marker=marker,
                label=label,
            )
        ax.axvline(facts["usable_cpus"], color="tab:red", linestyle=":", label="usable CPUs")
        ax.set_title(f"{result.workload.name}: {result.workload.description}")
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup over serial")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(results) :]:
        ax.set_visible(False)
    build = "free-threaded" if facts["free_threaded"] else "GIL"
    figure.suptitle(
        f"workpool bench: Python {facts['python']} ({build}), {facts['usable_cpus']} usable CPUs"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
