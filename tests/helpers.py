"""Functions the tests run on workers: importable by name in every start method."""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import os
import pathlib
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def cube_or_parity(x: int) -> int | bool:
    """Big ints, except bools for 0..499: a chunk of results of either kind, or both."""
    return x % 2 == 0 if 0 <= x < 500 else x**3 * 1_000_003


def add(x: int, y: int) -> int:
    return x + y


def fail_on(bad: int):  # type: ignore[no-untyped-def]
    """A function that raises ValueError for the input ``bad`` and squares the rest."""

    def check(x: int) -> int:
        if x == bad:
            raise ValueError(f"bad input {x}")
        return x * x

    return check


def stop_on_two(x: int, offset: int = 0) -> int:
    """Add ``offset``, except that input 2 raises StopIteration (which must not end a map)."""
    if x == 2:
        raise StopIteration("not the end of anything")
    return x + offset


def where(_: object) -> tuple[int, str]:
    """The pid and thread name that ran this task."""
    return os.getpid(), threading.current_thread().name


def pid_and(x: object) -> tuple[int, object]:
    """The pid that ran this task, and its input."""
    return os.getpid(), x


def loaded(module: str) -> tuple[int, bool]:
    """This process's pid, and whether ``module`` is imported in it."""
    return os.getpid(), module in sys.modules


def slow_square(x: int, delay: float = 0.05) -> int:
    time.sleep(delay)
    return x * x


class Unpicklable:
    """An object plain pickle and cloudpickle both refuse (it holds a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class NeedsTwoArguments(Exception):
    """An exception whose ``__init__`` takes more than it passes on to ``args``."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"{path} failed with {code}")
        self.path = path
        self.code = code


class KeywordOnlyError(Exception):
    """An exception made with a keyword-only argument, holding a lock besides."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code
        self.lock = threading.Lock()


def raise_odd_exception(kind: str) -> None:
    if kind == "two":
        raise NeedsTwoArguments("/data/x", 3)
    raise KeywordOnlyError(code=4)


def raise_group_of_odd_exceptions(_: object) -> None:
    """Raise an exception group (Python 3.11+) of exceptions pickle cannot rebuild alone."""
    errors: list[Exception] = [ValueError("plain")]
    for kind in ("two", "keyword"):
        try:
            raise_odd_exception(kind)
        except Exception as exc:
            errors.append(exc)
    raise builtins.ExceptionGroup("several tasks inside failed", errors)


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """An exception that refuses every assignment, as frozen dataclasses (and attrs) do."""

    code: int


class NotesInATuple(Exception):
    pass


def raise_refusing_notes(kind: str) -> None:
    """Raise an exception that ``BaseException.add_note`` cannot add a note to."""
    if kind == "frozen":
        raise FrozenError(7)
    error = NotesInATuple("noted")
    error.__notes__ = ("the program's own note",)  # type: ignore[assignment]
    raise error


def raise_pool_error(kind: str, x: int) -> int:
    """For ``x == 3``, raise what a pool says about itself, as a task using a pool of its
    own may: ``BrokenPool`` or ``concurrent.futures.CancelledError``."""
    if x == 3:
        if kind == "broken":
            import workpool

            raise workpool.BrokenPool("the task's own pool broke")
        import concurrent.futures

        raise concurrent.futures.CancelledError("the task's own future was cancelled")
    return x


class GaveUp(Exception):
    """What a retrying wrapper raises: it keeps the last attempt's exception."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempts")
        self.attempts = attempts
        self.last = last


def give_up(where: str) -> None:
    """Raise an exception that keeps one pickle cannot rebuild, as an attribute (``GaveUp``)
    or among its arguments (a ``RuntimeError``)."""
    last = NeedsTwoArguments("/data/x", 3)
    if where == "attribute":
        raise GaveUp(3, last) from last
    raise RuntimeError("gave up", last) from last


def raise_worker_only_error(x: int) -> int:
    """Raise an exception whose class exists only in the process that runs this.

    Its module is made here, under a random name (a subinterpreter shares the pid), so
    the exception pickles here and cannot be unpickled anywhere else. (An exception
    that merely needs other ``__init__`` arguments is no such test: importing Dask
    installs tblib's reducers, which rebuild any exception class loaded at that moment.)
    """
    module = types.ModuleType(f"_workpool_test_only_here_{os.urandom(8).hex()}")
    sys.modules[module.__name__] = module

    class WorkerOnlyError(Exception):
        pass

    WorkerOnlyError.__module__ = module.__name__
    WorkerOnlyError.__qualname__ = "WorkerOnlyError"
    module.WorkerOnlyError = WorkerOnlyError  # type: ignore[attr-defined]
    raise WorkerOnlyError(f"{x}-{x}")


_state: dict[str, object] = {}


def remember(value: object) -> None:
    """An initializer: stores ``value`` in this worker."""
    _state["value"] = value


def recall(_: object) -> object:
    return _state.get("value")


class RefusedHere:
    """Pickles anywhere, but unpickling it fails in the process whose pid it names."""

    def __init__(self, refused_in: int) -> None:
        self.refused_in = refused_in

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_rebuild_unless_in, (self.refused_in,))


def _rebuild_unless_in(pid: int) -> RefusedHere:
    if os.getpid() == pid:
        raise ValueError(f"cannot be rebuilt in process {pid}")
    return RefusedHere(pid)


