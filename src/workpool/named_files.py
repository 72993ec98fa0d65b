"""What workpool checks and says about the files a user names (``checkpoint=``, ``trace=``).

Both kinds of file are named by a path the user typed, and both must not be mistaken
for the other: a trace would overwrite a checkpoint's SQLite database, and a
checkpoint must not take over a file that is not one. This module imports nothing, so
a traced call need not load ``sqlite3`` to make its check.
"""

from __future__ import annotations

import os

__all__ = ["SQLITE_MAGIC", "no_directory", "tilde_hint"]

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
