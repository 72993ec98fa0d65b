"""Shared-memory segments, and ``workpool.share``, which puts an object in one.

A *segment* is anonymous shared memory (``anonymous.py``: a memfd on Linux, an
unlinked ``shm_open`` object elsewhere) mapped into a process. It has no name anywhere:
it exists while some process holds its file descriptor or a mapping of it, so nothing
can be left behind in ``/dev/shm``, whoever dies when::

    share(array)                                 a worker process
      new_segment(nbytes)  fd, mmap               map_segment(fd)  mmap of the same memory
      reserve(...)         its pages, in one call
      copy the array in    (threads, if large)      an array over it: read-only
      an array over the segment  ==== fd ====>      unless shared writable
      (keeps the fd open, to send it on)

How the descriptor travels, beside a message to a worker, is ``sharing.py``'s part:
while it pickles a message, it is ``sending.frame``, and a ``Segment`` asks it for a
reference to put in the pickle instead of its bytes. Pickled anywhere else, a
``Segment`` travels as the bytes it holds.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import sys
import threading
import weakref

from workpool import _platform
from workpool.anonymous import anonymous_file
from workpool.fd_limit import make_room_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol, TypeVar, overload

    _Shared = TypeVar("_Shared")
else:
    # typing.overload, without importing typing when workpool loads (ruff then takes the
    # overloaded definitions for redefinitions: hence their noqa).
    def overload(fn: Any) -> Any:
        return fn


__all__ = [
    "SameProcessFrame",
    "Segment",
    "adopt_file",
    "find_segment",
    "holds_writable_share",
    "is_shared_writable",
    "map_segment",
    "new_segment",
    "numpy_if_array",
    "numpy_module",
    "pickles_as_an_ndarray",
    "reserve",
    "sending",
    "share",
    "writable_shares_exist",
]


if TYPE_CHECKING:

    class Frame(Protocol):
        """A message being pickled with descriptors beside it (``sharing.py``)."""

        def reference(self, segment: Segment) -> tuple[Any, ...]:
            """What a segment pickles as inside the message: a reference to its descriptor."""
            ...


class _Sending(threading.local):
    frame: Frame | None = None


#: The message this thread is pickling now, if any.
sending = _Sending()


class Segment(mmap.mmap):
    """A mapping of an anonymous shared-memory file; bytes-like (buffer protocol).

    ``share()`` returns one for bytes-like input; NumPy arrays from ``share()``,
    ``empty()`` and ``zeros()`` have one at the root of their ``.base``. It keeps its
    file descriptor open while it lives, to hand the memory on to workers;
    ``shared_writable`` says whether workers may write into it.
    """

    fd: int
    identity: tuple[int, int] | None
    shared_writable: bool
    received: bool  # mapped from another process (a worker's result), not made here
    private: bool  # mapped copy-on-write: what it holds may differ from the memory's

    def __reduce__(self) -> tuple[Any, ...]:
        frame = sending.frame
        if frame is None:  # pickled outside a message to a worker: by value
            return (bytes, (bytes(self),))
        return frame.reference(self)


class SameProcessFrame:
    """The frame of a message to another interpreter of this process (``segments.Frame``).

    A descriptor number is valid in every interpreter of the process, so a segment
    travels as its own and is mapped again where it arrives: writes into memory shared
    writable are seen here, as from a process worker. The sender keeps the segment, and
    so its descriptor, alive until the message is read. A copy-on-write view, whose
    bytes may differ from the memory's, travels as its bytes.
    """

    def reference(self, segment: Segment) -> tuple[Any, ...]:
        if getattr(segment, "private", False):
            return (bytes, (bytes(segment),))
        return (map_segment, (segment.fd, len(segment), segment.shared_writable))


# Python 3.13's mmap can map a file without keeping a descriptor of its own: a segment
# then holds one descriptor, not two.
_ONE_DESCRIPTOR: dict[str, bool] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def new_segment(size: int, *, writable_in_workers: bool) -> Segment:
    """A new segment of ``size`` bytes; an ``OSError`` if the system cannot make one."""
    try:
        fd = anonymous_file(max(size, 1), "workpool")
    except OSError as exc:
        raise _explained(exc) from None
    try:
        segment = Segment(fd, max(size, 1), **_ONE_DESCRIPTOR)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise _explained(exc) from None
        raise
    _adopt(segment, fd, writable_in_workers)
    return segment


def _explained(error: OSError) -> OSError:
    """``error``, saying why a process runs out of descriptors by holding shared memory.

    The system's "Too many open files" names no culprit: here it is most likely the
    thousands of segments the program keeps, each holding descriptors open.
    """
    if error.errno != errno.EMFILE:
        return error
    kept = "one" if _ONE_DESCRIPTOR else "two"
    return OSError(
        error.errno,
        f"{error.strerror}: this process has as many open as its limit allows, and each "
        "object in shared memory that it holds (from share(), empty() or zeros(), or a "
        f"large result kept) keeps {kept} open; hold fewer, or gather small arrays into "
        "one",
    )


def adopt_file(fd: int, size: int) -> Segment:
    """A read-only segment over the first ``size`` bytes of the file ``fd`` (which it keeps).

    For a file's pages sent to workers as they are (``mapped_files.py``). Raises
    ``OSError`` if the file cannot be mapped; ``fd`` is then still the caller's.
    """
    segment = Segment(fd, size, access=mmap.ACCESS_READ, **_ONE_DESCRIPTOR)
    _adopt(segment, fd, False)
    return segment


# Linux's MADV_POPULATE_WRITE (5.14 and later), which Python's mmap module does not name.
_POPULATE_WRITE = 23
# Pages mapped per call: mmap.madvise keeps the GIL while the system works.
_POPULATE_STEP = 8 << 20
# What posix_fallocate fails with when the memory is not there to be had.
_NO_MEMORY = (errno.ENOSPC, errno.ENOMEM, errno.EFBIG)


def reserve(segment: Segment, start: int, end: int, *, map_now: bool = False) -> None:
    """Give bytes ``[start, end)`` of a new segment their memory now, before they are written.

    A new segment has no pages yet: each 4 KiB page is found, zeroed and mapped by a
    page fault when it is first written, 50,000 faults for 200 MB. Allocating the range
    in one call (``posix_fallocate``) costs less, and where shared memory has a size
    limit (a tmpfs), asking for more raises ``OSError`` here, not ``SIGBUS`` at the
    write that finds no page.
    ``map_now`` also maps the pages into this process at once (``MADV_POPULATE_WRITE``,
    Linux 5.14+), so that writing them takes no fault at all: for memory that one thread
    is about to fill. Where the system has neither, pages come as they are written.
    """
    if end <= start:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(segment.fd, start, end - start)
        except OSError as exc:
            if exc.errno not in _NO_MEMORY:
                return  # this kind of memory cannot be allocated ahead: it comes as written
            raise OSError(
                exc.errno, f"cannot allocate {end - start:,} bytes of shared memory: {exc.strerror}"
            ) from exc
    if map_now and _platform.LINUX:
        first = start - start % mmap.PAGESIZE
        with contextlib.suppress(OSError):  # before Linux 5.14: pages come as written
            for offset in range(first, end, _POPULATE_STEP):
                segment.madvise(_POPULATE_WRITE, offset, min(_POPULATE_STEP, end - offset))


def _identity(fd: int) -> tuple[int, int] | None:
    """Which memory ``fd`` is, the same in every process; None where fstat cannot say.

    macOS reports no inode for shared-memory objects (every one is 0): there each
    arrival is mapped afresh rather than mistaken for another segment.
    """
    stat = os.fstat(fd)
    return (stat.st_dev, stat.st_ino) if stat.st_ino else None


# Whether this process ever made or mapped memory that workers may write (a checkpoint
# must refuse such memory in its input, and need not look for it before there is any).
_writable_seen = False


def _adopt(segment: Segment, fd: int, writable: bool, *, received: bool = False) -> None:
    global _writable_seen
    _writable_seen = _writable_seen or writable
    make_room_for(fd)
    segment.fd = fd
    segment.identity = _identity(fd)
    segment.received = received
    segment.shared_writable = writable
    segment.private = False
    weakref.finalize(segment, _close_quietly, fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# Mappings already made in this process, by the segment's identity, so that the same
# memory arriving with many messages is mapped once.
_mapped: weakref.WeakValueDictionary[tuple[tuple[int, int] | None, bool, bool], Segment] = (
    weakref.WeakValueDictionary()
)


def map_segment(
    fd: int, size: int, writable: bool, *, owned: bool = False, private: bool = False
) -> Segment | bytearray:
    """Map the segment whose descriptor arrived as ``fd`` (the caller still owns ``fd``).

    ``owned``: a worker's result, this process's own memory from now on; it is mapped
    writable, but passed on to workers read-only, as ``share()`` would pass it.
    ``private``: mapped copy-on-write, this process's own copy (never mapped twice).
    Where this process has no descriptor left to keep, memory that no other process
    writes comes back as a copy of its bytes instead (a ``bytearray``).
    """
    if private:
        own_copy = Segment(fd, size, access=mmap.ACCESS_COPY, **_ONE_DESCRIPTOR)
        _adopt(own_copy, os.dup(fd), False, received=True)
        own_copy.private = True
        return own_copy
    shared_writable = writable and not owned
    key = (_identity(fd), writable, shared_writable)
    segment = _mapped.get(key) if key[0] is not None else None
    if segment is not None and len(segment) >= size:  # (a file may have grown since)
        return segment
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    try:
        segment = Segment(fd, size, access=access, **_ONE_DESCRIPTOR)
        try:
            kept = os.dup(fd)  # to hand the memory on (to results, or to other workers)
        except BaseException:
            segment.close()
            raise
    except OSError as exc:
        if exc.errno not in _OUT_OF_DESCRIPTORS or shared_writable:
            raise
        # Every descriptor the hard limit allows is held (by a caller keeping thousands
        # of results): memory no one else writes is as good copied, as pickle brings it.
        try:
            return _copy_of(fd, size)
        except OSError:  # it cannot be read as a file here (macOS's shared memory)
            raise exc from None
    _adopt(segment, kept, shared_writable, received=True)
    if key[0] is not None:
        _mapped[key] = segment
    return segment


# What the system says when a process (or the system) has no descriptor left to give.
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def _copy_of(fd: int, size: int) -> bytearray:
    """The first ``size`` bytes of the memory ``fd`` holds, read into this process's own."""
    copy = bytearray(size)
    view = memoryview(copy)
    done = 0
    while done < size:
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], done)
        else:
            part = os.pread(fd, min(size - done, 1 << 30), done)
            view[done : done + len(part)] = part
            got = len(part)
        if not got:
            raise OSError(errno.EIO, f"shared memory ended at {done:,} of {size:,} bytes")
        done += got
    return copy


