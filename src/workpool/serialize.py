"""How functions and data cross into another process.

Functions go through cloudpickle, so lambdas, closures and functions defined in
``__main__`` or a notebook travel by value; each is pickled once and sent once per
worker. Data goes through the standard pickle first (fast, protocol 5) and falls back
to cloudpickle only when the standard pickle refuses it.
"""

from __future__ import annotations

import itertools
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "FunctionRef",
    "FunctionRegistry",
    "dumps_data",
    "dumps_function",
    "loads",
    "unpicklable_reason",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL

loads = pickle.loads


def dumps_function(fn: object) -> bytes:
    """Pickle a callable by value where plain pickle would need it importable."""
    import cloudpickle  # imported on first use: most programs never need it

    payload: bytes = cloudpickle.dumps(fn, protocol=PROTOCOL)
    return payload


class FunctionRef(NamedTuple):
    """A function pickled once, and the id workers know it by."""

    fn_id: int
    payload: bytes


class FunctionRegistry:
    """The functions a pool has run, each pickled once, most recently used kept.

    Workers cache functions by id, so a pool running the same function over many
    chunks pickles and sends it once per worker rather than once per chunk.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[Callable[..., Any], FunctionRef]] = OrderedDict()
        self._ids = itertools.count(1)

    def ref(self, fn: Callable[..., Any]) -> FunctionRef:
        """The pickled form of ``fn``; raises what pickling it raised."""
        key = id(fn)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is fn:  # the id of a dead function may be reused
                self._entries.move_to_end(key)
                return entry[1]
        ref = FunctionRef(next(self._ids), dumps_function(fn))
        with self._lock:
            self._entries[key] = (fn, ref)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return ref


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
