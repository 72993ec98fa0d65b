"""Large data in shared memory: ``workpool.share`` and automatic sharing of big arrays.

A *segment* is an anonymous memory file (``memfd_create``) mapped into this process.
It has no name anywhere: it exists while some process holds its file descriptor or a
mapping of it, so nothing can be left behind in ``/dev/shm``, whoever dies when.

A segment crosses into a worker as a file descriptor sent beside the frame that
mentions it (``SCM_RIGHTS`` on the worker's socket); inside the pickle, the object is
only a small reference naming which descriptor of that frame holds its memory. The
worker maps the same memory: read-only unless the object was shared writable.

Two ways in:

- ``share(obj, writable=False)`` copies a NumPy array (or bytes, bytearray,
  memoryview) into a segment once and returns an array (or bytes-like object) over
  it; every later use in any call sends only the reference.
- Automatic: when a process worker's arguments or results hold a NumPy array of at
  least ``share_threshold`` bytes, the array is copied into a segment once per call
  (the same array in many tasks is one segment) and travels by reference.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import pickle
import threading
import weakref
from collections.abc import Callable
from typing import Any

from workpool.serialize import PROTOCOL

__all__ = [
    "DEFAULT_SHARE_THRESHOLD",
    "Segment",
    "SharingContext",
    "TooManySegments",
    "dumps_sharing",
    "is_shared_writable",
    "loads_sharing",
    "share",
]

DEFAULT_SHARE_THRESHOLD = 1 << 20  # 1 MiB
# At most this many descriptors ride with one frame (Linux takes 253 per message).
MAX_FDS_PER_FRAME = 250


class Segment(mmap.mmap):
    """A mapping of an anonymous shared-memory file; bytes-like (buffer protocol).

    ``share()`` returns one for bytes-like input; NumPy arrays from ``share()`` have
    one at the root of their ``.base``. It keeps its file descriptor open while it
    lives, to hand the memory on to workers; ``writable`` says whether workers may
    write into it.
    """

    fd: int
    identity: tuple[int, int]
    shared_writable: bool
    received: bool  # mapped from another process (a worker's result), not made here

    def __reduce__(self) -> tuple[Any, ...]:
        outgoing = _outgoing.get()
        if outgoing is None:  # pickled outside a worker's frame: by value
            return (bytes, (bytes(self),))
        return (_rebuild_bytes, (outgoing.add(self), len(self), self.shared_writable))


def _new_segment(size: int, *, writable_in_workers: bool) -> Segment:
    if not hasattr(os, "memfd_create"):
        raise OSError("shared memory needs memfd_create (Linux)")
    fd = os.memfd_create("workpool", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(size, 1))
        segment = Segment(fd, max(size, 1))
    except BaseException:
        os.close(fd)
        raise
    _adopt(segment, fd, writable_in_workers)
    return segment


def _adopt(segment: Segment, fd: int, writable: bool, *, received: bool = False) -> None:
    stat = os.fstat(fd)
    segment.fd = fd
    segment.identity = (stat.st_dev, stat.st_ino)
    segment.shared_writable = writable
    segment.received = received
    weakref.finalize(segment, _close_quietly, fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _find_segment(array: Any) -> tuple[Segment, int] | None:
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


# --- the public function --------------------------------------------------------


def share(obj: Any, *, writable: bool = False) -> Any:
    """Copy ``obj`` into shared memory once; return the same kind of object over it.

    A NumPy array comes back as a NumPy array (same shape, dtype and order); bytes,
    bytearray and memoryview come back as a bytes-like ``Segment``. Passing the result
    to process workers sends only a reference: they see the same memory, read-only
    unless ``writable=True``, in which case their writes are visible here. On the
    serial and thread backends it is passed as it is. The memory is freed when the
    last reference to it, here or in a worker, goes away.
    """
    if not isinstance(writable, bool):
        raise TypeError(f"writable must be True or False; got {writable!r}")
    numpy = _numpy_if_array(obj)
    if numpy is not None:
        if obj.dtype.hasobject:
            raise TypeError(
                "share() cannot put an array of Python objects (dtype object) in shared "
                "memory: its elements are references, not data"
            )
        order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
        segment = _new_segment(obj.nbytes, writable_in_workers=writable)
        shared = numpy.ndarray(obj.shape, dtype=obj.dtype, buffer=segment, order=order)
        _copy_in_parallel(shared, obj)
        return shared
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = memoryview(obj).cast("B")
        segment = _new_segment(data.nbytes, writable_in_workers=writable)
        segment[: data.nbytes] = data
        return segment
    raise TypeError(
        f"share() takes a NumPy array, bytes, bytearray or memoryview; got {type(obj).__name__}"
    )


def is_shared_writable(obj: Any) -> bool:
    """Is ``obj`` (or the array it views) what ``share(writable=True)`` made here?

    Only then does the caller expect the workers' writes to show; a worker's result
    that came back in shared memory is the caller's own array.
    """
    segment = obj if isinstance(obj, Segment) else None
    if segment is None and _numpy_if_array(obj) is not None:
        found = _find_segment(obj)
        segment = found[0] if found is not None else None
    return segment is not None and segment.shared_writable and not segment.received


# Arrays this big are copied into shared memory by several threads: NumPy releases the
# GIL while it copies, and each thread also takes the page faults of its own part
# (a 200 MB copy measured 0.25 s on one thread, 0.14 s on two, here).
PARALLEL_COPY_BYTES = 16 << 20


def _copy_in_parallel(target: Any, source: Any) -> None:
    """``target[...] = source``, split along the first axis over a few threads."""
    from workpool._cpus import usable_cpus

    rows = source.shape[0] if source.ndim else 0
    parts = min(4, usable_cpus(), rows)
    if source.nbytes < PARALLEL_COPY_BYTES or parts < 2:
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


def _numpy_if_array(obj: Any) -> Any:
    numpy = _numpy_module()
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return numpy
    return None


def _numpy_module() -> Any:
    import sys

    return sys.modules.get("numpy")  # an ndarray can only exist if NumPy is imported


# --- pickling with descriptors beside the bytes ----------------------------------


class _Outgoing:
    """The descriptors a frame will carry, collected while its payload is pickled."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.keep: list[Segment] = []  # keeps each descriptor open until sent

    def add(self, segment: Segment) -> int:
        for index, kept in enumerate(self.keep):
            if kept is segment:
                return index
        if len(self.fds) >= MAX_FDS_PER_FRAME:
            raise TooManySegments(
                f"more than {MAX_FDS_PER_FRAME} shared-memory objects would travel in one "
                "message; send fewer per task, or gather them into one array"
            )
        self.fds.append(segment.fd)
        self.keep.append(segment)
        return len(self.fds) - 1


