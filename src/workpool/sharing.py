"""Messages to and from process workers that carry shared memory beside their bytes.

A large NumPy array reaches a process worker without being copied into the message:
its memory is a segment (``segments.py``), and the segment's file descriptor travels
beside the message that mentions it (``SCM_RIGHTS`` on the worker's socket). Inside
the pickle the array is only a small reference: which descriptor of the message holds
its memory, and its dtype, shape, strides and offset there::

    dumps_sharing(items, context)                    loads_sharing(payload, fds)
      pickle, and for each ndarray:                    unpickle; each reference maps
        already in a segment (share(),  -> reference     descriptor [i] (map_segment)
          empty(), zeros())
        >= context.threshold bytes      -> copied into   and rebuilds the array over
           a segment once per call (SharingContext)      it: read-only, unless shared
        otherwise                       -> by value      writable
      returns payload, fds, keep  ------ socket ----->
      (keep holds the fds open until they are sent)

A function's pickle shares the same way (``dumps_function_sharing``): a large array
it holds in its globals or closure is copied into a segment once, and each worker maps
that copy-on-write, privately, as its own copy.

At most ``MAX_FDS_PER_FRAME`` descriptors ride with one message: past that, a chunk is
split, and one item's (or one batch's) further arrays go by value; only memory shared to
be written cannot, and raises ``TooManySegments``. Results come back the same way, in
segments the worker makes writable for the caller; a result the task made in a segment
itself (``workpool.empty``/``zeros``) goes back as it is, without a copy, unless it is
smaller than the threshold, or the message uses less than half of that memory (then
it is copied, so that the caller does not keep the rest alive). A MaskedArray, which
pickles itself as bytes, travels as its data and its mask, each shared as an array is.
Where no segment can be made (out of descriptors or memory, none on this system), a
call's arrays are copied into its messages instead, after one ``SharedMemoryWarning``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import pickle
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable

from workpool.errors import SharedMemoryWarning, WorkpoolError, add_note, outside_workpool
from workpool.mapped_files import map_file, offset_in_file, read_only_memmap
from workpool.segments import (
    Segment,
    find_segment,
    map_segment,
    numpy_if_array,
    numpy_module,
    pickles_as_an_ndarray,
    sending,
    share,
)
from workpool.serialize import PROTOCOL, dumps_function, hooked_cloudpickler, names_main

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_SHARE_THRESHOLD",
    "MAX_FDS_PER_FRAME",
    "SharingContext",
    "TooManySegments",
    "dumps_function_sharing",
    "dumps_sharing",
    "explain_read_only",
    "loads_sharing",
]

#: NumPy arrays at least this big reach process workers in shared memory (1 MiB).
DEFAULT_SHARE_THRESHOLD = 1 << 20
# At most this many descriptors ride with one frame (Linux takes 253 per message).
MAX_FDS_PER_FRAME = 250


class TooManySegments(WorkpoolError, ValueError):
    """More shared-memory objects than one message can carry to a worker."""


# --- pickling with descriptors beside the bytes ----------------------------------


_NONE: frozenset[int] = frozenset()


class _Outgoing:
    """The descriptors a frame will carry, collected while its payload is pickled.

    ``spill``: once the frame carries all it can, what need not be shared to be right
    (anything but memory that workers write for the caller to see) goes by value.
    """

    def __init__(self, spill: bool = False, trim: frozenset[int] = _NONE) -> None:
        self.fds: list[int] = []
        self.keep: list[Segment] = []  # keeps each descriptor open until sent
        self.spill = spill
        # Results: the memory a worker made that the frame refers to, and how much of
        # it; ``trim``: the segments (by id) of which it uses too little to send whole.
        self.trim = trim
        self._used: dict[int, tuple[Segment, int]] = {}

    def count_use(self, segment: Segment, nbytes: int) -> None:
        """A result refers to ``nbytes`` of ``segment``, which the worker made."""
        used = self._used.get(id(segment), (segment, 0))[1]
        self._used[id(segment)] = (segment, used + nbytes)

    def sparsely_used(self) -> frozenset[int]:
        """The segments the results use less than half of: their parts are better copied."""
        if not self._used:  # the common case: no memory a worker made
            return _NONE
        return frozenset(key for key, (kept, used) in self._used.items() if 2 * used < len(kept))

    def reference(self, segment: Segment) -> tuple[Any, ...]:
        """How a bytes-like segment pickles inside this frame (``segments.Frame``)."""
        index = self.add(segment, must_share=segment.shared_writable)
        if index is None:
            return (bytes, (bytes(segment),))
        return (_rebuild_bytes, (index, len(segment), segment.shared_writable))

    def add(self, segment: Segment, *, must_share: bool) -> int | None:
        """The segment's place among the frame's descriptors; None: send it by value."""
        for index, kept in enumerate(self.keep):
            if kept is segment:
                return index
        if len(self.fds) >= MAX_FDS_PER_FRAME:
            if self.spill and not must_share:
                return None
            raise TooManySegments(
                f"more than {MAX_FDS_PER_FRAME} shared-memory objects would travel in one "
                "message; send fewer per task, or gather them into one array"
            )
        self.fds.append(segment.fd)
        self.keep.append(segment)
        return len(self.fds) - 1


class _Reduced:
    """Pickles as the reduction it holds (one worked out ahead, for an array inside)."""

    def __init__(self, reduced: tuple[Any, ...]) -> None:
        self._reduced = reduced

    def __reduce__(self) -> tuple[Any, ...]:
        return self._reduced


class _Receiving(threading.local):
    incoming: _Incoming | None = None


_receiving = _Receiving()


class _WhileAlive:
    """What a call made of each array (a shared copy, a remote handle), while it lives.

    The array is held weakly: once the caller has let it go and its tasks are done (an
    item of a generator, used up), what was made of it goes too, so an endless input
    of large arrays takes bounded memory here, in shared memory and on a cluster.
    """

    def __init__(self) -> None:
        # Reentrant: an array may die, and its entry be dropped, while this is held.
        self._lock = threading.RLock()
        self._entries: dict[int, tuple[Any, Any]] = {}  # id(array) -> (held, made)

    def get(self, array: Any) -> Any:
        """What was made of this very array, or None."""
        with self._lock:
            entry = self._entries.get(id(array))
        if entry is None:
            return None
        held, made = entry
        return made if (held() if isinstance(held, weakref.ref) else held) is array else None

    def put(self, array: Any, made: Any) -> None:
        key = id(array)
        held: Any
        try:
            held = weakref.ref(array, functools.partial(_drop_entry, weakref.ref(self), key))
        except TypeError:  # cannot be watched: kept until the call ends
            held = array
        with self._lock:
            self._entries[key] = (held, made)

    def drop(self, key: int, held: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is held:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, {}
        entries.clear()  # outside the lock: dropping a handle may talk to its cluster

    def __bool__(self) -> bool:
        return bool(self._entries)


def _drop_entry(table: weakref.ref[_WhileAlive], key: int, held: Any) -> None:
    """An array died: drop what was made of it (the table, held weakly, may be gone)."""
    alive = table()
    if alive is not None:
        alive.drop(key, held)


class SharingContext:
    """Automatic sharing for one call: which arrays already have a segment.

    Thread-safe: chunks are pickled by the caller's thread and, after a crash, by the
    supervisor's. An array's segment (or the handle of its copy on other machines)
    goes when the array does, and ``release()`` at the end of the call drops the rest.
    Arguments are shared read-only; ``writable=True`` is for results, which become the
    caller's own arrays; ``private=True`` for what a function holds, which each worker
    maps copy-on-write, its own copy as a pickled one would be (``dumps_function_sharing``).

    If a segment cannot be made (out of descriptors or memory, none on this system),
    the call copies its arrays instead: one ``SharedMemoryWarning`` says so, and
    ``unavailable`` keeps the error for tasks that cannot be copied either.
    """

    def __init__(
        self, threshold: int | None, *, writable: bool = False, private: bool = False
    ) -> None:
        self.threshold = threshold
        self.unavailable: OSError | None = None
        self._writable = writable  # may the receiving side write into the copies?
        self.private = private  # the copies are mapped copy-on-write where they arrive
        # What was made of each array, by table (``_table``), each made when first
        # needed: most calls share nothing, and this is made for every task submitted.
        #   "segments": array -> its shared copy
        #   "files":    read-only memmap -> its file, mapped to be sent
        #   "sent":     array -> the handle of its copy on another machine
        self._tables: dict[str, _WhileAlive] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    def _table(self, name: str) -> _WhileAlive:
        table = self._tables.get(name)
        if table is None:
            with self._lock:
                table = self._tables.get(name)
                if table is None:
                    table = self._tables[name] = _WhileAlive()
        return table

    def sent_copy(
        self,
        array: Any,
        send: Callable[[Any], Any],
        usable: Callable[[Any], bool] = lambda handle: True,
    ) -> Any:
        """The handle ``send(array)`` returned the first time ``array`` left in this call.

        An engine that sends large arrays to other machines (Dask) sends each one once
        per call and refers to that copy from every chunk; the handle is dropped with
        the array, or by ``release()``, which lets the copies go. A handle that is no
        longer ``usable`` (the copy was lost) is replaced by a new send.
        """
        with self._send_lock:  # one send per array, even from two threads at once
            sent = self._table("sent")
            handle = sent.get(array)
            if handle is None or not usable(handle):
                handle = send(array)
                sent.put(array, handle)
            return handle

    def shared_copy(self, array: Any, key: Any = None) -> Any:
        """``array`` in a segment, made once per call; None: copy it into the message.

        ``key``: the object whose copy it is, if not ``array`` (a view made afresh for
        each message); the copy goes when that does.
        """
        key = array if key is None else key
        with self._lock:
            if self.unavailable is not None:
                return None
        copy = self._table("segments").get(key)
        if copy is not None:
            return copy
        try:
            copy = share(array, writable=self._writable)
        except OSError as exc:
            # Kept without its traceback, whose frames hold this context (a cycle that
            # would keep the call's arrays, and their descriptors, until a collection).
            with self._lock:
                first, self.unavailable = self.unavailable is None, exc.with_traceback(None)
            if first:
                # (Made with ``writable``, this context pickles a worker's results.)
                way = "back to the caller" if self._writable else "to the workers"
                warnings.warn(
                    f"workpool could not make shared memory ({exc}); "
                    f"large arrays are copied {way} instead",
                    SharedMemoryWarning,
                    stacklevel=outside_workpool(),
                )
            return None
        self._table("segments").put(key, copy)
        return copy

    def mapped_file(self, array: Any) -> tuple[Segment, int] | None:
        """The file a read-only memmap ``array`` views, and its offset there; None: copy it.

        Mapped once per call per memmap (``mapped_files.py``); None for any other array,
        or if the file cannot be opened again.
        """
        root = read_only_memmap(array)
        if root is None:
            return None
        files = self._table("files")
        segment = files.get(root)
        if segment is None:
            try:
                segment = map_file(root)
            except OSError:
                return None
            files.put(root, segment)
        return segment, offset_in_file(array, root)

    @property
    def returns_results(self) -> bool:
        """Does this context pickle a worker's results (for the caller to own)?"""
        return self._writable

    @property
    def holds_copies(self) -> bool:
        """Has this context put arrays in shared memory (which ``release`` drops)?"""
        return any(self._tables.get(name) for name in ("segments", "files"))

    def release(self) -> None:
        for table in list(self._tables.values()):
            table.clear()


