"""``python -m benchmarks``: parse options, run the selected workloads, print and save.

Tables go to stdout, one per workload as soon as it is done; progress goes to stderr,
so ``python -m benchmarks > report.txt`` keeps a clean report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.cases import WORKLOADS, get_workload
from benchmarks.driver import plan_workload, run_workload
from benchmarks.machine import collect_facts, load_average
from benchmarks.report import print_facts, print_overview, print_workload, summarize, write_json

DEFAULT_REPS = 5
QUICK_REPS = 3


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ", ".join(w.name for w in WORKLOADS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare workpool with its peers, side by side, in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_REPS} repetitions and smaller inputs where noted (a few minutes)",
    )
    parser.add_argument(
        "--reps", type=int, help=f"repetitions (default {DEFAULT_REPS}, {QUICK_REPS} with --quick)"
    )
    parser.add_argument("--workloads", help=f"comma-separated subset of: {names}")
    parser.add_argument(
        "--frameworks",
        help="comma-separated framework keys, e.g. workpool,mp "
        "(mp also selects its variants, mp_c1000, mp_fork)",
    )
    parser.add_argument("--json", type=Path, help="write every raw number and the medians here")
    parser.add_argument("--seed", type=int, default=1, help="seed of the run order (default 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one measurement may take before it counts as failed (default 600)",
    )
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    try:
        args.selected = [get_workload(n) for n in _names(args.workloads) or []] or list(WORKLOADS)
    except KeyError as error:
        parser.error(str(error.args[0]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # a file or pipe: no terminal to fit, so no squeezing
    progress = Console(stderr=True)
    reps = args.reps or (QUICK_REPS if args.quick else DEFAULT_REPS)
    selection = _names(args.frameworks)
    config: dict[str, Any] = {
        "quick": args.quick,
        "reps": reps,
        "seed": args.seed,
        "workloads": [w.name for w in args.selected],
        "frameworks": selection,
    }
    facts = collect_facts()
    print_facts(out, facts, config)

    started = time.perf_counter()
    summaries = []
    notes: list[str] = []
    with progress.status("starting") as status:
        for workload in args.selected:
            plan = plan_workload(workload, selection)
            if not plan.frameworks:
                skipped = plan.skipped or [f"{workload.name}: no selected framework"]
                notes.extend(skipped)
                for note in skipped:
                    out.print(f"[yellow]note:[/] {note}")
                continue
            run = run_workload(
                plan,
                reps=reps,
                quick=args.quick,
                seed=args.seed,
                timeout=args.timeout,
                on_progress=status.update,
            )
            notes.extend(plan.skipped)
            summary = summarize(run)
            summaries.append(summary)
            print_workload(out, summary)
    elapsed = time.perf_counter() - started
    config["seconds"] = elapsed
    config["load_average_1m_end"] = load_average()
    if summaries:
        print_overview(out, summaries)
    out.print(f"\n{len(summaries)} workload(s) in {elapsed:.0f} s")
    if args.json:
        write_json(args.json, facts, config, summaries, notes)
        out.print(f"raw numbers written to {args.json}")
    return 0
