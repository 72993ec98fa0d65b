"""The library's own exceptions, and how a task's failure is dressed for the caller.

A task's own exception reaches the caller as its original type. What the library adds
is context: a note naming the task's input position and the worker, and, when the task
ran in another process, the worker-side traceback as text in ``__cause__``.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = [
    "BrokenPool",
    "CheckpointBusy",
    "CheckpointMismatch",
    "RemoteTraceback",
    "SharedMemoryWarning",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkpoolError",
    "about_the_pool",
    "add_note",
    "call_timed_out",
    "cancelled",
    "is_broken_pool",
    "is_cancelled",
    "note_origin",
    "one_for_each_call",
    "outside_workpool",
    "set_attribute",
]


class WorkpoolError(Exception):
    """Base class of every exception the library raises on its own account."""


class TaskTimeout(WorkpoolError, TimeoutError):
    """A task ran longer than its ``task_timeout``."""


class WorkerCrashed(WorkpoolError):
    """The worker process died while it ran the task (signal, ``os._exit``, out of memory)."""


_BROKEN_POOL_DOC = (
    "The pool cannot go on, for instance because the initializer fails in every worker."
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from typing import Any

    class BrokenPool(WorkpoolError, concurrent.futures.BrokenExecutor):
        __doc__ = _BROKEN_POOL_DOC


# BrokenPool is an Executor's BrokenExecutor, and so needs concurrent.futures, which
# imports logging: a few milliseconds that worker processes, which import this module
# but never raise it, should not pay. It is made on first use (``__getattr__``), once.
_broken_pool_lock = threading.Lock()


def _define_broken_pool() -> type[WorkpoolError]:
    import concurrent.futures

    with _broken_pool_lock:
        made = globals().get("BrokenPool")
        if made is None:
            made = type(
                "BrokenPool",
                (WorkpoolError, concurrent.futures.BrokenExecutor),
                {"__doc__": _BROKEN_POOL_DOC, "__module__": "workpool"},
            )
            globals()["BrokenPool"] = made
    return made


def is_broken_pool(error: BaseException) -> bool:
    """Whether ``error`` is a ``BrokenPool``; False at no cost while none was ever made."""
    made = globals().get("BrokenPool")
    return made is not None and isinstance(error, made)


def cancelled(message: str) -> BaseException:
    """``concurrent.futures.CancelledError(message)``, importing that module only now."""
    import concurrent.futures

    return concurrent.futures.CancelledError(message)


def one_for_each_call(error: BaseException) -> BaseException:
    """A fresh copy of a pool-wide ``error`` (a cancellation, a ``BrokenPool``) for one chunk.

    A pool that stops or breaks fails the chunks of every call it holds. The calls may
    raise in different threads, and one object raised in two threads gathers both their
    tracebacks, and both calls' notes. Same type, arguments and cause; nothing else.
    """
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__
    return copy


def call_timed_out(timeout: float) -> BaseException:
    """The ``concurrent.futures.TimeoutError`` a call raises when ``timeout`` ran out."""
    import concurrent.futures  # only now: a plain map need not import it

    return concurrent.futures.TimeoutError(
        f"the results were not all ready within timeout={timeout:g}s"
    )


def is_cancelled(error: BaseException) -> bool:
    """Whether ``error`` is ``concurrent.futures.CancelledError``.

    False at no cost while ``concurrent.futures`` was never imported: there can be no
    such error then, and a plain map need not import it (and ``logging`` with it).
    """
    # Read with a default: another thread may be importing it, not yet past its names.
    cancelled = getattr(sys.modules.get("concurrent.futures"), "CancelledError", None)
    return cancelled is not None and isinstance(error, cancelled)


def about_the_pool(error: BaseException) -> bool:
    """Whether ``error`` is a pool's word about itself (a ``BrokenPool``, a cancellation),
    made for the chunks it fails, rather than the same type raised by a task.

    A pool makes those without raising them; a task's own was raised (it has a
    traceback), or comes from a worker far away with that traceback as its cause.
    """
    if not (is_cancelled(error) or is_broken_pool(error)):
        return False
    return error.__traceback__ is None and not isinstance(error.__cause__, RemoteTraceback)


def __getattr__(name: str) -> Any:
    if name == "BrokenPool":
        return _define_broken_pool()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CheckpointMismatch(WorkpoolError, ValueError):
    """A checkpoint file belongs to another function, or to other input at some positions.

    A changed function is found when the call starts, before anything runs; changed
    input when the call reads the positions concerned, which the message names.
    """


class CheckpointBusy(WorkpoolError):
    """A checkpoint file is in use by another call that is still running."""


class SharedMemoryWarning(RuntimeWarning):
    """Shared memory could not be made for a call's large arrays: they were copied instead.

    The call still runs, only slower and using more memory. The message says why (out
    of file descriptors or memory, or no shared memory on this system).
    """


class TaskError(WorkpoolError):
    """A task failed with an exception that could not travel back as itself.

    This happens when the exception cannot be pickled in the worker or unpickled in the
    parent. The original type's name, its message and the worker's traceback are kept.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[type[TaskError], tuple[str, str, str]]:
        return (type(self), (self.type_name, self.message, self.traceback_text))