class _SharingPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, context: SharingContext | None) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._context = context
        self._returns_results = context is not None and context.returns_results

    def reducer_override(self, obj: Any) -> Any:
        numpy = numpy_if_array(obj)
        if numpy is None or obj.dtype.hasobject:
            return NotImplemented
        kind = type(obj)
        if kind is numpy.ndarray:
            return self._reduce_array(obj)
        if not pickles_as_an_ndarray(kind):
            return self._reduce_masked(obj)
        # A recarray, or a program's own subclass: its memory travels as an ndarray's
        # would, and arrives viewed as its class again, which is all pickle keeps of it.
        reduced = self._reduce_array(obj.view(numpy.ndarray))
        if reduced is NotImplemented or reduced[0] is not _rebuild_array:
            return NotImplemented
        return (_rebuild_subclass, (kind, *reduced[1]))

    def _reduce_masked(self, obj: Any) -> Any:
        """A large MaskedArray (or one over shared memory) as its data and its mask,
        each an array to share.

        It pickles itself as bytes, which would carry its data in every message: here
        its two arrays travel as any other arrays do, and it is rebuilt over them
        (with what pickle keeps of it: its class, base class and fill value).
        """
        masked = sys.modules.get("numpy.ma")  # none can exist before numpy.ma is imported
        threshold = self._context.threshold if self._context is not None else None
        if masked is None or not isinstance(obj, masked.MaskedArray):
            return NotImplemented
        data = obj.view(numpy_module().ndarray)  # a new view each time: copied once, by obj
        # Data already in shared memory goes as such, whatever its size: share()'s
        # writable memory must, for the workers' writes to show.
        if find_segment(data) is None and (threshold is None or obj.nbytes < threshold):
            return NotImplemented
        mask = obj._mask if obj._mask is not masked.nomask else None
        reduced = self._reduce_array(data, key=obj)
        if reduced is not NotImplemented:
            data = _Reduced(reduced)
        return (_rebuild_masked, (type(obj), obj._baseclass, data, mask, obj._fill_value))

    def _reduce_array(self, obj: Any, key: Any = None) -> Any:
        found = find_segment(obj)
        if found is not None and found[0].private:  # this worker's copy-on-write view:
            found = None  # what it holds now is not what the memory behind it holds
        if (
            found is not None
            and self._returns_results
            and found[0].received
            and not found[0].shared_writable
        ):
            # A read-only argument handed back (or a view of it), read-only here only
            # because it came in shared memory: the caller gets an array of its own,
            # writable, as for any other result, not a read-only alias of the argument.
            threshold = self._context.threshold  # type: ignore[union-attr]
            if threshold is None or obj.nbytes < threshold:
                return obj.copy(order="K").__reduce_ex__(PROTOCOL)
            found = None
        if (
            found is not None
            and self._returns_results
            and not found[0].received
            and (id(found[0]) in _frame().trim or obj.nbytes > _bytes_spanned(obj))
        ):
            # Parts of a bigger buffer the task made, that use less than half of it (a
            # scratch buffer, trimmed to what was filled), or a view of some elements
            # many times over (np.broadcast_to): the caller gets the elements, as pickle
            # sends them, not the whole buffer kept alive behind the results, nor a
            # writable view in which one write changes many elements.
            found = None
        private = False
        if found is None:
            threshold = self._context.threshold if self._context is not None else None
            if threshold is None or obj.nbytes < threshold or obj.nbytes == 0:
                return NotImplemented
            context = self._context
            assert context is not None
            if not self._returns_results:  # (a worker's result is the caller's to write)
                found = context.mapped_file(obj)
            if found is None:
                obj = context.shared_copy(obj, key)
                if obj is None:  # no shared memory to be had: the array goes by value
                    return NotImplemented
                found = find_segment(obj)
                assert found is not None
            private = context.private
        segment, offset = found
        writable, owned = segment.shared_writable, False
        if self._returns_results and not segment.received:
            # A result in memory this worker made (workpool.empty/zeros, or share()): the
            # caller's own array from now on, writable there and nowhere else. One
            # smaller than the threshold is cheaper to copy than to map, and then holds
            # no descriptor.
            threshold = self._context.threshold  # type: ignore[union-attr]
            if threshold is not None and obj.nbytes < threshold:
                return NotImplemented
            writable = owned = True
        outgoing = _frame()
        index = outgoing.add(segment, must_share=writable and not owned)
        if index is None:  # no room left in this message: by value
            return NotImplemented
        if owned:
            outgoing.count_use(segment, obj.nbytes)
        return (
            _rebuild_array,
            (
                index,
                len(segment),
                writable,
                obj.dtype,
                obj.shape,
                obj.strides,
                offset,
                owned,
                private,
            ),
        )