def find_segment(array: Any) -> tuple[Segment, int] | None:
    """The segment an array's memory lies in, and the array's byte offset in it."""
    base: Any = array
    while base is not None:
        if isinstance(base, Segment):
            start = _address_of(array) - _address_of_segment(base)
            return base, start
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def _address_of(array: Any) -> int:
    return int(array.__array_interface__["data"][0])


def _address_of_segment(segment: Segment) -> int:
    import numpy  # the segment is the root of an array's memory, so NumPy is here

    return _address_of(numpy.frombuffer(segment, dtype=numpy.uint8))


def writable_shares_exist() -> bool:
    """Whether this process ever made or mapped memory that workers may write."""
    return _writable_seen


def holds_writable_share(obj: Any, depth: int = 3) -> bool:
    """Whether ``obj`` is, or holds a few containers (or dataclasses) deep, memory from
    ``share(writable=True)``.

    Such memory is written by workers in place; a checkpoint cannot restore those
    writes, so calls with a checkpoint refuse it.
    """
    if not _writable_seen:  # none exists: nothing to look through
        return False
    if isinstance(obj, Segment):
        return obj.shared_writable
    if numpy_if_array(obj) is not None:
        found = find_segment(obj)
        return found is not None and found[0].shared_writable
    if depth > 0:
        if isinstance(obj, (tuple, list, set, frozenset)):
            return any(holds_writable_share(item, depth - 1) for item in obj)
        if isinstance(obj, dict):
            return any(holds_writable_share(item, depth - 1) for item in obj.values())
        fields = getattr(obj, "__dataclass_fields__", None)
        if fields is not None and not isinstance(obj, type):  # a dataclass's instance
            return any(holds_writable_share(getattr(obj, name, None), depth - 1) for name in fields)
    return False