class RemoteTraceback(Exception):
    """Carries the traceback of a task that failed in another process, as text.

    It is set as the ``__cause__`` of the re-raised exception so that the worker's
    frames appear in the caller's traceback.
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n\n" + '"""\n' + self.traceback_text.rstrip("\n") + '\n"""'


_ORIGIN = "workpool: raised by "


def note_origin(exc: BaseException, where: str) -> None:
    """Note on ``exc`` where it was raised: ``"workpool: raised by " + where``.

    Only the latest such note is kept. A program may keep one exception and raise it
    from every task that fails; a note per failure would grow it without end in a
    long-lived pool.
    """
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(_ORIGIN))]
    add_note(exc, _ORIGIN + where)


def add_note(exc: BaseException, note: str) -> None:
    """Attach ``note`` to ``exc`` as ``BaseException.add_note`` (3.11+) does, and never fail.

    The exception is the task's, which must reach the caller as it is: one whose class
    refuses assignments (a frozen dataclass refuses them all) gets its notes set past
    that; notes kept in a tuple go on in a list; anything else there is left alone.
    """
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes.append(note)
        return
    if notes is None:
        notes = [note]
    elif isinstance(notes, tuple):
        notes = [*notes, note]
    else:
        return
    try:
        set_attribute(exc, "__notes__", notes)
    except Exception:  # an exception type of an extension module, without a __dict__
        return


def set_attribute(exc: BaseException, name: str, value: object) -> None:
    """``exc.<name> = value``, past the ``__setattr__`` of its class, as ``raise ... from``
    sets ``__cause__``: for what every exception has (``__cause__``, ``__traceback__``,
    ``__notes__``, ``args``), which a class that refuses assignments (a frozen dataclass)
    would otherwise refuse too."""
    object.__setattr__(exc, name, value)


for _cls in (
    WorkpoolError,
    TaskTimeout,
    WorkerCrashed,
    CheckpointMismatch,
    CheckpointBusy,
    SharedMemoryWarning,
    TaskError,
    RemoteTraceback,
):
    _cls.__module__ = "workpool"


_PACKAGE = os.path.join(os.path.dirname(__file__), "")  # this package's directory, and a /


def outside_workpool() -> int:
    """The ``stacklevel`` that attributes a warning to the code that called workpool.

    For the function calling this one, about to call ``warnings.warn``: the level of
    the first frame up the stack that is not workpool's own, so the warning names the
    user's line (a ``map`` call, the loop over an ``imap``). On a thread of workpool's,
    which no user code called, 1: the function itself.
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_code.co_filename.startswith(_PACKAGE):
        if frame.f_back is None:
            return 1
        frame = frame.f_back
        level += 1
    return 1 if frame.f_code.co_filename == threading.__file__ else level