def _frame() -> _Outgoing:
    outgoing = sending.frame
    assert isinstance(outgoing, _Outgoing), "arrays are pickled inside dumps_sharing"
    return outgoing


def _bytes_spanned(array: Any) -> int:
    """How many bytes lie between an array's first and last byte, both included."""
    if array.size == 0:
        return 0
    extent = sum((size - 1) * abs(stride) for size, stride in zip(array.shape, array.strides))
    return int(extent + array.itemsize)


def dumps_sharing(
    obj: Any, context: SharingContext | None, *, to_worker: bool = False, spill: bool = False
) -> tuple[bytes, list[int], list[Any]]:
    """Pickle ``obj``; arrays in shared memory (or big enough) become references.

    Returns the bytes, the descriptors to send beside them, and the objects that keep
    those descriptors open until they are sent. What plain pickle refuses (lambdas,
    closures) goes through cloudpickle, sharing all the same. ``to_worker``: the
    caller's items on their way to a worker, where what plain pickle names in
    ``__main__`` must go by value (``names_main``). Past ``MAX_FDS_PER_FRAME``
    descriptors it raises ``TooManySegments`` (a chunk can be split), or with ``spill``
    sends the rest by value; it raises even then rather than quietly copying what was
    shared to be written.
    """
    pickled = _dumps_sharing(obj, context, by_value=False, spill=spill)
    if to_worker and names_main(pickled[0]):
        try:
            return _dumps_sharing(obj, context, by_value=True, spill=spill)
        except TooManySegments:
            raise
        except Exception:  # cloudpickle refuses it: the worker may know the name after all
            pass
    return pickled


