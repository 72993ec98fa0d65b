"""Functions by value with the standard library alone: code marshalled, globals pickled.

A function defined in ``__main__`` (or a lambda, or a closure) cannot travel by name:
the worker's ``__main__`` is not the caller's, and a lambda has no name to import. It
must travel as what it is: its code, the globals it reads as they are *now*, its
defaults and the contents of its closure. (One that reads globals by a name it computes,
``globals()["handle_" + kind]`` or ``eval(name)``, is given the module's functions,
classes, modules and plain values too.) cloudpickle does this for everything, but
importing it costs more than starting a pool. The plain functions almost every program
sends need far less, and this pickler carries them with ``pickle`` and ``marshal``:

    caller                                          worker
    ------                                          ------
    fn ──reducer_override──> skeleton: marshalled code, name, an empty namespace
                             state:    the globals fn reads, defaults, closure, __dict__
                                        ──pickle──>  function built from the code,
                                                     then its state filled in

The state is applied after the skeleton is memoized, so a function that calls itself
(or two that call each other) pickle without endless recursion. Functions pickled
together from one module share one namespace in the worker, as they shared one in the
caller. Modules travel by name. A class that cannot travel by name (defined in
``__main__`` or in a function) goes through cloudpickle on its own, inside this pickle
(taught to keep its ``__slots__``: ``KeepsSlots``).
Whatever else this pickler cannot carry (the module ``__main__``, an object plain pickle
refuses) raises ``NeedsCloudpickle``, and the caller falls back to cloudpickle.

A pool's functions are pickled apart (its initializer when it starts, each task's
function when first used), yet a script's initializer sets up state its tasks read:
``global conn; conn = connect()``, or ``cache["model"] = load()``. So the functions a
pool sends (``shared``) share one namespace per module of the caller in each worker
(per globals dict: one that ``exec`` made counts as a module, and never stands for
another made later at the same address; a worker keeps the ``SHARED_NAMESPACES``
most recently used), and each global comes with a fingerprint of the caller's value
(a hash of its plain pickle). A global whose fingerprint arrives again keeps whatever
the worker made of it (rebound or changed by the initializer or an earlier task, as in
a module of its own); one the caller has changed since arrives as it is now, as does
one without a fingerprint (a function, a value over a megabyte, or one plain pickle
refuses).
A script's class comes from cloudpickle with methods over a namespace of their own;
in a pool's payload its methods, and those of the bases carried with it, are remade
over the shared one, so that a task's ``self.conn()`` sees what ``init`` set up too.
Other functions that cloudpickle carries do not share a namespace this way.
"""

from __future__ import annotations

import builtins
import collections
import functools
import io
import itertools
import marshal
import os
import pickle
import sys
import threading
import types
import weakref
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    # A pickler's reducer_override to consult first (for objects pickled another way, as
    # the sharing of large arrays does): a reduction, or NotImplemented.
    Reducer = Callable[[Any], Any]

    # What moves where, for one class of a class's MRO: its index there, the namespace
    # its methods move into, their names, and the fingerprints of the globals they read.
    _Move = tuple[int, dict[str, Any], list[str], dict[str, bytes | None]]

__all__ = [
    "FINGERPRINT_LIMIT",
    "ConsultsFirst",
    "KeepsSlots",
    "NeedsCloudpickle",
    "Recording",
    "Snapshot",
    "dumps_by_value",
    "fingerprint_of",
    "global_names",
    "recording_snapshot",
]


class ConsultsFirst:
    """Pickler mixin: ``_reducer``, if set, is asked about every object first; what it
    leaves (NotImplemented) goes to the next class's ``reducer_override``."""

    _reducer: Reducer | None = None

    def reducer_override(self, obj: Any) -> Any:
        if self._reducer is not None:
            reduced = self._reducer(obj)
            if reduced is not NotImplemented:
                return reduced
        return super().reducer_override(obj)  # type: ignore[misc]


