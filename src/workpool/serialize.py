"""How functions and data cross into another process.

A function importable by name travels as its name, through the standard pickle.
Lambdas, closures and anything defined in ``__main__`` or a notebook travel by value:
plain functions with the standard library (``byvalue``), the rest through cloudpickle,
which is imported only then: it costs more to import than a whole pool costs to start.
Each function is pickled once and sent once per worker; one sent by value is pickled
again for a later call if what it reads has changed since (``FunctionRegistry``). Data
goes through the standard pickle first (fast, protocol 5) and takes the same by-value
route only when the standard pickle refuses it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import pickle
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from workpool.byvalue import (
    FINGERPRINT_LIMIT,
    ConsultsFirst,
    KeepsSlots,
    Recording,
    Snapshot,
    dumps_by_value,
    fingerprint_of,
    global_names,
    recording_snapshot,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.byvalue import Reducer

__all__ = [
    "PROTOCOL",
    "FunctionRef",
    "FunctionRegistry",
    "by_value",
    "cannot_send",
    "dumps_data",
    "dumps_function",
    "dumps_items",
    "hooked_cloudpickler",
    "loads",
    "names_main",
    "picklable_runs",
    "unpicklable_part",
    "unpicklable_reason",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

loads = pickle.loads


def dumps_function(fn: object, *, shared: bool = False, reducer: Reducer | None = None) -> bytes:
    """Pickle a callable (or a tuple holding some): by name where it can, else by value.

    Functions that cannot go by name (defined in ``__main__``, lambdas, closures) go by
    value with the standard library (``byvalue``) when it can carry them, and through
    cloudpickle otherwise. Once the program has registered a module with
    ``cloudpickle.register_pickle_by_value``, cloudpickle does all of it, so that the
    functions of that module still travel by value. ``shared``: a pool's function or
    initializer, whose worker state the pool's other functions see (``byvalue``).
    ``reducer`` is consulted first for every object, by either pickler.
    """
    if not _cloudpickle_takes_all():
        try:
            return dumps_by_value(fn, shared=shared, reducer=reducer)
        except Exception:  # NeedsCloudpickle, or something plain pickle refuses
            pass
    snapshot = recording_snapshot()
    if snapshot is not None:
        snapshot.spoil()  # what cloudpickle read, it alone knows
    buffer = io.BytesIO()
    hooked_cloudpickler(buffer, reducer).dump(fn)
    return buffer.getvalue()


def hooked_cloudpickler(file: io.BytesIO, reducer: Reducer | None) -> Any:
    """A cloudpickle pickler that consults ``reducer`` first (imports cloudpickle)."""
    global _HookedCloudPickler
    if _HookedCloudPickler is None:
        import cloudpickle

        class HookedCloudPickler(ConsultsFirst, KeepsSlots, cloudpickle.Pickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO, reducer: Reducer | None) -> None:
                super().__init__(file, protocol=PROTOCOL)
                self._reducer = reducer

        _HookedCloudPickler = HookedCloudPickler
    return _HookedCloudPickler(file, reducer)


_HookedCloudPickler: Any = None


def _cloudpickle_takes_all() -> bool:
    """Has the program asked cloudpickle to carry modules by value (which only it knows)?"""
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None:
        return False
    registered = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    return registered is None or bool(registered())


class FunctionRef:
    """A function pickled once, and the id workers know it by.

    ``fds`` are the descriptors of shared memory its pickle refers to (a process
    worker's large arrays, ``sharing.dumps_function_sharing``), which travel beside it;
    ``keep`` holds them open while the pickle may be sent.
    """

    __slots__ = ("fds", "fn_id", "keep", "payload")  # not a NamedTuple: a compile at import

    def __init__(
        self, fn_id: int, payload: bytes, fds: Sequence[int] = (), keep: Sequence[Any] = ()
    ) -> None:
        self.fn_id = fn_id
        self.payload = payload
        self.fds = fds
        self.keep = keep


def _dumps_alone(fn: Callable[..., Any]) -> tuple[bytes, Sequence[int], Sequence[Any]]:
    return dumps_function(fn, shared=True), (), ()


class FunctionRegistry:
    """The functions a pool has run, each pickled once, most recently used kept.

    Workers cache functions by id, so a pool running the same function over many
    chunks pickles and sends it once per worker rather than once per chunk. A function
    is looked at again when a new call first needs it (a map, a submit): if a global,
    cell or default it was pickled with by value has changed since
    (``byvalue.Snapshot``), or what a callable object, bound method or partial holds
    (``_state``), it is pickled again, and the call's workers get it as it is now. The
    registry holds each function weakly where it can: a long-lived pool must not keep
    alive what it was given (a bound method keeps its whole object) once the caller is
    done with it.
    """

    def __init__(
        self,
        size: int = 256,
        dumps: Callable[[Callable[..., Any]], tuple[bytes, Sequence[int], Sequence[Any]]] = (
            _dumps_alone
        ),
    ) -> None:
        """``dumps`` pickles a function: its bytes, and any descriptors they refer to."""
        self._size = size
        self._dumps = dumps
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._ids = itertools.count(1)

    def ref(self, fn: Callable[..., Any], call: object = None) -> FunctionRef:
        """The pickled form of ``fn`` for ``call`` (a chunk's sink): the same for every
        chunk of one call. Raises what pickling it raised. Without ``call``, every use
        counts as a new call."""
        key = _key(fn)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.same(fn):  # a dead function's id may be reused
                self._entries.move_to_end(key)
                known = entry.calls.get(call) if call is not None else None
                if known is not None:
                    return known
            else:
                entry = None
        if entry is not None and entry.snapshot.holds() and entry.state_holds(fn):
            ref = entry.ref
        else:
            with Recording() as snapshot:
                ref = FunctionRef(next(self._ids), *self._dumps(fn))
            if entry is not None and not ref.fds and ref.payload == entry.ref.payload:
                ref = entry.ref  # pickled the same: the workers that have it keep it
            # The calls under way keep the pickle they started with.
            calls = entry.calls if entry is not None else weakref.WeakKeyDictionary()
            state = _state(fn, ref)
            entry = _Entry(_sameness(fn, state), ref, snapshot, calls, state)
        with self._lock:
            if hasattr(call, "__weakref__"):  # else (None too) it is checked at every use
                entry.calls[call] = ref
            self._entries[key] = entry
            self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return ref


def _key(fn: object) -> tuple[int, int]:
    """What the registry knows ``fn`` by: its id, or for a bound method (a new object at
    every ``obj.method``, so ``submit(obj.method, x)`` in a loop gives one each time)
    the ids of its function and its object."""
    if type(fn) is types.MethodType:
        return id(fn.__func__), id(fn.__self__)
    return id(fn), 0


def _sameness(fn: object, state: bytes | None) -> Callable[[object], bool]:
    """A test of whether a callable found under ``fn``'s key is ``fn`` again (an id is
    reused once its object dies), holding ``fn`` weakly where it can.

    Another bound method of the same function and object is ``fn`` again when its
    object's ``state`` is fingerprinted, and will be checked at each use; else only the
    same method object is (a fresh one is pickled again, as its object may have changed
    in place)."""
    if type(fn) is types.MethodType and state is not None:
        try:
            func, obj = weakref.ref(fn.__func__), weakref.ref(fn.__self__)
        except TypeError:  # an object that refuses weak references: known by itself
            pass
        else:

            def same_method(other: object) -> bool:
                return (
                    type(other) is types.MethodType
                    and other.__func__ is func()
                    and other.__self__ is obj()
                )

            return same_method
    try:
        held: Callable[[], object] = weakref.ref(fn)
    except TypeError:  # a callable object that refuses weak references
        held = functools.partial(_itself, fn)

    def same(other: object) -> bool:
        return other is held()

    return same


class _Entry:
    """A function in the registry: how to tell it again (``_sameness``), its latest
    pickle, what that pickle was made of, the fingerprint of the state it carried
    (``_state``), and the pickle each call under way uses (weakly, by call)."""

    __slots__ = ("calls", "ref", "same", "snapshot", "state")

    def __init__(
        self,
        same: Callable[[object], bool],
        ref: FunctionRef,
        snapshot: Snapshot,
        calls: weakref.WeakKeyDictionary[Any, FunctionRef],
        state: bytes | None,
    ) -> None:
        self.same = same
        self.ref = ref
        self.snapshot = snapshot
        self.calls = calls
        self.state = state

    def state_holds(self, fn: object) -> bool:
        """Whether ``fn`` holds what it held when pickled, as far as ``_state`` tells."""
        return self.state is None or fingerprint_of(fn) == self.state


def _state(fn: object, ref: FunctionRef) -> bytes | None:
    """A fingerprint of what a callable object, bound method or partial carries in its
    pickle, which the caller may change in place between two calls (``obj.k = 3``).

    None for a function (its ``Snapshot`` watches what it reads), and for a pickle that
    refers to shared memory or is too large to be taken again for every call: such a
    callable, like a large global, is known by its identity alone.
    """
    if isinstance(fn, types.FunctionType) or ref.fds or len(ref.payload) > FINGERPRINT_LIMIT:
        return None
    return fingerprint_of(fn)


def _itself(obj: object) -> object:
    return obj


def dumps_data(obj: object) -> bytes:
    """Pickle task arguments or results: plain pickle, else by value, else cloudpickle."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return dumps_function(obj)


def by_value(payload: bytes | memoryview) -> bool:
    """Whether a pickle ``dumps_data`` made may hold something pickled by value.

    Such a pickle names the module that rebuilds it (``byvalue``'s or cloudpickle's,
    itself inside a nested pickle); a plain pickle names no module of those unless
    the data holds those very words, which then costs only a false alarm. A view is
    searched in the whole of what it views (the rest is a message's header).
    """
    data = payload.obj if isinstance(payload, memoryview) else payload  # not copied
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(payload)
    return b"workpool.byvalue" in data or b"cloudpickle" in data


def names_main(payload: bytes) -> bool:
    """Whether a plain pickle may name something of ``__main__`` (a class, a function).

    Plain pickle sends a script's or a notebook's own class by its name in
    ``__main__``; a worker's ``__main__`` is not the caller's (an exec'd interpreter,
    a subinterpreter, a fork taken before the class was defined), so there the name
    is missing. A search of the bytes costs far less than a pickler that looks at
    every object; text that merely contains the word only costs a pickling by value.
    """
    return b"__main__" in payload


def dumps_items(obj: object) -> bytes:
    """Pickle items for a worker in another interpreter: as ``dumps_data``, but what
    plain pickle would name in ``__main__`` goes by value (``names_main``)."""
    payload = dumps_data(obj)
    if names_main(payload):
        try:  # shared: the script's classes among them see what the initializer set up
            return dumps_function(obj, shared=True)
        except Exception:  # cloudpickle refuses it: the worker may know the name after all
            pass
    return payload


def unpicklable_reason(obj: Any) -> BaseException | None:
    """The exception pickling ``obj`` raises, or ``None`` if it pickles."""
    try:
        dumps_data(obj)
    except Exception as exc:
        return exc
    return None


def unpicklable_part(fn: object, seen: set[int] | None = None) -> str | None:
    """What a function carries by value (a global, a closure variable, a default; of
    a function it calls too) that cannot be pickled, in words, or None. Pickle's own
    error names only the type: "cannot pickle '_thread.lock' object"."""
    seen = set() if seen is None else seen
    if not isinstance(fn, types.FunctionType) or id(fn) in seen:
        return None
    seen.add(id(fn))
    carried = [
        (f"global {name!r}", fn.__globals__[name])
        for name in sorted(global_names(fn.__code__))
        if name in fn.__globals__
    ]
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        with contextlib.suppress(ValueError):  # a cell not yet assigned
            carried.append((f"closure variable {name!r}", cell.cell_contents))
    carried += [("default", value) for value in fn.__defaults__ or ()]
    carried += [(f"default of {name!r}", v) for name, v in (fn.__kwdefaults__ or {}).items()]
    for what, value in carried:
        if isinstance(value, types.FunctionType):
            inner = unpicklable_part(value, seen)
            if inner is not None:
                return inner
        elif unpicklable_reason(value) is not None:
            return f"the {what} of {fn.__qualname__}, a {type(value).__qualname__}"
    return None


def cannot_send(fn: object, where: str, error: BaseException) -> TypeError:
    """The ``TypeError`` of a function that pickling ``error`` kept from ``where``,
    naming what it carries that cannot go, if that is what stopped it."""
    part = unpicklable_part(fn)
    return TypeError(
        f"the function {fn!r} cannot be sent to {where}: {error}"
        + (f" ({part})" if part is not None else "")
    )


def picklable_runs(items: Sequence[Any]) -> Iterator[tuple[int, int, BaseException | None]]:
    """``items`` cut into ``(begin, end, reason)`` pieces, in order, for sending what can be.

    Runs of items that pickle come with ``reason`` None; each item that does not comes
    alone, with the exception pickling it raised. Engines send the runs and fail the
    others, so that one bad argument costs only its own task.
    """
    start = 0
    for position, item in enumerate(items):
        reason = unpicklable_reason(item)
        if reason is None:
            continue
        if position > start:
            yield start, position, None
        yield position, position + 1, reason
        start = position + 1
    if start < len(items):
        yield start, len(items), None
