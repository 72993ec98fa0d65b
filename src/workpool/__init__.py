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
"""

from __future__ import annotations

from workpool._version import __version__ as __version__
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

for _public in (Pool, Segment, advise, empty, imap, map, share, starmap, zeros):
    _public.__module__ = "workpool"
del _public
