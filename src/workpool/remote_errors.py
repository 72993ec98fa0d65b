"""A task's exception on its way back from a worker, for every backend that has one far away.

The exception may not pickle (it holds a lock, a frame, a socket), or may not unpickle
where it arrives (its class needs other arguments, or is not importable there). So it
travels as a ``PackedError``: the pickled exception when that works, and always its
type's name, its message and its formatted traceback::

    worker (process, subinterpreter)              caller
    --------------------------------              ------
    except BaseException as exc:
        pack_error(exc)  --- pickled tuple --->   unpack_error(packed)
                                                  its own type, or TaskError;
                                                  __cause__ = RemoteTraceback(text)
"""

from __future__ import annotations

import pickle

from workpool.errors import RemoteTraceback, TaskError
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
    try:
        exc.__traceback__ = None  # frames hold locals that may not pickle, and are in the text
        pickled: bytes | None = dumps_data(exc)
    except Exception:
        pickled = None
    return (pickled, name, message, text)


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
    exc.__cause__ = RemoteTraceback(text)
    return exc