class KeepsSlots:
    """cloudpickle Pickler mixin: a class carried by value is rebuilt with its slots.

    cloudpickle makes the class again without ``__slots__``, then sets that name as a
    plain attribute: its objects there have a ``__dict__``, and the caller's own class,
    which cloudpickle brings back for them, cannot take their state. Handing
    ``__slots__`` to the class's making, beside ``__module__``, gives it its slots.
    A ``typing.NamedTuple`` is left as it is: its making gives it slots itself, and
    refuses a class body that names them.
    """

    def reducer_override(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)  # type: ignore[misc]
        if not isinstance(obj, type) or "__slots__" not in vars(obj) or _named_tuple(obj):
            return reduced
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            return reduced
        make, args, *rest = reduced
        # _make_skeleton_class(type_constructor, name, bases, type_kwargs, tracker, extra)
        if getattr(make, "__name__", "") != "_make_skeleton_class" or len(args) != 6:
            return reduced
        kwargs = {**args[3], "__slots__": vars(obj)["__slots__"]}
        return (make, (*args[:3], kwargs, *args[4:]), *rest)


def _named_tuple(cls: type) -> bool:
    """Whether ``cls`` was made by subclassing ``typing.NamedTuple``."""
    typing = sys.modules.get("typing")  # no class can be one unless typing was imported
    marker = getattr(typing, "NamedTuple", None)
    return marker is not None and marker in vars(cls).get("__orig_bases__", ())


def _cloudpickle_class(cls: type) -> bytes:
    """``cls`` pickled by cloudpickle, by value, its slots kept (``KeepsSlots``)."""
    global _ClassPickler
    if _ClassPickler is None:
        import cloudpickle

        class ClassPickler(KeepsSlots, cloudpickle.Pickler):  # type: ignore[misc]
            pass

        _ClassPickler = ClassPickler
    buffer = io.BytesIO()
    _ClassPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(cls)
    return buffer.getvalue()


_ClassPickler: Any = None


class NeedsCloudpickle(Exception):
    """Raised while pickling, at the first object only cloudpickle can carry."""


def _importable(obj: Any) -> bool:
    """Whether ``obj`` can be found again by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    if module_name is None or module_name == "__main__":
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    found: Any = module
    for part in getattr(obj, "__qualname__", "<").split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def global_names(code: types.CodeType) -> set[str]:
    """Every name ``code`` and the code nested in it may read as a global."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return names


# Builtins through which a function can read any global by a name it computes:
# ``globals()[kind]``, ``eval(name)``. Such a function is given more than the names in
# its code (``_lookup_targets``).
_READS_GLOBALS_BY_NAME = frozenset({"globals", "eval", "exec"})
_PLAIN_VALUES = (int, float, complex, str, bytes, bool, type(None))


def _lookup_targets(module_globals: dict[str, Any]) -> set[str]:
    """The globals a function may look up by a computed name, beyond those it names: the
    module's functions, classes and modules, and its plain values (numbers, strings).

    What a dispatch table by name reaches for, as ``globals()["handle_" + kind]`` does;
    not the module's other data, which may be large and is carried when named.
    """
    return {
        name
        for name, value in module_globals.items()
        if not name.startswith("__")
        and (
            isinstance(value, (types.FunctionType, type, *_PLAIN_VALUES))
            or (
                isinstance(value, types.ModuleType)
                and value.__name__ in sys.modules
                and value.__name__ != "__main__"
            )
        )
    }


# This process among all that may send functions to one worker (a Dask worker serves
# many): with a number of its own for each globals dict, it names that dict's namespace
# there.
_PROCESS = os.urandom(8).hex()

# In the caller: the key each globals dict's namespace has, by the dict's id, with a
# weak reference to what keeps that dict alive (its module, or a function over it). An
# id is reused once its dict is gone, so a key stands only while that owner does: a
# dict made by exec() for a plugin must never be taken for another's.
_keys: dict[int, tuple[str, weakref.ref[Any]]] = {}
_key_numbers = itertools.count()
_keys_lock = threading.RLock()  # reentrant: the collector may call _forget_key inside


