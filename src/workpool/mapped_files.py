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
other arrays are, so that every task sees them as they were when sent; so is one whose
path now names another file (saved anew over it), or where the system cannot say
which file a mapping holds (no ``/proc/self/maps``, as on macOS).
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
        status = os.fstat(fd)
        if status.st_size < needed:
            raise OSError(f"{root.filename} is shorter than the memmap over it")
        if _mapped_file(root) != (status.st_dev, status.st_ino):
            raise OSError(f"{root.filename} is no longer the file the memmap maps")
        return adopt_file(fd, status.st_size)
    except BaseException:
        os.close(fd)
        raise


def _mapped_file(root: Any) -> tuple[int, int] | None:
    """(device, inode) of the file ``root``'s mapping holds, as the system lists it.

    A new file saved under the same name (``np.save`` to the path again) is not the
    one the memmap maps, and the two can differ in every byte; only the process's own
    list of its mappings tells which file it is. None where there is no such list
    (the array is then copied, as any other).
    """
    import numpy

    address = numpy.frombuffer(root._mmap, dtype=numpy.uint8).__array_interface__["data"][0]
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                begin, _, end = fields[0].partition("-")
                if int(begin, 16) <= address < int(end, 16):
                    major, _, minor = fields[3].partition(":")
                    return os.makedev(int(major, 16), int(minor, 16)), int(fields[4])
    except (OSError, ValueError, IndexError):
        return None
    return None


def offset_in_file(array: Any, root: Any) -> int:
    """Where ``array``'s first element lies in the file of ``root``, which it views."""
    import numpy

    mapped = numpy.frombuffer(root._mmap, dtype=numpy.uint8)
    here = array.__array_interface__["data"][0] - mapped.__array_interface__["data"][0]
    return _start(root) + int(here)