def _dumps_sharing(
    obj: Any, context: SharingContext | None, *, by_value: bool, spill: bool
) -> tuple[bytes, list[int], list[Any]]:
    payload, outgoing = _dumps_once(obj, context, by_value, spill, _NONE)
    sparse = outgoing.sparsely_used()
    if sparse:  # once more, with the parts of what the results use little of copied
        payload, outgoing = _dumps_once(obj, context, by_value, spill, sparse)
    return payload, outgoing.fds, outgoing.keep


def _dumps_once(
    obj: Any, context: SharingContext | None, by_value: bool, spill: bool, trim: frozenset[int]
) -> tuple[bytes, _Outgoing]:
    outgoing = _Outgoing(spill, trim)
    previous = sending.frame
    sending.frame = outgoing
    try:
        if by_value:
            # As the pool's functions go: a script's classes among the items then share
            # the worker's namespace with them, and see what the initializer set up.
            sharer = _SharingPickler(io.BytesIO(), context)
            payload = dumps_function(obj, shared=True, reducer=sharer.reducer_override)
            return payload, outgoing
        if numpy_module() is None:  # no arrays can exist: the plain, faster pickler
            try:
                return pickle.dumps(obj, protocol=PROTOCOL), outgoing
            except TooManySegments:
                raise
            except Exception:
                outgoing = _Outgoing(spill, trim)
                sending.frame = outgoing
        buffer = io.BytesIO()
        try:
            _SharingPickler(buffer, context).dump(obj)
        except TooManySegments:
            raise
        except Exception:
            outgoing = _Outgoing(spill, trim)
            sending.frame = outgoing
            buffer = io.BytesIO()
            _sharing_cloudpickler(buffer, context).dump(obj)
        return buffer.getvalue(), outgoing
    finally:
        sending.frame = previous


