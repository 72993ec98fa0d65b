"""Checkpoint and resume: a journal of finished results, so a killed call continues.

``checkpoint="run.ckpt"`` makes a call journal each finished chunk in an SQLite file;
a later call with the same file, function and input runs only what is missing. This
package is imported only by calls that ask for it (``import workpool`` does not load
``sqlite3``). Its modules, from the bottom up:

- ``digest``    canonical encodings of input items: what "the same input" means
- ``identity``  what "the same function" means
- ``lock``      one call per file, released by the kernel when its holder dies
- ``store``     the SQLite file and its side files: schema, reads, writes, checks
- ``writer``    the one thread writing a file, committing in batches
- ``journal``   the file as a call uses it, and the ``accept`` / ``clear`` edits
"""

from __future__ import annotations

from workpool.checkpoint.journal import Journal as Journal
from workpool.checkpoint.journal import accept as accept
from workpool.checkpoint.journal import clear as clear
from workpool.checkpoint.journal import summary as summary

__all__ = ["Journal", "accept", "clear", "summary"]
