"""How functions and data cross into another process.

Functions go through cloudpickle, so lambdas, closures and functions defined in
``__main__`` or a notebook travel by value; each is pickled once and sent once per
worker. Data goes through the standard pickle first (fast, protocol 5) and falls back
to cloudpickle only when the standard pickle refuses it.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["dumps_data", "dumps_function", "loads", "unpicklable_reason"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

loads = pickle.loads


def dumps_function(fn: object) -> bytes:
    """Pickle a callable by value where plain pickle would need it importable."""
    import cloudpickle  # imported on first use: most programs never need it

    payload: bytes = cloudpickle.dumps(fn, protocol=PROTOCOL)
    return payload


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
