"""The package's import graph reads one way, and every module imports on its own.

A module that imports a module that (directly or not) imports it back works or breaks
depending on which of the two is imported first, and is hard to reason about either
way. The graph is read from the source (``ast``): every ``import`` statement, wherever
it stands: ``TYPE_CHECKING`` blocks, and function bodies too. An import put inside a
function keeps ``import workpool`` light; it still says which module needs which, and
hiding a cycle is not its job. (A package's ``__init__`` running before its submodules
is how Python imports, not an edge.)
"""

from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workpool import _platform

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted((SRC / "workpool").rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The workpool modules that loading ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from package import module` imports the module
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {target for target in found if target in MODULES and target != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_the_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_reader_sees_imports_wherever_they_stand(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from workpool import tasks
            if TYPE_CHECKING:
                from workpool.backends.process.handle import WorkerHandle
            def later():
                import workpool.errors
                from workpool.backends.process import protocol
            """
        )
    )
    assert imported_modules("workpool.example", source) == {
        "workpool.tasks",
        "workpool.backends.process.handle",
        "workpool.errors",
        "workpool.backends.process.protocol",
    }


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "modules import each other in a circle: " + " -> ".join(cycle or [])


def test_every_module_imports_on_its_own_with_all_it_exports() -> None:
    # One interpreter, but each module imported with no workpool module loaded before.
    program = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "workpool" or m.startswith("workpool.")]:
        del sys.modules[loaded]
    try:
        module = importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc()
        continue
    # What __all__ names must exist when the program runs, not only for type checkers.
    absent = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    if absent:
        failures[name] = f"__all__ names what is not there: {absent}"
print(json.dumps(failures))
"""
    done = subprocess.run(
        [sys.executable, "-c", program, json.dumps(sorted(MODULES))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout.splitlines()[-1])
    if sys.version_info < (3, 14):  # subinterpreters: the interpreter backend needs 3.14
        missing = "ModuleNotFoundError: No module named 'concurrent.interpreters'"
        failures = {name: text for name, text in failures.items() if missing not in text}
    assert not failures, "\n".join(f"{name}:\n{text}" for name, text in failures.items())


def loaded_after(statement: str, *also: str) -> set[str]:
    """The workpool modules, and those of ``also``, loaded after running ``statement``."""
    program = f"""
import sys
{statement}
import json
print(json.dumps(sorted(m for m in sys.modules if m.startswith("workpool") or m in {also!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_workpool_loads_what_is_used_only() -> None:
    assert loaded_after("import workpool") == {"workpool", "workpool._version"}
    pool_only = loaded_after("import workpool; workpool.Pool")
    assert "workpool.pool" in pool_only
    assert not {"workpool.advise", "workpool.oneshot"} & pool_only


def test_the_public_names_are_the_same_however_they_are_reached() -> None:
    import workpool
    import workpool.advise as advise_module  # the function: the package keeps that name

    assert workpool.advise is advise_module
    assert callable(workpool.advise)
    assert workpool.Pool.__module__ == "workpool"
    assert set(workpool.__all__) <= set(dir(workpool))
    # BrokenPool is made on first use (errors.py): one class, which pickles as itself.
    from workpool.errors import BrokenPool

    assert workpool.BrokenPool is BrokenPool
    assert type(pickle.loads(pickle.dumps(BrokenPool("lost")))) is BrokenPool
    for name in workpool.__all__:
        assert getattr(workpool, name) is not None


def test_auto_on_tiny_items_loads_no_engine_and_no_subinterpreter_trial() -> None:
    # A map that stays in this process (auto sees shipping cost more than squaring)
    # pays only for measuring: every module a pool or a trial needs would be waste.
    loaded = loaded_after(
        "import workpool\n"
        "def square(x):\n"
        "    return x * x\n"
        "assert workpool.map(square, range(200_000))[-1] == 199_999 ** 2\n"
    )
    assert "workpool.advise" in loaded
    assert (
        not {
            "workpool.backends.process",
            "workpool.backends.thread",
            "workpool.interpreter_trial",
            "workpool.pool",
        }
        & loaded
    )


def test_a_worker_imports_none_of_the_parents_side() -> None:
    # What the zygote and every worker import: the process engine's worker side only.
    loaded = loaded_after(
        "import workpool.backends.process.zygote, workpool.backends.process.worker",
        "concurrent.futures",
        "logging",
        "traceback",
        "ctypes",
        "multiprocessing",
        "socket",
        "selectors",
        "typing",
    )
    parent_side = {
        "multiprocessing",  # for other start methods than the zygote
        "concurrent.futures",  # with logging: the Executor's, for BrokenPool
        "logging",
        "traceback",  # until a task fails
        "ctypes",  # until the zygote sets its parent-death signal
        "socket",  # neither side: see unix_sockets.py
        "selectors",  # nor this: poller.py
        "typing",  # nor this, though type checkers read it (see below)
        "workpool._options",
        "workpool.advise",
        "workpool.oneshot",
        "workpool.pool",
        "workpool.run",
        "workpool.backends.base",
        "workpool.backends.process.engine",
        "workpool.backends.process.supervisor",
        "workpool.backends.process.launch",
    }
    assert not parent_side & loaded, parent_side & loaded


def test_a_plain_process_map_loads_no_executor_no_logging_no_socket_no_selectors() -> None:
    # concurrent.futures brings logging, traceback and tokenize: milliseconds every script
    # would pay, for errors (BrokenPool, CancelledError) that a map nothing cancels and
    # nothing breaks never makes (errors.py makes them on first use). The socket and
    # selectors modules cost milliseconds at import, for nothing the engine needs of
    # them (unix_sockets.py, poller.py). So does typing: the engine's modules import
    # it only for type checkers (``TYPE_CHECKING = False``, which they read as true).
    statement = (
        "import workpool\n"
        "def square(x):\n"
        "    return x * x\n"
        "assert workpool.map(square, range(8), backend='process', workers=2)[3] == 9\n"
    )
    unwanted = {"concurrent.futures", "logging", "socket", "selectors", "typing"}
    if not _platform.FORK_ZYGOTE:  # the zygote is exec'd, by subprocess, which needs selectors
        unwanted.remove("selectors")
    loaded = loaded_after(statement, *unwanted)
    assert "workpool.backends.process.supervisor" in loaded
    assert not unwanted & loaded


def test_maps_on_any_backend_auto_advise_and_a_pool_load_no_typing() -> None:
    statement = (
        "import workpool\n"
        "import time\n"
        "def square(x):\n"
        "    return x * x\n"
        # auto sends slow CPU-bound items early, to a pool (early_items.py). CPU time,
        # not wall time: on a loaded machine a wall-clock loop would look like waiting.
        "def slow(x):\n"
        "    deadline = time.thread_time() + 0.01\n"
        "    while time.thread_time() < deadline: pass\n"
        "    return x\n"
        "assert workpool.map(square, range(2000))[-1] == 1999 ** 2\n"
        "assert workpool.map(slow, range(8))[-1] == 7\n"
        "assert workpool.advise(square, range(100)).workers >= 1\n"
        "for backend in ('serial', 'thread', 'process'):\n"
        "    assert list(workpool.imap(square, range(8), backend=backend))[3] == 9\n"
        "    assert workpool.starmap(pow, [(2, 3)], backend=backend) == [8]\n"
        "with workpool.Pool(2) as pool:\n"
        "    assert pool.submit(square, 3).result() == 9\n"
        "    assert list(pool.map(square, range(4))) == [0, 1, 4, 9]\n"
    )
    # Slow items go early to a pool of processes, or (3.14 with the GIL) to a trial of
    # subinterpreters; without the GIL, threads suit them and no trial runs. On a loaded
    # machine the timings can send them elsewhere: a few tries, one must take that path.
    early = {"workpool.early_items", "workpool.interpreter_trial"}
    wants_early = getattr(sys, "_is_gil_enabled", lambda: True)()
    for _ in range(3):
        loaded = loaded_after(statement, "typing")
        assert {"workpool.advise", "workpool.pool"} <= loaded
        assert "workpool.backends.thread" in loaded
        assert "typing" not in loaded
        if not wants_early or early & loaded:
            break
    else:
        pytest.fail(f"slow items never went early to a pool: {sorted(loaded)}")


def test_a_checkpointed_map_and_its_resume_load_no_executor_and_no_logging(
    tmp_path: Path,
) -> None:
    # A resume with nothing left to run takes a few tens of milliseconds: importing
    # concurrent.futures (with logging) would be a tenth of it.
    path = str(tmp_path / "run.ckpt")
    statement = (
        "import operator, workpool\n"
        f"for _ in range(2): workpool.map(operator.neg, range(100), checkpoint={path!r})\n"
    )
    loaded = loaded_after(statement, "concurrent.futures", "logging")
    assert "workpool.checkpoint.session" in loaded
    assert not {"concurrent.futures", "logging"} & loaded