def _namespace_key(fn: types.FunctionType) -> str:
    """The key naming ``fn``'s globals among every namespace a worker holds."""
    origin = fn.__globals__
    with _keys_lock:
        entry = _keys.get(id(origin))
        if entry is not None and _globals_of(entry[1]()) is origin:
            return entry[0]
        key = f"{_PROCESS}:{next(_key_numbers)}"
        name = origin.get("__name__")
        module = sys.modules.get(name) if isinstance(name, str) else None
        owner: Any = module if module is not None and vars(module) is origin else fn
        forget = functools.partial(_forget_key, id(origin), key)
        _keys[id(origin)] = (key, weakref.ref(owner, forget))
        return key


def _globals_of(owner: Any) -> dict[str, Any] | None:
    if isinstance(owner, types.ModuleType):
        return vars(owner)
    return owner.__globals__ if isinstance(owner, types.FunctionType) else None


def _forget_key(ident: int, key: str, _: object) -> None:
    """The owner of a globals dict is gone: its key goes, unless a newer one replaced it."""
    with _keys_lock:
        entry = _keys.get(ident)
        if entry is not None and entry[0] == key:
            del _keys[ident]


class _Namespace:
    """Stands for a module's globals while pickling; becomes a dict in the worker.

    A fresh dict, or with ``key`` (a pool's functions) the one the functions over the
    same globals share there.
    """

    __slots__ = ("key", "module", "origin")

    def __init__(self, origin: dict[str, Any], module: str, key: str | None) -> None:
        self.origin = origin
        self.module = module
        self.key = key

    def __reduce__(self) -> tuple[Any, tuple[str, str | None, str | None]]:
        # __package__ lets a relative import inside the function work in the worker.
        return _new_namespace, (self.module, self.origin.get("__package__"), self.key)


# In a worker: the shared namespaces, by key, the least recently given first, and for
# each the fingerprint of the caller's value each global was last given. At most
# SHARED_NAMESPACES are kept: a program that makes a globals dict per call (exec'd
# plugins) would otherwise fill the worker. A namespace let go lives on in the
# functions made over it; one of its functions sent again gets a new one.
SHARED_NAMESPACES = 256
_shared_namespaces: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
_given: dict[int, dict[str, bytes | None]] = {}  # id(namespace) -> {name: fingerprint}


def _new_namespace(module: str, package: str | None, key: str | None = None) -> dict[str, Any]:
    if key is not None and (namespace := _shared_namespaces.get(key)) is not None:
        _shared_namespaces.move_to_end(key)
        return namespace
    namespace = {"__builtins__": builtins, "__name__": module, "__package__": package}
    if key is not None:
        _shared_namespaces[key] = namespace
        _given[id(namespace)] = {}
        if len(_shared_namespaces) > SHARED_NAMESPACES:
            _, dropped = _shared_namespaces.popitem(last=False)
            del _given[id(dropped)]
    return namespace


def _make_function(
    code: bytes, namespace: dict[str, Any], name: str, cell_count: int
) -> types.FunctionType:
    cells = tuple(types.CellType() for _ in range(cell_count)) if cell_count else None
    return types.FunctionType(marshal.loads(code), namespace, name, None, cells)


class _EmptyCell:
    """Stands for a closure cell not yet assigned; found again by type, never compared
    (an array or a data frame in a cell answers ``==`` element by element)."""


_EMPTY_CELL = _EmptyCell()


def _fill_function(fn: types.FunctionType, state: dict[str, Any]) -> None:
    _give_globals(fn.__globals__, state.pop("globals"), state.pop("fingerprints"))
    for cell, value in zip(fn.__closure__ or (), state.pop("closure")):
        if not isinstance(value, _EmptyCell):
            cell.cell_contents = value
    for attribute, value in state.items():
        setattr(fn, attribute, value)


def _give_globals(
    namespace: dict[str, Any], reads: dict[str, Any], fingerprints: dict[str, bytes | None] | None
) -> None:
    """Put the globals a function reads in its namespace, by the rule of the docstring."""
    given = _given.get(id(namespace)) if fingerprints is not None else None
    if given is None or fingerprints is None:
        namespace.update(reads)
        return
    # A shared namespace: what the worker made of a value it was given is kept.
    for name, value in reads.items():
        fingerprint = fingerprints.get(name)
        if fingerprint is None or given.get(name) != fingerprint:
            namespace[name] = value
            given[name] = fingerprint