def pickles_as_an_ndarray(kind: type) -> bool:
    """Does this ndarray subclass pickle as NumPy pickles a plain array (its memory only)?

    A recarray or a program's own subclass does, and so can be rebuilt as a view of an
    ndarray; a MaskedArray pickles more than one array, its own way.
    """
    import numpy  # an ndarray's class: NumPy is here

    base = numpy.ndarray
    return all(
        getattr(kind, name) is getattr(base, name)
        for name in ("__reduce__", "__reduce_ex__", "__setstate__")
    )


def numpy_module() -> Any:
    """NumPy if the program imported it: an ndarray can only exist if it did.

    None too while another thread is still importing it: the module is in
    ``sys.modules`` from the start, ``numpy.ndarray`` only once its core is loaded.
    """
    numpy = sys.modules.get("numpy")
    return numpy if getattr(numpy, "ndarray", None) is not None else None


def numpy_if_array(obj: Any) -> Any:
    """NumPy if ``obj`` is an ndarray, else None (without importing NumPy)."""
    numpy = numpy_module()
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return numpy
    return None


@functools.cache
def machine_memory() -> int | None:
    """This machine's memory, swap included, in bytes; None where the system does not say.

    Read once per process: reading ``/proc/meminfo`` took 40% of making a small array.
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("SwapTotal:"):
                total += int(line.split()[1]) * 1024
                break
    return total


# --- the public function --------------------------------------------------------


@overload
def share(obj: bytes | bytearray | memoryview, *, writable: bool = False) -> Segment | bytes: ...
@overload
def share(obj: _Shared, *, writable: bool = False) -> _Shared: ...  # noqa: F811
def share(obj: Any, *, writable: bool = False) -> Any:  # noqa: F811 (overloads above)
    """Copy ``obj`` into shared memory once; return the same kind of object over it.

    A NumPy array comes back as a NumPy array (same class, shape, dtype and order; a
    MaskedArray, which is more than one array, is a ``TypeError``); bytes,
    bytearray and memoryview come back as a bytes-like ``Segment`` (an empty one as
    ``b""``: there is nothing to share). Passing the result
    to process workers sends only a reference: they see the same memory, read-only
    unless ``writable=True``, in which case their writes are visible here; so do
    subinterpreters. On the serial and thread backends it is passed as it is. The
    memory is freed when the last reference to it, here or in a worker, goes away.
    Zeros at the start of an array are not copied (new shared memory is zeros
    already), so sharing ``numpy.zeros(...)`` costs a read of it; ``workpool.zeros``
    skips even that.
    """
    if not isinstance(writable, bool):
        raise TypeError(f"writable must be True or False; got {writable!r}")
    numpy = numpy_if_array(obj)
    if numpy is not None:
        if obj.dtype.hasobject:
            raise TypeError(
                f"share() cannot put an array that holds Python objects (dtype {obj.dtype}) "
                "in shared memory: its elements are references, not data"
            )
        kind = type(obj)
        if not pickles_as_an_ndarray(kind):
            raise TypeError(
                f"share() cannot put a {kind.__name__} in shared memory: it is more than "
                "one array's memory (share the arrays it is made of, such as its .data)"
            )
        order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
        segment = new_segment(obj.nbytes, writable_in_workers=writable)
        shared = numpy.ndarray(obj.shape, dtype=obj.dtype, buffer=segment, order=order)
        _copy_into(segment, shared, obj.view(numpy.ndarray))
        return shared if kind is numpy.ndarray else shared.view(kind)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        view = memoryview(obj)
        # A strided view has no flat bytes to cast: its bytes, in order, are a copy.
        data = (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
        if not data.nbytes:  # no memory of no size can be mapped: nothing to share
            return b""
        segment = new_segment(data.nbytes, writable_in_workers=writable)
        reserve(segment, 0, data.nbytes)
        segment[: data.nbytes] = data
        return segment
    raise TypeError(
        f"share() takes a NumPy array, bytes, bytearray or memoryview; got {type(obj).__name__}"
    )


# Arrays this big are copied into shared memory by several threads: NumPy releases the
# GIL while it copies, and each thread also takes the page faults of its own part
# (a 200 MB copy measured 0.25 s on one thread, 0.14 s on two, here).
PARALLEL_COPY_BYTES = 16 << 20


def is_shared_writable(obj: Any) -> bool:
    """Is ``obj`` (or the array it views) what ``share(writable=True)`` made here?

    Only then does the caller expect the workers' writes to show; a worker's result
    that came back in shared memory is the caller's own array.
    """
    segment = obj if isinstance(obj, Segment) else None
    if segment is None and numpy_if_array(obj) is not None:
        found = find_segment(obj)
        segment = found[0] if found is not None else None
    return segment is not None and segment.shared_writable and not segment.received


def _copy_into(segment: Segment, target: Any, source: Any) -> None:
    """``target[...] = source``, where ``target`` is the array of its layout over ``segment``.

    A contiguous source is copied as bytes, after any all-zero blocks it begins with:
    the new segment reads as zeros already, and memory never written is never even
    allocated, so ``share(numpy.zeros(...))`` copies nothing. The rest is allocated
    before the copy (``reserve``); the copying threads then map it, each its own part.
    """
    if not (source.flags.c_contiguous or source.flags.f_contiguous):
        reserve(segment, 0, source.nbytes)
        _copy_in_parallel(target, source)
        return
    into, data = _raw_bytes(target), _raw_bytes(source)
    start = _zero_prefix(data)
    reserve(segment, start, len(data))
    _copy_in_parallel(into[start:], data[start:])


def _raw_bytes(array: Any) -> Any:
    """A contiguous array's memory as a flat array of bytes (a view, not a copy)."""
    import numpy  # only arrays come here

    return array.reshape(-1, order="A").view(numpy.uint8)


