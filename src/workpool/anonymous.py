"""Anonymous shared memory: a file descriptor for memory that no name points to.

Shared segments (``segments.py``) and the process engine's slots (``slots.py``) need
memory that several processes map and that vanishes when the last of them lets go,
however each one dies. Two ways, chosen by ``_platform.py``:

- Linux: ``memfd_create``, a memory file that never had a name;
- elsewhere (macOS, other POSIX, ``WORKPOOL_PORTABLE=1``): ``shm_open`` under a random
  name, then ``shm_unlink`` at once, before the descriptor is used or handed on. From
  then on the memory is as nameless as a memfd: nothing appears in ``/dev/shm`` (or
  macOS's equivalent), and no tracker process is needed to clean up after a crash.
  Only a process killed in the microseconds between the two calls leaves a name.

The descriptor is close-on-exec; it reaches other processes only by being passed
(``SCM_RIGHTS``) or by ``fork``.
"""

from __future__ import annotations

import os

from workpool import _platform

__all__ = ["anonymous_file"]

# Attempts at a free random name before giving up (a clash is already unlikely).
_NAME_ATTEMPTS = 16


def anonymous_file(size: int, label: str) -> int:
    """A descriptor of ``size`` bytes of shared memory that only descriptors reach.

    ``label`` names a memfd for ``/proc/PID/fd`` listings. An ``OSError`` when the
    system cannot make one.
    """
    fd = _memfd(label) if _platform.USE_MEMFD else _unlinked_shm()
    try:
        os.ftruncate(fd, size)  # once only: macOS refuses to resize a shm object
    except BaseException:
        os.close(fd)
        raise
    return fd


def _memfd(label: str) -> int:
    return os.memfd_create(label, os.MFD_CLOEXEC)


def _unlinked_shm() -> int:
    try:
        import _posixshmem  # type: ignore[import-not-found]  # CPython's own, as multiprocessing.shared_memory uses it
    except ImportError as exc:
        raise OSError(f"no POSIX shared memory here: {exc}") from exc
    for _ in range(_NAME_ATTEMPTS):
        # macOS allows 31 characters in a name, the leading slash included.
        name = "/wp-" + os.urandom(10).hex()  # the source secrets uses, without its imports
        try:
            fd: int = _posixshmem.shm_open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=0o600)
        except FileExistsError:
            continue
        try:
            _posixshmem.shm_unlink(name)
            os.set_inheritable(fd, False)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise OSError("shm_open found no free name for a shared-memory segment")