def result_refused_by(caller: int, bad: int, x: int) -> object:
    """``x`` squared, except a result the ``caller`` cannot unpickle for ``bad``."""
    return RefusedHere(caller) if x == bad else x * x


class ExitsWhenPickled:
    """A result whose ``__reduce__`` raises ``SystemExit``, as a task's code may."""

    def __reduce__(self) -> tuple[object, ...]:
        raise SystemExit(3)


def result_exiting_when_pickled(x: int) -> object:
    return ExitsWhenPickled() if x == 1 else x


def broken_initializer() -> None:
    raise RuntimeError("initializer says no")


def interrupt_on_one(x: int) -> int:
    """Raise KeyboardInterrupt for the input 1, as a task of the user's might."""
    if x == 1:
        raise KeyboardInterrupt
    return x


def exit_by_system_exit() -> None:
    """An initializer that raises SystemExit, as ``sys.exit`` in a setup script would."""
    raise SystemExit(3)


class CountingInput:
    """An endless input that counts how many items were taken from it.

    The input is read in the caller's process, whatever the backend, so this counts the
    tasks that were handed to the pool, even when they run in other processes or
    subinterpreters (where a list the task appends to would be a copy).
    """

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.taken = i + 1
            yield i


class ArrayStream:
    """An endless input of distinct NumPy arrays of ``size`` floats, each its position.

    Each is watched with a weak reference: ``alive()`` counts those still held by
    someone (the pool, its chunks, their copies), here in the caller.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.made: list[weakref.ref[Any]] = []

    def __iter__(self) -> Iterator[Any]:
        import numpy

        for i in itertools.count():
            array = numpy.full(self.size, float(i))
            self.made.append(weakref.ref(array))
            yield array

    def alive(self, among_first: int | None = None) -> int:
        return sum(ref() is not None for ref in self.made[:among_first])


def first_value(array: Any) -> float:
    return float(array[0])


class Tracked:
    """An object a test watches with a weak reference, to see who keeps it alive."""

    def method(self) -> str:
        return "called"


def make_tracked(_: object) -> Tracked:
    return Tracked()


class Scaler:
    """A callable object whose state a program may change between two calls."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor

    def scale(self, x: int) -> int:
        return x * self.factor


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of the PNG file at ``path`` (fails if it is not a PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def run_cli_without_matplotlib(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``workpool ARGS`` in a fresh interpreter where matplotlib cannot be imported."""
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from workpool.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def wait_at_zero(x: int, directory: str, others_take: float = 0.0) -> int:
    """Item 0 waits for ``directory/release`` (30 s at most); the others take
    ``others_take`` seconds at least, then leave a mark."""
    folder = pathlib.Path(directory)
    if x == 0:
        deadline = time.monotonic() + 30
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    else:
        time.sleep(others_take)
        (folder / str(x)).touch()
    return x


def hold(x: int, directory: str, held: tuple[int, ...], others_take: float = 0.0) -> int:
    """Items in ``held`` leave a mark ``started-<x>``, then wait for ``directory/release``
    (30 s at most); the others take ``others_take`` seconds."""
    folder = pathlib.Path(directory)
    if x in held:
        (folder / f"started-{x}").touch()
        deadline = time.monotonic() + 30
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    else:
        time.sleep(others_take)
    return x


def first_worker_waits(directory: str) -> None:
    """An initializer: the first worker to run it waits for ``directory/release`` (30 s)."""
    folder = pathlib.Path(directory)
    try:
        os.close(os.open(folder / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    deadline = time.monotonic() + 30
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def fails_when_released(directory: str) -> None:
    """An initializer that waits for ``directory/release`` (30 s at most), then raises."""
    folder = pathlib.Path(directory)
    deadline = time.monotonic() + 30
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    raise RuntimeError("initializer says no")


class SlowToLoad:
    """Squares its argument; unpickling it takes ``seconds`` (a function slow to load)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, x: int) -> int:
        return x * x

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        return _load_slowly, (self.seconds,)


def _load_slowly(seconds: float) -> SlowToLoad:
    time.sleep(seconds)
    return SlowToLoad(seconds)


class SlowToPickleError(ValueError):
    """An error that takes a quarter of a second to pickle, as a worker sends it back."""

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(0.25)
        return (SlowToPickleError, self.args)


def raise_slow_to_pickle(seconds: float) -> None:
    """Take ``seconds``, then raise an error slow to pickle."""
    time.sleep(seconds)
    raise SlowToPickleError("slow to pickle")


def shared_namespaces_held(_: object) -> int:
    """How many shared namespaces of by-value functions this worker keeps."""
    from workpool import byvalue

    return len(byvalue._shared_namespaces)


_WHILE_IMPORTED = """
import importlib, importlib.machinery, sys, threading
import workpool

entered, release = threading.Event(), threading.Event()

class HeldImport:
    def find_spec(self, name, path, target=None):
        if name != {module!r}:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module
        def exec_module(module):
            entered.set()
            release.wait(60)
            run_module(module)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, HeldImport())
importer = threading.Thread(target=importlib.import_module, args=({module!r},))
importer.start()
assert entered.wait(60)
try:
{body}
finally:
    release.set()
    importer.join()
"""


def run_while_imported(module: str, body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (lines of a script that imported workpool) in a new interpreter while
    another thread is importing ``module``, held just before the module's code runs:
    the module is in ``sys.modules`` then, with none of its names yet."""
    script = tmp_path / "while_imported.py"
    indented = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    script.write_text(_WHILE_IMPORTED.format(module=module, body=indented))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
