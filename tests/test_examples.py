"""The example programs in ``examples/`` run to the end and print what they promise.

Each example runs as its own program, exactly as a reader would start it, with the
repository root as the working directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import left_in_shared_memory, named_shared_memory

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> str:
    """Run ``examples/<name>`` with ``args``; return its output, failing on an error."""
    script = EXAMPLES / name
    assert script.is_file(), f"missing example {script}"
    completed = subprocess.run(
        [sys.executable, str(script.relative_to(ROOT)), *args],
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


def test_q5_sharing() -> None:
    before = named_shared_memory()
    out = run_example("q5_sharing.py", "--size-mb", "8")
    lines = out.splitlines()
    ways = [
        "1. multiprocessing.Queue",
        "2. multiprocessing.Pipe",
        "3. multiprocessing.RawArray",
        "4. multiprocessing.Value",
        "5. shared_memory.SharedMemory",
        "6. workpool.map (automatic)",
        "7. workpool.share(writable)",
    ]
    for label in ["0. start 2 processes, no data", *ways]:
        assert lines.count(label) == 1, f"no heading for {label!r} in:\n{out}"
        row = re.compile(re.escape(label) + r" +\d+\.\d{3} +(\d+|-) +(\d+|n/a)$")
        assert sum(1 for line in lines if row.match(line)) == 1, f"no table row for {label!r}"
    # Each way checked its total against numpy's (the example stops at the first mismatch).
    assert sum(1 for line in lines if line.startswith("   sum ok in ")) == len(ways)
    assert "workers saw the block read-only; 4 tasks ran in" in out
    assert "the parent reads the workers' writes" in out
    assert "/dev/shm: nothing left behind" in out
    assert not left_in_shared_memory(before), "the example left a segment in /dev/shm"


def test_checkpoint_sigkill() -> None:
    out = run_example("checkpoint_sigkill.py")
    killed = re.search(r"killed the job with SIGKILL after (\d+) of 400 items had run", out)
    assert killed and 0 < int(killed.group(1)) < 400
    assert "__main__.slow_square" in out  # workpool checkpoint info names the function
    assert "every item ran: True" in out
    assert "results identical to an uninterrupted run: True" in out


def test_trace_straggler(tmp_path: Path) -> None:
    out = run_example("trace_straggler.py", str(tmp_path))
    for name in ("ordered", "unordered"):
        path = tmp_path / f"trace-{name}.json"
        assert f"its timeline is in {path}" in out
        data = json.loads(path.read_text())
        assert data["otherData"]["partial"] is False
        assert data["otherData"]["call"]["ordered"] is (name == "ordered")
    assert "workpool trace summary" in out
