"""Linux process controls that the zygote and the workers apply to themselves.

- ``set_name``: the process name that ``ps -o comm``, ``top`` and ``/proc/PID/comm``
  show, so that workpool's processes do not look like stray copies of the program.
  Written to ``/proc/self/comm``, which is what ``prctl(PR_SET_NAME)`` changes.
- ``die_with_parent``: the kernel kills this process the moment its parent dies
  (``prctl(PR_SET_PDEATHSIG)``). Python has no call for it, so it goes through
  ``ctypes``, imported only then: that import costs a few milliseconds, which the
  zygote pays when it is idle rather than before its first worker (``zygote.py``).

Elsewhere than Linux, and in portable mode (``_platform.py``), both do nothing and say
so by returning False.
"""

from __future__ import annotations

import signal

from workpool import _platform

__all__ = ["die_with_parent", "set_name"]

_PR_SET_PDEATHSIG = 1


def set_name(name: str) -> bool:
    """Name this process (the name its main thread shows); at most 15 bytes are kept."""
    if not _platform.USE_PRCTL:
        return False
    try:
        with open("/proc/self/comm", "wb", buffering=0) as comm:
            comm.write(name.encode()[:15])
    except OSError:
        return False
    return True


def die_with_parent(signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when the thread that forked it ends.

    The caller must then check that its parent is still the one it expects: one that
    died just before this call is not signalled for.
    """
    if not _platform.USE_PRCTL:
        return False
    try:
        import ctypes

        # The symbols already loaded into this process include libc's; looking the
        # library up by name (ctypes.util.find_library) would run ldconfig.
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