def _sharing_cloudpickler(file: io.BytesIO, context: SharingContext | None) -> Any:
    """A cloudpickle pickler that shares arrays the way ``_SharingPickler`` does."""
    return hooked_cloudpickler(file, _SharingPickler(io.BytesIO(), context).reducer_override)


def dumps_function_sharing(
    fn: Any, threshold: int | None = DEFAULT_SHARE_THRESHOLD
) -> tuple[bytes, list[int], list[Any]]:
    """``dumps_function`` for process workers: the large arrays a function holds, shared.

    A script's function that reads a large global array (or a closure over one) would
    carry a copy of it to every worker, through its socket. Here such an array is
    copied once into shared memory instead and reaches each worker as a private
    copy-on-write mapping: its own copy, as a pickled one would be, made of the same
    pages until it writes to them. An array already in shared memory (``share()``)
    goes as it is, on the terms it was shared on. Returns the bytes, the descriptors
    to send beside them and what keeps those open, as ``dumps_sharing`` does; a fresh
    copy per function, so a global changed in place reaches the next function as it is.
    """
    sharer = _SharingPickler(io.BytesIO(), SharingContext(threshold, private=True))
    outgoing = _Outgoing()
    previous = sending.frame
    sending.frame = outgoing
    try:
        payload = dumps_function(fn, shared=True, reducer=sharer.reducer_override)
    except TooManySegments:  # more large arrays than one message carries: copies, then
        sending.frame = None
        return dumps_function(fn, shared=True), [], []
    finally:
        sending.frame = previous
    return payload, outgoing.fds, outgoing.keep


def loads_sharing(data: bytes | memoryview, fds: list[int]) -> Any:
    """Unpickle what ``dumps_sharing`` made, mapping the segments its descriptors hold.

    Takes ownership of ``fds``: every one is closed (a mapping does not need it).
    """
    if not fds:
        return pickle.loads(data)
    previous = _receiving.incoming
    incoming = _receiving.incoming = _Incoming(fds)
    try:
        return pickle.loads(data)
    finally:
        _receiving.incoming = previous
        incoming.close()