def _functions_in(attribute: Any) -> list[Any]:
    """The functions a class attribute is made of: a method, or what a static or class
    method or a property wraps; [] for anything else."""
    if type(attribute) in (staticmethod, classmethod):
        attribute = attribute.__func__
    if type(attribute) is property:
        return [f for f in (attribute.fget, attribute.fset, attribute.fdel) if f is not None]
    return [attribute] if type(attribute) is types.FunctionType else []


def _class_in_namespace(data: bytes, moves: list[_Move]) -> type:
    """The class cloudpickle carried, its methods moved into the pool's shared namespace.

    cloudpickle gives a class's methods a namespace of their own: one a script's
    initializer never wrote to (``global conn``), whose tasks would read ``conn`` as the
    caller had it. Each method (and each of a base class carried with it) is remade over
    the shared namespace, as the functions carried here are, and the globals it reads
    go in by the same rule.
    """
    cls = pickle.loads(data)
    for index, namespace, names, fingerprints in moves:
        owner = cls.__mro__[index]
        for name in names:
            attribute = vars(owner).get(name)  # cloudpickle leaves some out (__annotate__)
            moved = _moved(attribute, namespace, fingerprints)
            if moved is not attribute:
                setattr(owner, name, moved)
    return cls  # type: ignore[no-any-return]


def _moved(attribute: Any, namespace: dict[str, Any], fingerprints: dict[str, bytes | None]) -> Any:
    if isinstance(attribute, types.FunctionType):
        home = attribute.__globals__
        module = sys.modules.get(attribute.__module__ or "")
        if home is namespace or (module is not None and home is vars(module)):
            return attribute  # moved already, or this process's own class: left as it is
        _give_globals(
            namespace,
            {name: home[name] for name in global_names(attribute.__code__) if name in home},
            fingerprints,
        )
        moved = types.FunctionType(
            attribute.__code__,
            namespace,
            attribute.__name__,
            attribute.__defaults__,
            attribute.__closure__,  # the same cells: zero-argument super() still works
        )
        for name in ("__kwdefaults__", "__qualname__", "__module__", "__doc__", "__dict__"):
            setattr(moved, name, getattr(attribute, name))
        return moved
    if isinstance(attribute, (staticmethod, classmethod)):
        inner = _moved(attribute.__func__, namespace, fingerprints)
        return attribute if inner is attribute.__func__ else type(attribute)(inner)
    if isinstance(attribute, property):
        get, put, delete = (
            None if f is None else _moved(f, namespace, fingerprints)
            for f in (attribute.fget, attribute.fset, attribute.fdel)
        )
        if (get, put, delete) == (attribute.fget, attribute.fset, attribute.fdel):
            return attribute
        return property(get, put, delete, attribute.__doc__)
    return attribute


# Values larger than this get no fingerprint: pickling and digesting a big array twice
# would cost more than the worker's state in it is likely to be worth.
FINGERPRINT_LIMIT = 1 << 20


def fingerprint_of(value: Any) -> bytes | None:
    """A digest of ``value``'s plain pickle; None for a function, a value over
    ``FINGERPRINT_LIMIT`` bytes, or what plain pickle refuses."""
    if isinstance(value, types.FunctionType):
        return None
    try:
        if getattr(value, "nbytes", 0) > FINGERPRINT_LIMIT:  # an array: not pickled twice
            return None
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    if len(data) > FINGERPRINT_LIMIT:
        return None
    # Fingerprints are only ever compared with others from this process (the namespace's
    # key names it): the built-in 64-bit hash of the bytes is enough, and costs no import.
    return hash(data).to_bytes(8, "little", signed=True)


