"""Which of the system's accelerations the process engine uses: decided once, here.

The engine has a fast path built on calls only Linux has, and a portable path for
every other POSIX system (macOS first). Each concern has one module that asks this
one which path to take; nothing else in the engine looks at the platform:

- shared segments: ``memfd_create``; portable: ``shm_open``, unlinked at once
  (``anonymous.py``);
- a worker's death: a pidfd; portable: the zygote's exit pipe, or waitpid
  (``lifeline.py``);
- the parent's death: ``PR_SET_PDEATHSIG`` and ``POLLRDHUP`` on the worker's socket;
  portable: a pipe whose write end only the parent holds (``parent_watch.py``);
- start: a zygote forked from the program; portable: a zygote exec'd as a fresh
  interpreter (``zygote.py``).

``WORKPOOL_PORTABLE=1`` in the environment (set before the program starts; it is read
when workpool is first imported) is a testing aid: it makes the engine take the
portable paths on Linux too, exactly those it takes on macOS, so that a Linux CI
proves them. Process workers are available on POSIX systems only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

__all__ = [
    "FORK_ZYGOTE",
    "LINUX",
    "PORTABLE",
    "PROCESSES",
    "USE_MEMFD",
    "USE_PDEATHSIG",
    "USE_PIDFD",
    "USE_PRCTL",
    "USE_RDHUP",
    "no_processes_reason",
]

#: The testing aid: take the portable paths even where the fast ones exist.
PORTABLE = os.environ.get("WORKPOOL_PORTABLE", "") not in ("", "0")

LINUX = sys.platform.startswith("linux")
_FAST = LINUX and not PORTABLE

#: Shared segments are memfds (else: shm_open, unlinked at once).
USE_MEMFD = _FAST and hasattr(os, "memfd_create")
#: A worker's end is watched through a pidfd (else: an exit pipe, or waitpid).
USE_PIDFD = _FAST and hasattr(os, "pidfd_open")
#: The kernel kills a worker whose parent dies (else: the parent-death pipe).
USE_PDEATHSIG = _FAST
#: A worker sees its socket's other end close without reading it (else: the pipe).
USE_RDHUP = _FAST
#: Process names through prctl (else: the command line says what a process is).
USE_PRCTL = _FAST
#: The zygote is forked from the program (else: exec'd as a fresh interpreter, which
#: is safe with Apple's frameworks, where fork without exec is not).
FORK_ZYGOTE = _FAST

#: Whether ``backend="process"`` can work here at all.
PROCESSES = os.name == "posix"


def no_processes_reason(usable: Iterable[str]) -> str:
    """Why process workers are unavailable here, naming the ``usable`` backends."""
    return (
        f"backend='process' needs a POSIX system (Linux, macOS); this is {sys.platform!r} "
        f"(os.name {os.name!r}). "
        f"These backends work here: {', '.join(repr(name) for name in usable)}"
    )