class TooManySegments(ValueError):
    """More shared-memory objects than one message can carry to a worker."""


class _ContextSlot(threading.local):
    value: Any = None

    def get(self) -> Any:
        return self.value


_outgoing = _ContextSlot()
_incoming = _ContextSlot()


class SharingContext:
    """Automatic sharing for one call: which arrays already have a segment.

    Thread-safe: chunks are pickled by the caller's thread and, after a crash, by the
    supervisor's. ``release()`` at the end of the call drops the call's segments, and
    the handles of arrays sent to other machines. Arguments are shared read-only;
    ``writable=True`` is for results, which become the caller's own arrays.
    """

    def __init__(self, threshold: int | None, *, writable: bool = False) -> None:
        self.threshold = threshold
        self._writable = writable  # may the receiving side write into the copies?
        self._segments: dict[int, tuple[Any, Any]] = {}  # id(array) -> (array, shared copy)
        self._sent: dict[int, tuple[Any, Any]] = {}  # id(array) -> (array, remote handle)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    def sent_copy(self, array: Any, send: Callable[[Any], Any]) -> Any:
        """The handle ``send(array)`` returned the first time ``array`` left in this call.

        An engine that sends large arrays to other machines (Dask) sends each one once
        per call and refers to that copy from every chunk; ``release()`` drops the
        handles, which lets the copies go.
        """
        with self._send_lock:  # one send per array, even from two threads at once
            with self._lock:
                entry = self._sent.get(id(array))
            if entry is not None and entry[0] is array:
                return entry[1]
            handle = send(array)
            with self._lock:
                self._sent[id(array)] = (array, handle)
            return handle

    def shared_copy(self, array: Any) -> Any:
        with self._lock:
            entry = self._segments.get(id(array))
            if entry is not None and entry[0] is array:
                return entry[1]
        copy = share(array, writable=self._writable)
        with self._lock:
            self._segments[id(array)] = (array, copy)
        return copy

    def release(self) -> None:
        with self._lock:
            self._segments.clear()
            sent, self._sent = self._sent, {}
        sent.clear()  # outside the lock: dropping a handle may talk to its cluster


class _SharingPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, context: SharingContext | None) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._context = context

    def reducer_override(self, obj: Any) -> Any:
        numpy = _numpy_if_array(obj)
        if numpy is None or obj.dtype.hasobject:
            return NotImplemented
        found = _find_segment(obj)
        if found is None:
            threshold = self._context.threshold if self._context is not None else None
            if threshold is None or obj.nbytes < threshold or obj.nbytes == 0:
                return NotImplemented
            obj = self._context.shared_copy(obj)  # type: ignore[union-attr]
            found = _find_segment(obj)
            assert found is not None
        segment, offset = found
        index = _outgoing.get().add(segment)
        return (
            _rebuild_array,
            (
                index,
                len(segment),
                segment.shared_writable,
                obj.dtype,
                obj.shape,
                obj.strides,
                offset,
            ),
        )