class Snapshot:
    """What a function's pickle by value was made of, to tell later whether it still is.

    A pool pickles a function once and sends it once per worker; yet a call must see the
    function's globals as they are when it starts (``SCALE = 10`` between two maps, a
    config dict changed in place). Each global, closure cell, default and attribute the
    pickle read is kept here with its fingerprint: ``holds`` says whether each is still
    the same object with the same fingerprint. A large value (no fingerprint) is
    compared by identity alone: changed in place, it is not noticed (rebound, it is).
    What cannot be checked this way (a class carried by value, a function that reads
    globals by a computed name, a function cloudpickle carried) ``spoil``s it: it never
    holds, and the function is pickled again for each call.
    """

    __slots__ = ("_reads", "spoiled")

    def __init__(self) -> None:
        # (where, name, value, fingerprint): ``where`` a globals dict, a cell or a function.
        self._reads: list[tuple[Any, str, Any, bytes | None]] = []
        self.spoiled = False

    def spoil(self) -> None:
        self.spoiled = True

    def read(self, where: Any, name: str, value: Any, fingerprint: bytes | None) -> None:
        self._reads.append((where, name, value, fingerprint))

    def holds(self) -> bool:
        """Whether everything the pickle read is as it was then (costs a plain pickle of
        each small value)."""
        if self.spoiled:
            return False
        for where, name, value, fingerprint in self._reads:
            now = _current(where, name)
            if now is not value or (fingerprint is not None and fingerprint_of(now) != fingerprint):
                return False
        return True


_MISSING = object()


def _current(where: Any, name: str) -> Any:
    """What ``where`` holds under ``name`` now: a global, a cell's contents, an attribute."""
    if isinstance(where, dict):
        return where.get(name, _MISSING)
    if isinstance(where, types.CellType):
        try:
            return where.cell_contents
        except ValueError:  # not yet assigned
            return _EMPTY_CELL
    return getattr(where, name, _MISSING)


# The snapshot the pickling in this thread records into, if one is asked for (``Recording``).
_recording = threading.local()


def recording_snapshot() -> Snapshot | None:
    """The snapshot being recorded in this thread, if any (see ``Recording``)."""
    return getattr(_recording, "snapshot", None)


