"""The documents a new user reads say what the code does, and leave nothing public out.

Each check reads a document as text, next to the code it describes: the public names
of ``workpool`` against the README's reference, the backends the options accept against
its options table, the benchmark workloads against ``benchmarks/README.md``; and the
snippets a reader copies run and print what the text shows.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


# --- the snippets a reader copies ------------------------------------------------------

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def code_blocks(document: Path) -> list[tuple[str, str]]:
    """Each fenced block of ``document`` as (its language, or "", its text dedented)."""
    text = document.read_text(encoding="utf-8")
    return [(m.group(1), textwrap.dedent(m.group(2))) for m in FENCE.finditer(text)]


def run_snippet(code: str, tmp_path: Path) -> str:
    """Run ``code`` as a reader would, saved as a script; return what it printed."""
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_python_snippet_is_python(document: Path) -> None:
    for language, code in code_blocks(document):
        if language == "python":
            ast.parse(code, filename=str(document))


def test_the_quick_start_prints_what_its_comments_say(tmp_path: Path) -> None:
    blocks = code_blocks(ROOT / "README.md")
    quick_start = next(code for language, code in blocks if language == "python")
    lines = run_snippet(quick_start, tmp_path).splitlines()
    assert lines[:4] == [str([x * x for x in range(1, 11)]), "[8, 9]", "144", "[1, 2, 3, 4, 5]"]
    assert lines[4].startswith("backend='serial' workers=1 chunksize=10: One item takes")


def test_the_exceptions_page_prints_what_it_shows(tmp_path: Path) -> None:
    blocks = code_blocks(ROOT / "docs" / "q6-exceptions.md")
    snippet = next(i for i, (language, _) in enumerate(blocks) if language == "python")
    shown = blocks[snippet + 1][1]
    printed = run_snippet(blocks[snippet][1], tmp_path)
    pid = re.compile(r"worker process \d+")
    assert pid.sub("worker process PID", printed) == pid.sub("worker process PID", shown)


LINK = re.compile(r"\]\(([^)#]+)\)")
PATH = re.compile(r"`((?:docs|examples|tests|benchmarks|src)/[\w./-]*)`")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_and_path_a_document_names_exists(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        assert (document.parent / target).exists(), f"{document.name} links to {target}"
    for target in PATH.findall(text):
        assert (ROOT / target).exists(), f"{document.name} names {target}"
