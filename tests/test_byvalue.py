"""Functions that cannot travel by name travel by value without cloudpickle where they can.

What a user relies on: a function defined in ``__main__``, a lambda or a closure runs in
a worker as it would here (its globals as they are when the call starts, its defaults,
its closure, recursion), and the common program does not pay for importing cloudpickle.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import workpool
from conftest import HAS_INTERPRETERS
from workpool.byvalue import NeedsCloudpickle, dumps_by_value
from workpool.serialize import FunctionRegistry, dumps_function

LIMIT = 3


def _copy(obj: Any) -> Any:
    """``obj`` as a worker would rebuild it."""
    return pickle.loads(dumps_by_value(obj))


def test_a_closure_keeps_its_cells_defaults_and_attributes() -> None:
    def make(k: int) -> Any:
        def add(x: int, y: int = 1, *, z: int = 2) -> int:
            return x + y + z + k

        add.label = "adder"  # type: ignore[attr-defined]
        return add

    copy = _copy(make(100))
    assert copy(1) == 104
    assert copy(1, 0, z=0) == 101
    assert copy.label == "adder"
    assert copy.__qualname__.endswith("make.<locals>.add")


class RefusesComparison:
    """Like a NumPy array or a pandas frame, whose ``==`` answers element by element."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array with more than one element is ambiguous")

    __ne__ = __eq__  # type: ignore[assignment]
    __hash__ = object.__hash__


def test_a_closure_over_an_object_that_refuses_comparison() -> None:
    held = RefusesComparison()  # a closure over a data array is the common case
    copy = _copy(lambda: held)
    assert isinstance(copy(), RefusesComparison)


def test_recursion_through_a_closure_and_through_globals() -> None:
    def outer() -> Any:
        def countdown(n: int) -> int:
            return 0 if n == 0 else 1 + countdown(n - 1)

        return countdown

    assert _copy(outer())(50) == 50
    even = _copy(lambda n: n == 0 or not _odd_in_globals(n))  # reads a module function
    assert even(4) is True


def _odd_in_globals(n: int) -> bool:
    return n % 2 == 1


def test_globals_are_carried_as_they_are_at_pickling_time() -> None:
    global LIMIT
    fn = lambda x: min(x, LIMIT) + math.floor(0.5)  # noqa: E731 - a lambda on purpose
    payload = dumps_by_value(fn)
    LIMIT = 99
    try:
        assert pickle.loads(payload)(10) == 3  # the value when it was pickled
    finally:
        LIMIT = 3


def test_functions_pickled_together_share_one_namespace() -> None:
    first = lambda: LIMIT  # noqa: E731
    second = lambda: LIMIT + 1  # noqa: E731
    a, b = _copy((first, second))
    assert a.__globals__ is b.__globals__
    assert a() == 3
    assert b() == 4


def test_a_local_class_goes_by_value_inside_the_functions_pickle() -> None:
    class Local:
        pass

    def make() -> Local:
        return Local()

    made = pickle.loads(dumps_by_value(make))()
    # Rebuilt in this process, the class is this one (cloudpickle's class tracker).
    assert type(made) is Local
    assert type(pickle.loads(dumps_function(make))()) is Local


def test_a_local_named_tuple_goes_by_value() -> None:
    # Its slots were handed to its making, which typing.NamedTuple refuses: every task
    # of a script that made a point with one failed with an AttributeError.
    class Point(NamedTuple):
        x: int
        y: int = 0

    def make(x: int) -> Point:
        return Point(x)

    made = pickle.loads(dumps_function(make))(3)
    assert type(made) is Point and made == (3, 0)
    assert pickle.loads(dumps_function(Point)) is Point


def test_the_module_main_itself_needs_cloudpickle() -> None:
    main = sys.modules["__main__"]
    with pytest.raises(NeedsCloudpickle):
        dumps_by_value(lambda: main)


SCRIPT = """
import json, sys
import workpool

OFFSET = 1000

def work(x):
    return helper(x) + OFFSET

def helper(x):
    return x if x < 2 else helper(x - 1) + helper(x - 2)

if __name__ == "__main__":
    OFFSET = 2000  # the workers see the value when the call starts
    values = workpool.map(work, range(10), backend="process", workers=2)
    with workpool.Pool(2) as pool:
        more = list(pool.map(lambda x: x * OFFSET, range(3)))
    print(json.dumps({"values": values, "more": more,
                      "cloudpickle": "cloudpickle" in sys.modules}))
"""