def dumps_sharing(obj: Any, context: SharingContext | None) -> tuple[bytes, list[int], list[Any]]:
    """Pickle ``obj``; arrays in shared memory (or big enough) become references.

    Returns the bytes, the descriptors to send beside them, and the objects that keep
    those descriptors open until they are sent. What plain pickle refuses (lambdas,
    closures) goes through cloudpickle, sharing all the same. Raises
    ``TooManySegments`` rather than quietly copying what was shared to be written.
    """
    outgoing = _Outgoing()
    previous = _outgoing.value
    _outgoing.value = outgoing
    try:
        if _numpy_module() is None:  # no arrays can exist: the plain, faster pickler
            try:
                return pickle.dumps(obj, protocol=PROTOCOL), outgoing.fds, outgoing.keep
            except TooManySegments:
                raise
            except Exception:
                outgoing = _outgoing.value = _Outgoing()
        buffer = io.BytesIO()
        try:
            _SharingPickler(buffer, context).dump(obj)
        except TooManySegments:
            raise
        except Exception:
            outgoing = _outgoing.value = _Outgoing()
            buffer = io.BytesIO()
            _sharing_cloudpickler(buffer, context).dump(obj)
        return buffer.getvalue(), outgoing.fds, outgoing.keep
    finally:
        _outgoing.value = previous


def _sharing_cloudpickler(file: io.BytesIO, context: SharingContext | None) -> Any:
    """A cloudpickle pickler that shares arrays the way ``_SharingPickler`` does."""
    global _SharingCloudPickler
    if _SharingCloudPickler is None:
        import cloudpickle

        class SharingCloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO, context: SharingContext | None) -> None:
                super().__init__(file, protocol=PROTOCOL)
                self._sharing = _SharingPickler(io.BytesIO(), context)

            def reducer_override(self, obj: Any) -> Any:
                reduced = self._sharing.reducer_override(obj)
                if reduced is NotImplemented:
                    return super().reducer_override(obj)
                return reduced

        _SharingCloudPickler = SharingCloudPickler
    return _SharingCloudPickler(file, context)


_SharingCloudPickler: Any = None


def loads_sharing(data: bytes | memoryview, fds: list[int]) -> Any:
    """Unpickle what ``dumps_sharing`` made, mapping the segments its descriptors hold.

    Takes ownership of ``fds``: every one is closed (a mapping does not need it).
    """
    if not fds:
        return pickle.loads(data)
    previous = _incoming.value
    _incoming.value = _Incoming(fds)
    try:
        return pickle.loads(data)
    finally:
        incoming, _incoming.value = _incoming.value, previous
        incoming.close()


class _Incoming:
    """The descriptors that came with a frame, mapped once each on first use."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.segments: dict[tuple[int, bool], Segment] = {}

    def segment(self, index: int, size: int, writable: bool) -> Segment:
        key = (index, writable)
        segment = self.segments.get(key)
        if segment is None:
            segment = _map_segment(self.fds[index], size, writable)
            self.segments[key] = segment
        return segment

    def close(self) -> None:
        for fd in self.fds:
            _close_quietly(fd)


# Mappings already made in this process, by the segment's identity, so that the same
# memory arriving with many frames is mapped once.
_mapped: weakref.WeakValueDictionary[tuple[tuple[int, int], bool], Segment] = (
    weakref.WeakValueDictionary()
)


def _map_segment(fd: int, size: int, writable: bool) -> Segment:
    stat = os.fstat(fd)
    key = ((stat.st_dev, stat.st_ino), writable)
    segment = _mapped.get(key)
    if segment is not None:
        return segment
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    segment = Segment(fd, size, access=access)
    _adopt(segment, os.dup(fd), writable, received=True)  # keep one to hand on (to results)
    _mapped[key] = segment
    return segment


def _rebuild_bytes(index: int, size: int, writable: bool) -> Segment:
    incoming: _Incoming | None = _incoming.get()
    if incoming is None:
        raise pickle.UnpicklingError("a shared-memory reference arrived without its memory")
    return incoming.segment(index, size, writable)


def _rebuild_array(
    index: int,
    size: int,
    writable: bool,
    dtype: Any,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
) -> Any:
    import numpy

    segment = _rebuild_bytes(index, size, writable)
    array = numpy.ndarray(
        shape, dtype=numpy.dtype(dtype), buffer=segment, offset=offset, strides=strides
    )
    if not writable:
        array.flags.writeable = False
    return array
