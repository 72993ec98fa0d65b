"""One running call per checkpoint file: a lock on ``FILE.lock`` that dies with its holder.

The lock is a POSIX record lock (``fcntl.lockf``) on a separate file, for three reasons:

- SQLite takes and drops POSIX locks on the database file itself, and a process loses
  *all* its POSIX locks on a file as soon as it closes *any* descriptor of it, which
  SQLite does; a lock of ours on the database would vanish under us.
- The kernel releases the lock when its holder dies, however it dies: a SIGKILLed run
  leaves no stale lock, and no pid file has to be second-guessed.
- A POSIX lock belongs to a process and is not inherited over ``fork``: a worker forked
  while a call holds the lock does not hold it too (an ``flock`` lock would be shared
  with every forked child and outlive the call).

Because a POSIX lock belongs to the whole process, two calls in one process would not
exclude each other through it; a set of the lock files this process holds does that,
by device and inode: a path can change while a call holds it (a directory renamed, a
file system mounted at another path too), and one lock file must be one key. Every
name of a journal that a call can use leads to its one lock file: the lock is beside
the file's real path (symbolic links, ``..`` and relative paths resolved), and a
journal with several hard links is refused before it is locked (``store``), as SQLite
keeps its WAL beside the name it is opened by.
The holder writes its pid into the file so that the refusal can say who holds it. The
lock file is removed when released; a process that locked a file just unlinked checks
that its lock is on the file now at that path, and tries again if not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading

from workpool.errors import CheckpointBusy

__all__ = ["JournalLock"]

_PID_WIDTH = 20  # a pid, padded with spaces: longer than any pid, so it covers the last
_held: set[tuple[int, int]] = set()  # lock files this process holds: (st_dev, st_ino)
_held_guard = threading.Lock()


def _forget_in_child() -> None:
    # A forked child holds none of its parent's POSIX locks.
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class JournalLock:
    """The exclusive right of one call to use a checkpoint file. ``release()`` ends it."""

    def __init__(self, journal_path: str) -> None:
        """Take the lock for ``journal_path``; raise ``CheckpointBusy`` if another call has it."""
        # Beside the file itself: a call through a symbolic link to it takes the same lock.
        self.path = os.path.realpath(journal_path) + ".lock"
        with _held_guard:
            # Looked up before opening it: closing a descriptor of a lock file this
            # process holds would drop the lock (see above).
            try:
                if _identity(os.stat(self.path)) in _held:
                    raise CheckpointBusy(
                        f"checkpoint {journal_path} is in use by another call in this process:"
                        " one call at a time may use a checkpoint file (an imap or Pool.map"
                        " iterator holds it until it is read to its end or closed: call its"
                        " close())"
                    )
            except OSError:
                pass  # none (no one holds it), or one that opening it will explain
            self._fd = self._lock_file(journal_path)
            self._key = _identity(os.fstat(self._fd))
            _held.add(self._key)

    def _lock_file(self, journal_path: str) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:  # an errno-built OSError: the right subclass, a whole message
                raise OSError(
                    exc.errno,
                    f"checkpoint {journal_path} cannot be used: its lock file {self.path} "
                    f"cannot be opened ({exc.strerror}); a checkpoint needs a directory "
                    "it can write in",
                ) from None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)  # we hold no lock on this file, so closing loses nothing
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                who = f"process {holder}" if holder else "another process"
                raise CheckpointBusy(
                    f"checkpoint {journal_path} is in use by {who}: one call at a time "
                    "may use a checkpoint file"
                ) from None
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and _identity(now) == _identity(mine):
                # Written over whatever a killed holder left, never truncated first:
                # ext4 flushes a file truncated and then rewritten when it is closed
                # (its auto_da_alloc), which would cost each call milliseconds.
                os.pwrite(fd, _pid_record(), 0)
                return fd
            os.close(fd)  # the holder removed it as we opened it: lock the new one

    def release(self) -> None:
        """Give the lock up (idempotent). The lock file is removed first, then unlocked."""
        with _held_guard:
            if self._fd < 0:
                return
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = -1
            _held.discard(self._key)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _pid_record() -> bytes:
    """This process's pid, as the lock file holds it: always the same length."""
    return f"{os.getpid():<{_PID_WIDTH}}\n".encode()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
