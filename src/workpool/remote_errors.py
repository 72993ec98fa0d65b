"""A task's exception on its way back from a worker, for every backend that has one far away.

The exception may not pickle (it holds a lock, a frame, a socket), or may not unpickle
where it arrives (its ``__init__`` wants other arguments than its ``args``, or its class
is not importable there). So it travels as a ``PackedError``: the pickled exception, or
when pickle cannot rebuild it, its class, ``args`` and the attributes that pickle, to be
rebuilt without ``__init__`` (the exceptions it holds each the same way); and always
its type's name, its message and its formatted traceback::

    worker (process, subinterpreter)              caller
    --------------------------------              ------
    except BaseException as exc:
        pack_error(exc)  --- pickled tuple --->   unpack_error(packed)
                                                  its own type, or TaskError;
                                                  __cause__ = RemoteTraceback(text)
"""

from __future__ import annotations

import builtins
import pickle
import sys

from workpool.errors import RemoteTraceback, TaskError, set_attribute
from workpool.serialize import dumps_data

__all__ = ["PackedError", "pack_error", "unpack_error"]

# (pickled exception or None, "module.QualName", str(exc), formatted traceback)
PackedError = tuple[bytes | None, str, str, str]


def pack_error(exc: BaseException, text: str | None = None) -> PackedError:
    """Turn an exception raised in a worker into something that surely pickles.

    ``text`` is the traceback to send with it, when not the exception's own (a relay
    that received the error from elsewhere passes on the traceback it came with).
    """
    if text is None:
        # Imported at the first failure: a worker whose tasks all succeed never needs it.
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's str() failed>"
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    # Frames hold locals that may not pickle, and are in the text.
    set_attribute(exc, "__traceback__", None)
    pickled: bytes | None
    try:
        pickled = dumps_data(exc)
        pickle.loads(pickled)  # an exception whose __init__ wants other arguments fails here
    except Exception:
        pickled = _without_init(exc)
    return (pickled, name, message, text)


def _without_init(exc: BaseException) -> bytes | None:
    """Pickle ``exc`` as its class, ``args`` and attributes, to be rebuilt without ``__init__``.

    Exceptions pickle as ``cls(*args)``, which fails for one whose ``__init__`` takes
    other arguments than it passes on (``def __init__(self, path, code)`` calling
    ``super().__init__(path)``, keyword-only arguments). Attributes that do not make the
    trip are left out, and a note names them. None if even this does not round-trip here.
    """
    try:
        pickled = dumps_data(_recipe(exc, {id(exc)}))
        pickle.loads(pickled)
    except Exception:
        return None
    return pickled


def _recipe(exc: BaseException, rebuilding: set[int]) -> _Rebuild:
    """What rebuilds ``exc`` without its ``__init__``, from what of it pickles.

    The exceptions it holds (a group's members, one kept as an attribute or passed as an
    argument: a retrying wrapper's last error) each travel as pickle or as a recipe of
    their own, so that one pickle cannot rebuild does not lose the others.
    ``rebuilding`` holds the ids of those whose recipe is being made: one that holds
    itself leaves that attribute out.
    """
    state: dict[str, object] = {}
    left_out: list[str] = []
    for key, value in getattr(exc, "__dict__", {}).items():
        try:
            state[key] = _portable(value, rebuilding)
        except Exception:
            left_out.append(key)
    if left_out:
        notes = list(state.get("__notes__", []))  # type: ignore[call-overload]
        notes.append(f"workpool: attributes the worker could not send: {', '.join(left_out)}")
        state["__notes__"] = notes
    members = _group_members(exc)
    if members is None:
        args = tuple(
            _portable(arg, rebuilding) if isinstance(arg, BaseException) else arg
            for arg in exc.args
        )
    else:
        args = (exc.args[0], [_portable(member, rebuilding) for member in members])
    return _Rebuild(type(exc), args, state)


def _portable(value: object, rebuilding: set[int]) -> object:
    """``value`` itself if pickle rebuilds it, else an exception's recipe; else raise."""
    try:
        pickle.loads(dumps_data(value))
    except Exception:
        if not isinstance(value, BaseException) or id(value) in rebuilding:
            raise
        rebuilding.add(id(value))
        try:
            recipe = _recipe(value, rebuilding)
        finally:
            rebuilding.discard(id(value))
        pickle.loads(dumps_data(recipe))
        return recipe
    return value


def _group_members(exc: BaseException) -> list[BaseException] | None:
    """The exceptions an exception group (Python 3.11+) holds; None for any other."""
    if sys.version_info >= (3, 11) and isinstance(exc, builtins.BaseExceptionGroup):
        return list(exc.exceptions)
    return None


class _Rebuild:
    """Pickles as a call that makes an exception without running its ``__init__``."""

    def __init__(
        self, cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
    ) -> None:
        self.recipe = (cls, args, state)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_rebuild, self.recipe)


def _rebuild(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
) -> BaseException:
    exc = cls.__new__(cls, *args)
    set_attribute(exc, "args", args)
    exc.__dict__.update(state)
    return exc


def unpack_error(packed: PackedError) -> BaseException:
    """Rebuild the worker's exception as its own type, with the worker's traceback as cause.

    An exception that could not be pickled or cannot be unpickled here arrives as a
    ``TaskError`` carrying its type name, message and traceback text.
    """
    pickled, name, message, text = packed
    exc: BaseException | None = None
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = TaskError(name, message, text)
    set_attribute(exc, "__cause__", RemoteTraceback(text))
    return exc
