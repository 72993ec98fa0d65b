"""The example programs in ``examples/`` run to the end and print what they promise.

Each example runs as its own program, exactly as a reader would start it, with the
repository root as the working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str) -> str:
    """Run ``examples/<name>`` with this interpreter; return its output, failing on an error."""
    script = EXAMPLES / name
    assert script.is_file(), f"missing example {script}"
    completed = subprocess.run(
        [sys.executable, str(script.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{name} exited with {completed.returncode}\n"
        f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}"
    )
    return completed.stdout


def test_q4_producer_consumer() -> None:
    out = run_example("q4_producer_consumer.py")
    assert "(a) Lock + Condition" in out
    assert "(b) a generator feeding workpool.imap" in out
    assert "check (Lock + Condition): all 12 produced items were consumed exactly once" in out
    assert "check (workpool.imap): all 12 produced items were consumed exactly once" in out
    assert "List is empty, nothing to remove" not in out  # the notebook's wasted attempts


def test_q7_factorials() -> None:
    out = run_example("q7_factorials.py")
    lines = out.splitlines()
    assert lines.count("  10! = 3628800") == 2  # once from submit, once from map
    assert "  1! = 1" in lines
    assert "check: both ways match math.factorial for n = 1..10" in out


def test_q8_squares_pool_sizes() -> None:
    out = run_example("q8_squares_pool_sizes.py")
    squares = "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]"
    for label in ("serial", "pool of 2", "pool of 4", "pool of 8"):
        rows = [line for line in out.splitlines() if line.startswith(label + " ")]
        assert len(rows) == 1, f"no single table row for {label!r} in:\n{out}"
        assert rows[0].endswith(squares)
    assert "times as long as the serial loop" in out or "Unexpectedly" in out