class Recording:
    """``with Recording() as snapshot:`` what functions are pickled by value inside
    record into ``snapshot`` what they read (``Snapshot``)."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._previous: Snapshot | None = None

    def __enter__(self) -> Snapshot:
        self._previous = recording_snapshot()
        _recording.snapshot = self._snapshot
        return self._snapshot

    def __exit__(self, *_: object) -> None:
        _recording.snapshot = self._previous


class _FunctionsByValue(pickle.Pickler):
    """The standard pickler, taught to carry functions and modules the way the worker needs."""

    def __init__(self, file: io.BytesIO, shared: bool) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        # One stand-in per module namespace, kept alive so pickle's memo (by id) holds.
        self._namespaces: dict[int, _Namespace] = {}
        self._shared = shared  # a pool's functions: namespaces shared in the worker

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType):
            if _importable(obj):
                return NotImplemented
            return self._reduce_function(obj)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ == "__main__" or obj.__name__ not in sys.modules:
                raise NeedsCloudpickle(f"module {obj.__name__!r} cannot be imported by name")
            import importlib  # here: what reads the pickle imports it, to find the module

            return importlib.import_module, (obj.__name__,)
        if isinstance(obj, type) and not _importable(obj):
            return self._reduce_class(obj)
        return NotImplemented

    def _reduce_class(self, cls: type) -> Any:
        # Only cloudpickle carries a class by value; it does this one alone, so that
        # the functions around it still share their namespace in the worker. (Its
        # class tracker makes every payload that holds the class rebuild one class
        # there, and bring the caller's own back.) A pool's class then has its methods
        # moved into the namespace its functions share.
        snapshot = recording_snapshot()
        if snapshot is not None:
            snapshot.spoil()  # what its methods read, cloudpickle alone knows
        data = _cloudpickle_class(cls)
        moves = [] if not self._shared else self._class_moves(cls)
        if not moves:
            return pickle.loads, (data,)
        return _class_in_namespace, (data, moves)

    def _class_moves(self, cls: type) -> list[Any]:
        """For each class of ``cls``'s MRO carried by value, the methods to move."""
        moves = []
        for index, owner in enumerate(cls.__mro__):
            module = sys.modules.get(owner.__module__)
            if module is None or _importable(owner):
                continue  # found by name in the worker: its methods are the module's own
            home = vars(module)
            names = [  # the methods that read the globals of the class's own module
                name
                for name, attribute in vars(owner).items()
                if (functions := _functions_in(attribute))
                and all(f.__globals__ is home for f in functions)
            ]
            if not names:
                continue
            fingerprints = {
                global_name: fingerprint_of(home[global_name])
                for name in names
                for fn in _functions_in(vars(owner)[name])
                for global_name in global_names(fn.__code__)
                if global_name in home
            }
            namespace = self._namespace(_functions_in(vars(owner)[names[0]])[0])
            moves.append((index, namespace, names, fingerprints))
        return moves

    def _namespace(self, fn: types.FunctionType) -> _Namespace:
        namespace = self._namespaces.get(id(fn.__globals__))
        if namespace is None:
            key = _namespace_key(fn) if self._shared else None
            namespace = _Namespace(fn.__globals__, fn.__module__ or "__main__", key)
            self._namespaces[id(fn.__globals__)] = namespace
        return namespace

    def _reduce_function(self, fn: types.FunctionType) -> Any:
        namespace = self._namespace(fn)
        code = fn.__code__
        module_globals = fn.__globals__
        snapshot = recording_snapshot()
        names = global_names(code)
        if not names.isdisjoint(_READS_GLOBALS_BY_NAME):
            names |= _lookup_targets(module_globals)
            if snapshot is not None:
                snapshot.spoil()  # it may read any global, even one defined later
        reads = {name: module_globals[name] for name in names if name in module_globals}
        fingerprints = None
        if self._shared or snapshot is not None:
            fingerprints = {name: fingerprint_of(value) for name, value in reads.items()}
        closure = [_current(cell, "") for cell in fn.__closure__ or ()]
        if snapshot is not None:
            self._record(snapshot, fn, names, fingerprints or {}, closure)
        if not self._shared:
            fingerprints = None
        state = {
            "globals": reads,
            "fingerprints": fingerprints,
            "closure": closure,
            "__defaults__": fn.__defaults__,
            "__kwdefaults__": fn.__kwdefaults__,
            "__qualname__": fn.__qualname__,
            "__module__": fn.__module__,
            "__doc__": fn.__doc__,
            "__dict__": fn.__dict__,
        }
        skeleton_args = (marshal.dumps(code), namespace, fn.__name__, len(closure))
        return _make_function, skeleton_args, state, None, None, _fill_function

    @staticmethod
    def _record(
        snapshot: Snapshot,
        fn: types.FunctionType,
        names: set[str],
        fingerprints: dict[str, bytes | None],
        closure: list[Any],
    ) -> None:
        """Note in ``snapshot`` what ``fn``'s pickle reads (a name not yet bound too:
        a global defined later, or one that comes to shadow a builtin)."""
        module_globals = fn.__globals__
        for name in names:
            snapshot.read(
                module_globals, name, module_globals.get(name, _MISSING), fingerprints.get(name)
            )
        for cell, value in zip(fn.__closure__ or (), closure):
            snapshot.read(cell, "", value, fingerprint_of(value))
        for attribute in ("__defaults__", "__kwdefaults__", "__dict__"):
            value = getattr(fn, attribute)
            snapshot.read(fn, attribute, value, fingerprint_of(value))


class _ByValuePickler(ConsultsFirst, _FunctionsByValue):
    def __init__(self, file: io.BytesIO, shared: bool, reducer: Reducer | None) -> None:
        super().__init__(file, shared)
        self._reducer = reducer


def dumps_by_value(obj: object, *, shared: bool = False, reducer: Reducer | None = None) -> bytes:
    """Pickle ``obj``, carrying functions by value; raises ``NeedsCloudpickle`` or what
    pickle raised when only cloudpickle could do it.

    ``shared``: a pool's functions and initializer, whose namespaces its workers share
    (see the module's docstring); other payloads each get namespaces of their own.
    ``reducer`` is consulted first for every object.
    """
    buffer = io.BytesIO()
    _ByValuePickler(buffer, shared, reducer).dump(obj)
    return buffer.getvalue()
