"""What workpool checks and says about the files a user names (``checkpoint=``, ``trace=``).

Both kinds of file are named by a path the user typed, and both must not be mistaken
for the other: a trace would overwrite a checkpoint's SQLite database, and a
checkpoint must not take over a file that is not one. This module imports nothing, so
a traced call need not load ``sqlite3`` to make its check.
"""

from __future__ import annotations

import os

__all__ = ["SQLITE_MAGIC", "creation_error", "no_directory", "tilde_hint"]

# The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def tilde_hint(path: str) -> str:
    """What to add to an error about ``path`` if it has a "~" component, which only a
    shell expands; "" otherwise."""
    if not any(part.startswith("~") for part in path.split(os.sep)):
        return ""
    return " (Python does not expand ~ as a shell does: pass os.path.expanduser(path))"


def no_directory(directory: str) -> tuple[type[OSError], str]:
    """The error type, and the words, for a path whose ``directory`` is not one.

    It may be missing, or be a file: a path under ``notes.txt`` is not in a missing
    directory, and saying so would send the user looking for the wrong thing.
    """
    if os.path.exists(directory):
        return NotADirectoryError, "is not a directory"
    return FileNotFoundError, "does not exist"


def creation_error(directory: str) -> OSError | None:
    """Why no new file can be made in ``directory``, found by making one; None if it can.

    Permission bits do not tell: root passes ``os.access`` for a directory of /proc or
    /sys, where nothing can be created, and ACLs, quotas and some network file systems
    decide only when a file is made. The trial file has a name of its own and is
    removed at once.
    """
    name = os.path.join(directory, f".workpool-trial.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc
    os.close(fd)
    os.unlink(name)
    return None
