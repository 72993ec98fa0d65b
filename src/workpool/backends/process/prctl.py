"""Linux process controls (``prctl``) that the zygote and the workers apply to themselves.

- ``set_name``: the process name that ``ps -o comm``, ``top`` and ``/proc/PID/comm``
  show, so that workpool's processes do not look like stray copies of the program.
- ``die_with_parent``: the kernel kills this process the moment its parent dies.

Both go through ``ctypes``, imported only when called (it costs milliseconds), in the
child processes; elsewhere than Linux they do nothing and say so by returning False.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["die_with_parent", "set_name"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, argument: object) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        # The symbols already loaded into this process include libc's; looking the
        # library up by name (ctypes.util.find_library) would run ldconfig.
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, argument, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_name(name: str) -> bool:
    """Name this process (its main thread, when called from it); at most 15 bytes."""
    return _prctl(_PR_SET_NAME, name.encode()[:15])


def die_with_parent() -> bool:
    """Have the kernel send SIGKILL to this process when the thread that forked it ends."""
    return _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