def test_a_script_of_main_functions_runs_on_processes_without_cloudpickle(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout)

    def fib(x: int) -> int:
        return x if x < 2 else fib(x - 1) + fib(x - 2)

    assert report["values"] == [fib(x) + 2000 for x in range(10)]
    assert report["more"] == [0, 2000, 4000]
    assert report["cloudpickle"] is False


_placeholder: Any = None
_filled: dict[str, Any] = {}


def test_a_pools_functions_pickled_apart_share_what_the_worker_made_of_a_global() -> None:
    def setup(name: str) -> None:
        global _placeholder
        _placeholder = f"connection to {name}"  # rebound, as an initializer does
        _filled["model"] = name.upper()  # changed in place

    def task() -> tuple[Any, Any, int]:
        return _placeholder, _filled.get("model"), LIMIT

    setup_payload = dumps_by_value(setup, shared=True)
    task_payload = dumps_by_value(task, shared=True)  # apart, as a pool sends them
    pickle.loads(setup_payload)("db")
    assert pickle.loads(task_payload)() == ("connection to db", "DB", 3)
    assert _placeholder is None and not _filled  # the caller's own are untouched
    # Changed here since, a global reaches the functions sent after as it is now.
    _filled["model"] = "mine"
    try:
        assert pickle.loads(dumps_by_value(task, shared=True))() == (
            "connection to db",
            "mine",
            3,
        )
    finally:
        _filled.clear()
    # Not a pool's (data pickled by value): each payload has namespaces of its own.
    pickle.loads(dumps_by_value(setup))("other")
    assert pickle.loads(dumps_by_value(task))() == (None, None, 3)


INITIALIZER_SCRIPT = """
import json, sys
import workpool

conn = None   # a placeholder the initializer rebinds
cache = {}    # a dict the initializer fills
LIMIT = 1

def init(name):
    global conn, opened
    conn = "connection to " + name
    opened = True   # a global the caller never had
    cache["model"] = name.upper()

def task(x):
    return [conn, opened, cache.get("model"), x * LIMIT]

def later(x):
    return LIMIT

if __name__ == "__main__":
    report = {"oneshot": workpool.map(task, range(2), backend="process", initializer=init,
                                      initargs=("db",))}
    for method in ("default", "spawn", "fork"):  # fork imports cloudpickle, which stays unused
        start = None if method == "default" else method
        with workpool.Pool(2, initializer=init, initargs=("db",), start_method=start) as pool:
            first = list(pool.map(task, range(3)))
            LIMIT = 10   # rebound here: a function the pool first sends now sees it
            report[method] = [first, list(pool.map(later, range(2)))]
            LIMIT = 1
    for backend in sys.argv[1:]:  # subinterpreters, where this Python has them
        report[backend] = workpool.map(task, range(2), backend=backend, initializer=init,
                                       initargs=("db",))
    print(json.dumps(report))
"""