# The first block looked at is small, so that data (which is rarely zero at the start)
# costs next to nothing to tell apart; blocks then grow, so that zeros scan fast.
_FIRST_ZERO_BLOCK = 64 << 10
_LAST_ZERO_BLOCK = 8 << 20


def _zero_prefix(data: Any) -> int:
    """How many bytes at the start of ``data`` lie in blocks that are all zero."""
    start, block = 0, _FIRST_ZERO_BLOCK
    while start < len(data) and not data[start : start + block].any():
        start += block
        block = min(2 * block, _LAST_ZERO_BLOCK)
    return min(start, len(data))


def _copy_in_parallel(target: Any, source: Any) -> None:
    """``target[...] = source``, split along the first axis over a few threads."""
    rows = source.shape[0] if source.ndim else 0
    parts = 1
    if source.nbytes >= PARALLEL_COPY_BYTES and rows >= 2:
        from workpool._cpus import usable_cpus  # reads files: only for a copy worth splitting

        parts = min(4, usable_cpus(), rows)
    if parts < 2:
        target[...] = source
        return
    bounds = [rows * k // parts for k in range(parts + 1)]
    helpers = [
        threading.Thread(
            target=target[bounds[k] : bounds[k + 1]].__setitem__,
            args=(Ellipsis, source[bounds[k] : bounds[k + 1]]),
            name="workpool-share-copy",
        )
        for k in range(1, parts)
    ]
    for helper in helpers:
        helper.start()
    target[bounds[0] : bounds[1]] = source[bounds[0] : bounds[1]]
    for helper in helpers:
        helper.join()
