"""Read-only ``numpy.memmap`` arrays, sent to process workers as their file.

A memmap opened read-only (mode ``"r"``) is a file's pages, which the caller cannot
change through it. Copying such an array into shared memory, as any other large
array is, would read the whole file into memory once per call (a file larger than
memory could not be sent at all). Instead the file is opened again and its
descriptor travels as a segment's does: each worker maps the same pages of the page
cache, read-only, as joblib sends a memmap::

    np.memmap(path, mode="r")[a:b]   open(path) -> a Segment mapping the whole file
      root: the memmap over the mmap    the array's offset there: the root's offset in
      (its .filename, .offset)          the file plus the array's place in the root

Memmaps the caller may write (``"r+"``, ``"w+"``, copy-on-write ``"c"``) are copied as
other arrays are, so that every task sees them as they were when sent.
"""

from __future__ import annotations

import mmap
import os

from workpool.segments import Segment, adopt_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["map_file", "offset_in_file", "read_only_memmap"]


def read_only_memmap(array: Any) -> Any:
    """The read-only ``numpy.memmap`` whose file pages ``array`` views, or None."""
    import numpy  # only arrays come here

    base: Any = array
    while base is not None:
        if isinstance(base, numpy.memmap):
            own = getattr(base, "_mmap", None)
            if own is not None and base.base is own:  # the memmap that made the mapping
                readable = base.mode == "r" and base.filename is not None
                return base if readable else None
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def _start(root: Any) -> int:
    """Where in its file a memmap's mapping starts (NumPy aligns it down)."""
    return int(root.offset) - int(root.offset) % mmap.ALLOCATIONGRANULARITY


def map_file(root: Any) -> Segment:
    """The file of the read-only memmap ``root``, mapped read-only, all of it.

    All of it, whatever part the memmap views: two memmaps over different parts of one
    file then reach a worker as one mapping. Raises ``OSError`` if the file cannot be
    opened again, or is no longer as long as the memmap says (replaced or cut short).
    """
    needed = _start(root) + len(root._mmap)
    fd = os.open(root.filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if size < needed:
            raise OSError(f"{root.filename} is shorter than the memmap over it")
        return adopt_file(fd, size)
    except BaseException:
        os.close(fd)
        raise


def offset_in_file(array: Any, root: Any) -> int:
    """Where ``array``'s first element lies in the file of ``root``, which it views."""
    import numpy

    mapped = numpy.frombuffer(root._mmap, dtype=numpy.uint8)
    here = array.__array_interface__["data"][0] - mapped.__array_interface__["data"][0]
    return _start(root) + int(here)
