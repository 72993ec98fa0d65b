"""workpool: run a function over many inputs on threads or processes, behind one API.

The public face. Every public name is re-exported here; the modules behind it are
internal and may change:

- ``oneshot``   ``map``, ``imap``, ``starmap``: a pool for one call
- ``pool``      ``Pool``, a reusable ``concurrent.futures.Executor``
- ``segments``  ``share()`` and ``Segment``: objects in shared memory
- ``shared_arrays`` ``empty()`` and ``zeros()``: NumPy arrays made in shared memory
- ``sharing``   how large NumPy arrays reach process workers in shared memory
- ``errors``    the exceptions, all rooted at ``WorkpoolError``
- ``advise``    the measurement behind ``advise()`` and ``backend="auto"``
- ``run``       how one call feeds chunks and orders results
- ``backends``  one engine per module; ``backends/process`` is the process engine
- ``checkpoint`` the journal behind ``checkpoint=`` (imported only when used)

Every name but ``__version__`` is loaded on first use (``__getattr__`` below), so that
``import workpool`` costs next to nothing, and a process that needs only part of the
library (a worker, the zygote, a plain ``Pool``) never imports the rest.
"""

from __future__ import annotations

import sys

from workpool._version import __version__ as __version__

# typing (with re, which it imports) would be most of this module's cost, and importlib
# the rest; type checkers read any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.advise import Advice as Advice
    from workpool.advise import advise as advise
    from workpool.errors import BrokenPool as BrokenPool
    from workpool.errors import CheckpointBusy as CheckpointBusy
    from workpool.errors import CheckpointMismatch as CheckpointMismatch
    from workpool.errors import RemoteTraceback as RemoteTraceback
    from workpool.errors import SharedMemoryWarning as SharedMemoryWarning
    from workpool.errors import TaskError as TaskError
    from workpool.errors import TaskTimeout as TaskTimeout
    from workpool.errors import WorkerCrashed as WorkerCrashed
    from workpool.errors import WorkpoolError as WorkpoolError
    from workpool.oneshot import imap as imap
    from workpool.oneshot import map as map  # noqa: A004 - mirrors the builtin on purpose
    from workpool.oneshot import starmap as starmap
    from workpool.pool import Pool as Pool
    from workpool.segments import Segment as Segment
    from workpool.segments import share as share
    from workpool.shared_arrays import empty as empty
    from workpool.shared_arrays import zeros as zeros

__all__ = [
    "Advice",
    "BrokenPool",
    "CheckpointBusy",
    "CheckpointMismatch",
    "Pool",
    "RemoteTraceback",
    "Segment",
    "SharedMemoryWarning",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkpoolError",
    "advise",
    "empty",
    "imap",
    "map",
    "share",
    "starmap",
    "zeros",
]

# Where each public name lives. The errors and ``Advice`` say ``workpool`` is their
# module themselves; the others are told so when first loaded here.
_HOMES = {
    "Advice": "advise",
    "BrokenPool": "errors",
    "CheckpointBusy": "errors",
    "CheckpointMismatch": "errors",
    "Pool": "pool",
    "RemoteTraceback": "errors",
    "Segment": "segments",
    "SharedMemoryWarning": "errors",
    "TaskError": "errors",
    "TaskTimeout": "errors",
    "WorkerCrashed": "errors",
    "WorkpoolError": "errors",
    "advise": "advise",
    "empty": "shared_arrays",
    "imap": "oneshot",
    "map": "oneshot",
    "share": "segments",
    "starmap": "oneshot",
    "zeros": "shared_arrays",
}
_RENAMED = frozenset(
    {"Pool", "Segment", "advise", "empty", "imap", "map", "share", "starmap", "zeros"}
)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"{__name__}.{home}"
    __import__(module)
    value = getattr(sys.modules[module], name)
    if name in _RENAMED:
        value.__module__ = __name__
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _PublicFace(type(sys)):  # type: ignore[misc]  # types.ModuleType, without importing types
    """This package, which keeps the function ``advise`` visible over the module ``advise``.

    Importing a submodule binds it as an attribute of its package, after the fact; the
    submodule ``workpool.advise`` would then hide the function ``workpool.advise``
    whenever something imported it before the function was first asked for.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "advise" and isinstance(value, type(sys)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PublicFace