class _Incoming:
    """The descriptors that came with a frame, mapped once each on first use."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.segments: dict[tuple[int, bool, bool, bool], Segment | bytearray] = {}

    def segment(
        self, index: int, size: int, writable: bool, owned: bool, private: bool = False
    ) -> Segment | bytearray:
        key = (index, writable, owned, private)
        segment = self.segments.get(key)
        if segment is None:
            if index >= len(self.fds):  # the system closed it on the way: no room here
                raise OSError(
                    errno.EMFILE,
                    f"{len(self.fds)} of the shared-memory descriptors a message carried "
                    "arrived: this process had no free descriptor for the others (it "
                    "holds as many open files as its limit allows)",
                )
            segment = map_segment(self.fds[index], size, writable, owned=owned, private=private)
            self.segments[key] = segment
        return segment

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _rebuild_bytes(
    index: int, size: int, writable: bool, owned: bool = False, private: bool = False
) -> Segment | bytearray:
    incoming = _receiving.incoming
    if incoming is None:
        raise pickle.UnpicklingError("a shared-memory reference arrived without its memory")
    return incoming.segment(index, size, writable, owned, private)


def _rebuild_subclass(kind: type, *reference: Any) -> Any:
    return _rebuild_array(*reference).view(kind)


def _rebuild_masked(kind: type, baseclass: type, data: Any, mask: Any, fill_value: Any) -> Any:
    import numpy

    if mask is None:  # as pickle brings one: a mask of its own, nothing masked
        mask = numpy.zeros(data.shape, dtype=numpy.ma.make_mask_descr(data.dtype))
    array = numpy.ma.MaskedArray(data.view(baseclass), mask=mask, copy=False, shrink=False)
    array = array if kind is numpy.ma.MaskedArray else array.view(kind)
    if fill_value is not None:
        array.fill_value = fill_value
    return array


def _rebuild_array(
    index: int,
    size: int,
    writable: bool,
    dtype: Any,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    owned: bool = False,
    private: bool = False,
) -> Any:
    import numpy

    segment = _rebuild_bytes(index, size, writable, owned, private)
    array = numpy.ndarray(
        shape, dtype=numpy.dtype(dtype), buffer=segment, offset=offset, strides=strides
    )
    if not (writable or private):
        array.flags.writeable = False
    return array


def explain_read_only(
    error: BaseException, arguments: Iterable[Any], threshold: int | None = DEFAULT_SHARE_THRESHOLD
) -> None:
    """Say on ``error`` why an array it failed to write to is read-only, if it may be ours.

    For a task whose arguments came with shared memory. A task that changes a big array
    it was given works with a pickled copy (as under ``ProcessPoolExecutor``), but here
    it reaches the worker in shared memory, read-only, and NumPy's "... is read-only"
    names neither the cause nor the way out. An argument that is such an array is named;
    otherwise the array was inside one (a list, a dict), and the note says it generally.
    ``threshold``: the call's ``share_threshold``. An array smaller than it was not put
    in shared memory by the call but by the program (``share()``, ``empty()``), and
    ``share_threshold=None`` would not change it: the way out is ``writable=True``.
    """
    if isinstance(error, TypeError) and "readonly memory map" in str(error):
        # A share()d bytes-like object, which the mmap module guards in words of its own.
        if any(isinstance(argument, Segment) for argument in arguments):
            add_note(
                error,
                "workpool: the task was given bytes in shared memory that the caller shared "
                "read-only: share them with workpool.share(..., writable=True) for tasks to "
                "write into them, or copy them in the task (bytearray(...)) to change them",
            )
        return
    # NumPy's words for a write into it, and for an attempt to make it writable.
    said = str(error) if isinstance(error, ValueError) else ""
    if "read-only" not in said and "WRITEABLE flag" not in said:
        return
    way_out = "copy it in the task to change it, or pass share_threshold=None"
    for argument in arguments:
        # Only an ndarray's flags are NumPy's (a pandas DataFrame has flags of its own).
        if numpy_if_array(argument) is None:
            continue
        if argument.flags.writeable or find_segment(argument) is None:
            continue
        size = f"{argument.nbytes / 2**20:.3g} MiB {argument.dtype} array"
        if threshold is None or argument.nbytes < threshold:
            add_note(
                error,
                f"workpool: the task was given a {size} that the caller put in shared memory "
                "read-only (workpool.share(), empty() or zeros() without writable=True): "
                "make it with writable=True for tasks to write into it (their writes then "
                "show in the caller), or copy it in the task to change it",
            )
            return
        add_note(
            error,
            f"workpool: the task was given a {size} in shared memory, read-only (arrays of "
            "share_threshold bytes or more are sent that way, not as a copy each task may "
            f"change): {way_out} (an array made by workpool.share(), empty() or zeros() "
            "stays read-only unless made with writable=True)",
        )
        return
    add_note(
        error,
        "workpool: large NumPy arrays reach process workers read-only, in shared memory "
        "(those of share_threshold bytes or more, and share()'s unless writable=True), "
        f"not as a copy each task may change: {way_out}",
    )
