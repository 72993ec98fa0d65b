"""The sentence under each ``workpool bench`` table says what the numbers show."""

from __future__ import annotations

from typing import Any

from workpool.bench.report import summarize
from workpool.bench.runner import Configuration, WorkloadResult
from workpool.bench.workloads import Workload


def result(name: str, serial: float, **best: float) -> WorkloadResult:
    """A workload whose serial run took ``serial`` s and each engine at 2 workers ``best``."""
    workload = Workload(name, abs, [], "a test", tuple(best))
    pooled = [Configuration(engine, 2, [seconds]) for engine, seconds in best.items()]
    return WorkloadResult(workload, Configuration("serial", 1, [serial]), pooled)


def facts(free_threaded: bool) -> dict[str, Any]:
    return {"usable_cpus": 2, "free_threaded": free_threaded}


def test_speedups_within_a_few_percent_are_a_tie_not_a_win() -> None:
    text = summarize(result("cpu", 1.0, thread=0.56, process=0.55), facts(True))
    assert text.startswith("cpu: processes and threads tie (1.82x serial)")
    assert "no GIL" in text and "threads do it without starting processes" in text


def test_a_clear_winner_is_named_and_explained() -> None:
    text = summarize(result("cpu", 1.0, thread=1.0, process=0.55), facts(False))
    assert text.startswith("cpu: processes win (1.82x serial)")
    assert "GIL" in text and "processes use all 2 CPUs" in text


def test_threads_are_not_credited_when_they_scaled_but_lost() -> None:
    text = summarize(result("cpu", 1.0, thread=0.6, process=0.5), facts(True))
    assert text.startswith("cpu: processes win")
    assert "without starting processes" not in text
    assert "the other engines used the CPUs better" in text


def test_serial_wins_tiny_work() -> None:
    text = summarize(result("tiny", 0.01, thread=0.02, process=0.03), facts(False))
    assert text.startswith("tiny: the serial loop wins;")
    assert "keep it serial" in text


def test_a_run_with_every_workload_skipped_reports_no_pool_start_times() -> None:
    import io

    from rich.console import Console

    from workpool.bench.report import machine_facts, print_report

    out = io.StringIO()
    print_report([], machine_facts(), Console(file=out, width=200))
    assert "workpool bench" in out.getvalue()
    assert "measured apart" not in out.getvalue()  # not "...measured apart: ."
