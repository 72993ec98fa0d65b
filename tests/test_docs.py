"""The documents a new user reads say what the code does, and leave nothing public out.

Each check reads a document as text, next to the code it describes: the public names
of ``workpool`` against the README's reference, the backends the options accept against
its options table, the benchmark workloads against ``benchmarks/README.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import workpool

ROOT = Path(__file__).resolve().parents[1]


def section(document: Path, heading: str) -> str:
    """The text under ``heading`` (a whole heading line), up to the next heading of any level."""
    lines = document.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def first_table(text: str) -> list[list[str]]:
    """The rows (as lists of cells) of the first table in ``text``, header and rule left out.

    A table ends at its first line that is not a row: rows after a paragraph are text.
    """
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_public_name_is_in_the_readme_reference() -> None:
    reference = section(ROOT / "README.md", "## Reference: every public name")
    names = {cell for row in first_table(reference) for cell in row[:1]}
    documented = " ".join(names)
    for name in workpool.__all__:
        assert f"workpool.{name}" in documented, f"workpool.{name} is not in the reference"
    public = [name for name in dir(workpool.Pool) if not name.startswith("_")]
    for name in public:
        assert f"Pool.{name}" in documented, f"Pool.{name} is not in the reference"
    advice = next(row[1] for row in first_table(reference) if row[0] == "`workpool.Advice`")
    for name in (name for name in dir(workpool.Advice) if not name.startswith("_")):
        assert f"`{name}" in advice, f"Advice.{name} is not in the reference"


def test_every_public_name_and_pool_member_has_a_docstring() -> None:
    # What help(workpool.Pool) and an editor's hover show a user.
    for name in workpool.__all__:
        assert getattr(workpool, name).__doc__, f"workpool.{name} has no docstring"
    for cls in (workpool.Pool, workpool.Advice):
        for name in (name for name in dir(cls) if not name.startswith("_")):
            member = getattr(cls, name)
            if type(member).__name__ == "member_descriptor":  # a field: the class says it
                assert f"``{name}``" in str(cls.__doc__), f"{cls.__name__}.{name} is not said"
            else:
                assert member.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_the_options_table_names_every_backend() -> None:
    options = section(ROOT / "README.md", "## Options")
    row = next(row for row in first_table(options) if row[0] == "`backend`")
    for backend in ("auto", "serial", "thread", "process", "interpreter", "dask"):
        assert f'`"{backend}"`' in row[2], f"the backend row does not name {backend!r}"


def test_every_benchmark_workload_has_a_row_in_the_workloads_table() -> None:
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from benchmarks.cases import WORKLOADS; "
            "print(json.dumps([w.name for w in WORKLOADS]))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    workloads = set(json.loads(listed.stdout))
    table = first_table(section(ROOT / "benchmarks" / "README.md", "## Workloads"))
    rows = {name.strip("` ") for row in table for name in row[0].split(",")}
    assert workloads - rows == set(), "workloads with no row in benchmarks/README.md"
    assert rows - workloads == set(), "rows of benchmarks/README.md with no such workload"
