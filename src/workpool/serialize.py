"""How functions and data cross into another process.

A function importable by name travels as its name, through the standard pickle.
Lambdas, closures and anything defined in ``__main__`` or a notebook travel by value,
through cloudpickle, which is imported only then: it costs more to import than a
whole pool costs to start. Each function is pickled once and sent once per worker.
Data goes through the standard pickle first (fast, protocol 5) and falls back to
cloudpickle only when the standard pickle refuses it.
"""

from __future__ import annotations

import functools
import io
import itertools
import pickle
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "FunctionRef",
    "FunctionRegistry",
    "dumps_data",
    "dumps_function",
    "loads",
    "main_defines_functions",
    "unpicklable_reason",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

loads = pickle.loads


class _NeedsValue(Exception):
    """Raised while pickling by name, at the first object that must travel by value."""


class _ByNamePickler(pickle.Pickler):
    """The standard pickler, refusing what lives in ``__main__``.

    ``__main__`` exists in a worker too, but not as the caller's: a function or class
    from it must travel by value, with the globals it sees now.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and obj.__module__ == "__main__":
            raise _NeedsValue
        return NotImplemented


def dumps_function(fn: object) -> bytes:
    """Pickle a callable (or a tuple holding some): by name where it can, else by value.

    Once cloudpickle is imported, it does all of it, so that modules the program
    registered with ``cloudpickle.register_pickle_by_value`` still travel by value.
    """
    if "cloudpickle" not in sys.modules:
        buffer = io.BytesIO()
        try:
            _ByNamePickler(buffer, PROTOCOL).dump(fn)
        except Exception:  # _NeedsValue, or a lambda or closure plain pickle refuses
            pass
        else:
            return buffer.getvalue()
    import cloudpickle

    payload: bytes = cloudpickle.dumps(fn, protocol=PROTOCOL)
    return payload


def main_defines_functions() -> bool:
    """Does the program's ``__main__`` define functions (which travel by value)?"""
    main = sys.modules.get("__main__")
    if main is None:
        return False
    return any(
        isinstance(value, types.FunctionType) and value.__module__ == "__main__"
        for value in list(vars(main).values())
    )


class FunctionRef(NamedTuple):
    """A function pickled once, and the id workers know it by."""

    fn_id: int
    payload: bytes


class FunctionRegistry:
    """The functions a pool has run, each pickled once, most recently used kept.

    Workers cache functions by id, so a pool running the same function over many
    chunks pickles and sends it once per worker rather than once per chunk. The
    registry holds each function weakly where it can: a long-lived pool must not keep
    alive what it was given (a bound method keeps its whole object) once the caller
    is done with it.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[Callable[[], object], FunctionRef]] = OrderedDict()
        self._ids = itertools.count(1)

    def ref(self, fn: Callable[..., Any]) -> FunctionRef:
        """The pickled form of ``fn``; raises what pickling it raised."""
        key = id(fn)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is fn:  # a dead function's id may be reused
                self._entries.move_to_end(key)
                return entry[1]
        ref = FunctionRef(next(self._ids), dumps_function(fn))
        try:
            holder: Callable[[], object] = weakref.ref(fn)
        except TypeError:  # a callable object that refuses weak references
            holder = functools.partial(_itself, fn)
        with self._lock:
            self._entries[key] = (holder, ref)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return ref


def _itself(obj: object) -> object:
    return obj


def dumps_data(obj: object) -> bytes:
    """Pickle task arguments or results; cloudpickle only if plain pickle refuses."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        import cloudpickle

        payload: bytes = cloudpickle.dumps(obj, protocol=PROTOCOL)
        return payload


def unpicklable_reason(obj: Any) -> BaseException | None:
    """The exception pickling ``obj`` raises, or ``None`` if it pickles."""
    try:
        dumps_data(obj)
    except Exception as exc:
        return exc
    return None