def test_tasks_see_what_a_scripts_initializer_set_up(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(INITIALIZER_SCRIPT))
    backends = ["interpreter"] if HAS_INTERPRETERS else []
    result = subprocess.run(
        [sys.executable, str(script), *backends],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    made = ["connection to db", True, "DB"]
    assert report["oneshot"] == [[*made, 0], [*made, 1]]
    for backend in backends:
        assert report[backend] == [[*made, 0], [*made, 1]], backend
    for method in ("default", "spawn", "fork"):
        assert report[method] == [[[*made, x] for x in range(3)], [10, 10]], method


# The initializer's argument, or a global it reads, is an instance of the script's own
# class: such a class travels by value (only cloudpickle can carry it), and that must
# not cost the initializer the namespace it shares with the tasks.
CLASS_INITIALIZER_SCRIPT = """
import dataclasses, json, sys
import workpool

@dataclasses.dataclass
class Settings:
    scale: int

class Model:
    def __init__(self, settings):
        self.scale = settings.scale

state = {}

def init(settings):
    state["model"] = Model(settings)

def task(x):
    return x * state["model"].scale

if __name__ == "__main__":
    report = {"oneshot": workpool.map(task, range(3), backend="process",
                                      initializer=init, initargs=(Settings(10),))}
    for backend in sys.argv[1:]:
        report[backend] = workpool.map(task, range(3), backend=backend, initializer=init,
                                       initargs=(Settings(10),))
    print(json.dumps(report))
"""


@pytest.mark.parametrize("portable", [False, True], ids=["default", "portable"])
def test_an_initializer_given_the_scripts_own_class_sets_up_what_tasks_see(
    tmp_path: Path, portable: bool
) -> None:
    report, backends = _run_script_report(tmp_path, CLASS_INITIALIZER_SCRIPT, portable)
    assert report == {name: [0, 10, 20] for name in ["oneshot", *backends]}


def _run_script_report(tmp_path: Path, source: str, portable: bool) -> tuple[Any, list[str]]:
    """Run ``source`` as a script, given the other backends to try; what it printed (JSON),
    and those backends."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    backends = ["interpreter"] if HAS_INTERPRETERS else []
    env = {**os.environ, "WORKPOOL_PORTABLE": "1" if portable else "0"}
    result = subprocess.run(
        [sys.executable, str(script), *backends],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), backends


# Objects of a script's classes with __slots__ (dataclass(slots=True) among them), sent to
# a worker and back, and made there.
SLOTS_SCRIPT = """
import dataclasses, json, sys
import workpool

class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x, self.y = x, y

@dataclasses.dataclass(slots=True)
class Pair:
    left: int
    right: int

def echo(obj):
    return obj

def make(x):
    return Point(x, -x), Pair(x, 2 * x)

def show(objects):
    return [[type(o).__name__, *(getattr(o, name) for name in o.__slots__)] for o in objects]

if __name__ == "__main__":
    report = {}
    for backend in ["process", *sys.argv[1:]]:
        back = workpool.map(echo, [Point(1, 2), Pair(3, 4)], backend=backend)
        made = workpool.map(make, [5], backend=backend)[0]
        assert all(type(o) in (Point, Pair) for o in [*back, *made]), backend
        report[backend] = show(back) + show(made)
    print(json.dumps(report))
"""


@pytest.mark.parametrize("portable", [False, True], ids=["default", "portable"])
def test_objects_of_a_scripts_slotted_classes_come_back_from_workers(
    tmp_path: Path, portable: bool
) -> None:
    # cloudpickle rebuilds a class carried by value without its slots, so the worker's
    # objects had a __dict__ that the caller's class cannot take back.
    report, backends = _run_script_report(tmp_path, SLOTS_SCRIPT, portable)
    expected = [["Point", 1, 2], ["Pair", 3, 4], ["Point", 5, -5], ["Pair", 5, 10]]
    assert report == dict.fromkeys(["process", *backends], expected)


# A script that picks a function by a name it computes (a dispatch table made of its
# own globals), as a script run by multiprocessing's spawn or ProcessPoolExecutor can.
LOOKUP_BY_NAME_SCRIPT = """
import json, sys
import workpool

SCALE = 3
LARGE = list(range(100_000))  # data no task names: not needed in the workers

class Doubler:
    def __call__(self, x):
        return 2 * x

def handle_odd(x):
    return x + 1

def handle_even(x):
    return x * 10

def by_globals(x):
    kind = "odd" if x % 2 else "even"
    return globals()["handle_" + kind](x) * globals()["SCALE"]

def by_eval(x):
    return eval("Doubler()")(x) + eval("SCALE")

def sees_large(_):
    return "LARGE" in globals()

if __name__ == "__main__":
    report = {}
    for backend in ["process", *sys.argv[1:]]:
        report[backend] = [workpool.map(f, range(4), backend=backend, workers=2)
                           for f in (by_globals, by_eval, sees_large)]
    print(json.dumps(report))
"""


@pytest.mark.parametrize("portable", [False, True], ids=["default", "portable"])
def test_a_script_function_finds_the_scripts_functions_by_a_computed_name(
    tmp_path: Path, portable: bool
) -> None:
    report, backends = _run_script_report(tmp_path, LOOKUP_BY_NAME_SCRIPT, portable)
    expected = [[0, 6, 60, 12], [3, 5, 7, 9], [False] * 4]
    assert report == dict.fromkeys(["process", *backends], expected)


# The script's classes read what the initializer set up, as its functions do: through
# their methods, the methods of a base class, static and class methods and properties,
# whether the class reaches the worker with the task's function or with its items.
CLASS_METHODS_SCRIPT = """
import dataclasses, json, sys
import workpool

conn = None

def init(name):
    global conn
    conn = "connection to " + name

class Base:
    def who(self):
        return "base " + str(conn)

class Child(Base):
    def who(self):
        return "child, " + super().who()

class Tools:
    @staticmethod
    def static():
        return conn
    @classmethod
    def klass(cls):
        return cls.__name__ + " " + str(conn)
    @property
    def prop(self):
        return conn

@dataclasses.dataclass
class Job:
    n: int
    def run(self):
        return [conn, self.n]

def task(_):
    tools = Tools()
    return [Child().who(), tools.static(), tools.klass(), tools.prop]

def run_job(job):
    return job.run()

def run_plain(n):
    return Job(n).run()

if __name__ == "__main__":
    report = {}
    for backend in ["process", *sys.argv[1:]]:
        with workpool.Pool(2, backend=backend, initializer=init, initargs=("db",)) as pool:
            report[backend] = [
                list(pool.map(task, [0])),
                list(pool.map(Job(1).run.__func__, [Job(2)])),  # the class with items
                list(pool.map(run_job, [Job(3)])),
                list(pool.map(run_plain, [4])),  # after the items brought it again
            ]
    print(json.dumps(report))
"""


@pytest.mark.parametrize("portable", [False, True], ids=["default", "portable"])
def test_a_scripts_class_methods_see_what_its_initializer_set_up(
    tmp_path: Path, portable: bool
) -> None:
    report, backends = _run_script_report(tmp_path, CLASS_METHODS_SCRIPT, portable)
    conn = "connection to db"
    expected = [
        [["child, base " + conn, conn, "Tools " + conn, conn]],
        [[conn, 2]],
        [[conn, 3]],
        [[conn, 4]],
    ]
    assert report == dict.fromkeys(["process", *backends], expected)


def test_cloudpickle_carries_everything_only_once_a_module_is_registered_by_value() -> None:
    import cloudpickle

    import helpers

    assert b"workpool.byvalue" in dumps_function(lambda x: x)  # imported, yet unused
    cloudpickle.register_pickle_by_value(helpers)
    try:
        payload = dumps_function(helpers.square)
        assert b"cloudpickle" in payload  # the registered module's function, by value
        assert pickle.loads(payload)(7) == 49
    finally:
        cloudpickle.unregister_pickle_by_value(helpers)
    assert b"helpers" in dumps_function(helpers.square)  # by name again


# Plugins made by exec(), each over a globals dict of its own; only the first kind sets MODE.
PLUGIN_WITH_MODE = "MODE = 'first'\ndef task(x):\n    return globals().get('MODE', 'unset')\n"
PLUGIN_WITHOUT = "def task(x):\n    return globals().get('MODE', 'unset')\n"


def test_functions_over_globals_of_their_own_never_see_another_s() -> None:
    # A dict's id is reused once it is gone: the new dict must not be given the
    # namespace the worker kept for the old one.
    import workpool

    seen_wrong = []
    with workpool.Pool(1, backend="process") as pool:
        for i in range(200):
            namespace: dict[str, Any] = {}
            exec(PLUGIN_WITH_MODE if i % 2 == 0 else PLUGIN_WITHOUT, namespace)
            task = namespace["task"]
            there = pool.submit(task, 0).result(timeout=30)
            if there != task(0):
                seen_wrong.append((i, there))
            del namespace, task
    assert seen_wrong == []


def test_a_worker_keeps_a_bounded_number_of_shared_namespaces() -> None:
    import workpool
    from helpers import shared_namespaces_held
    from workpool.byvalue import SHARED_NAMESPACES

    with workpool.Pool(1, backend="process") as pool:
        for _ in range(SHARED_NAMESPACES + 40):
            namespace: dict[str, Any] = {"BLOB": b"x" * 1000}
            exec("def task(x):\n    return x + len(BLOB)\n", namespace)
            assert pool.submit(namespace["task"], 1).result(timeout=30) == 1001
        assert pool.submit(shared_namespaces_held, 0).result(timeout=30) <= SHARED_NAMESPACES


_scale = 1
_config: dict[str, int] = {"offset": 0}


def test_a_function_sent_by_value_is_pickled_again_once_what_it_reads_changed() -> None:
    global _scale
    registry = FunctionRegistry()
    scaled = lambda x: x * _scale + _config["offset"]  # noqa: E731 - by value
    by_name = math.sqrt
    first, second, third, fourth, fifth = (_Call() for _ in range(5))
    ref = registry.ref(scaled, first)
    assert registry.ref(scaled, first) is ref
    assert registry.ref(scaled, second) is ref  # nothing changed: not sent again
    assert registry.ref(by_name, first) is registry.ref(by_name, second)
    try:
        _scale = 10  # rebound between two calls
        rebound = registry.ref(scaled, third)
        assert rebound is not ref and pickle.loads(rebound.payload)(2) == 20
        assert registry.ref(scaled, first) is ref  # a call sees one function throughout
        _config["offset"] = 5  # changed in place
        changed = registry.ref(scaled, fourth)
        assert changed is not rebound and pickle.loads(changed.payload)(2) == 25
        assert registry.ref(scaled, fifth) is changed
    finally:
        _scale = 1
        _config["offset"] = 0


def test_a_bound_method_asked_for_again_is_pickled_again_only_when_its_object_changed() -> None:
    # ``pool.submit(obj.method, x)`` gives a new bound method object at every submit:
    # each one was pickled and sent to the workers again, doubling a round trip.
    from helpers import Scaler

    registry = FunctionRegistry()
    scaler = Scaler(2)
    ref = registry.ref(scaler.scale, _Call())
    assert registry.ref(scaler.scale, _Call()) is ref
    assert registry.ref(Scaler(2).scale, _Call()) is not ref  # another object
    scaler.factor = 3
    changed = registry.ref(scaler.scale, _Call())
    assert changed is not ref and pickle.loads(changed.payload)(1) == 3
    # An object too large to fingerprint is known by identity alone: a new method object
    # is pickled again, since its object may have changed in place meanwhile.
    large = Scaler(1)
    large.table = list(range(300_000))  # type: ignore[attr-defined]
    big = registry.ref(large.scale, _Call())
    large.factor = 4
    again = registry.ref(large.scale, _Call())
    assert again is not big and pickle.loads(again.payload)(1) == 4


class _Call:
    """Stands for a call (a chunk's sink) the registry is asked for a function for."""


SEES_GLOBALS_NOW_SCRIPT = """
import json
import workpool

SCALE = 1
CONFIG = {"offset": 0}

def scaled(x):
    return x * SCALE + CONFIG["offset"]

if __name__ == "__main__":
    report = {}
    with workpool.Pool(2) as pool:
        report["first"] = list(pool.map(scaled, [1, 2]))
        SCALE = 10
        report["rebound"] = list(pool.map(scaled, [1, 2]))
        futures = []
        for offset in (1, 2):
            CONFIG["offset"] = offset
            futures.append(pool.submit(scaled, 1))
        report["submitted"] = [f.result() for f in futures]
    print(json.dumps(report))
"""


def test_a_pools_second_call_sees_the_scripts_globals_as_they_are_now(tmp_path: Path) -> None:
    # The pool pickled a script's function once: every later map and submit ran it
    # with the globals of the first, silently computing what the script no longer said.
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SEES_GLOBALS_NOW_SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {
        "first": [1, 2],
        "rebound": [10, 20],
        "submitted": [11, 12],
    }


_guard = threading.Lock()


def test_a_function_that_cannot_be_sent_is_refused_naming_what_it_carries() -> None:
    # Pickle names only the type ("cannot pickle '_thread.lock' object"): in a script of
    # many globals, the user had to search for which one it was.
    def locked(x: int) -> int:
        with _guard:
            return x

    lines = (line for line in ["a"])

    def reads_lines(x: int) -> str:
        return next(lines) + str(locked(x))

    with pytest.raises(TypeError, match=r"the global '_guard' of .*locked, a lock"):
        workpool.map(locked, [1], backend="process", workers=1)
    with pytest.raises(TypeError, match=r"closure variable 'lines' of .*reads_lines, a generator"):
        workpool.map(reads_lines, [1], backend="process", workers=1)
    if HAS_INTERPRETERS:  # every engine that pickles functions says it
        with pytest.raises(TypeError, match=r"subinterpreter: .*the global '_guard' of"):
            workpool.map(locked, [1], backend="interpreter", workers=1)
