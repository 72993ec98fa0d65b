"""NumPy arrays born in shared memory: ``workpool.empty`` and ``workpool.zeros``.

``share()`` copies an array that already exists into a segment. An array that is made
to be sent (a task's large result, or a buffer the caller hands to workers) can
instead be made in a segment from the start, and then never needs that copy::

    a task, in a worker process               the caller
      out = workpool.empty(n)   a new segment, its pages allocated and mapped at once
      out[:] = ...              written where they are
      return out  ===== its descriptor =====> the same memory, mapped: an ndarray
                   (no bytes copied)          writable, the caller's own

The two differ in when the memory comes. ``empty`` is for an array about to be
written whole: it has the system allocate and map every page when it is made, in one
call each (``segments.reserve``), which costs less than the page fault per 4 KiB page
that writing fresh memory otherwise takes, and raises ``OSError`` at once where shared
memory has a size limit it would pass. ``zeros`` leaves pages to come as they are first
written (a fresh segment reads as zeros), so an array written here and there only ever
takes the pages that were written. On the serial and thread backends these are ordinary arrays that
happen to live in a segment, passed as they are. NumPy is imported only when one of
these is called (it does not load in subinterpreters: there the ``ImportError`` says
why).
"""

from __future__ import annotations

import operator
import sys

from workpool.segments import machine_memory, new_segment, reserve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from numpy.typing import NDArray

__all__ = ["empty", "zeros"]


def empty(
    shape: Any, dtype: Any = float, order: str = "C", *, writable: bool = False
) -> NDArray[Any]:
    """A new NumPy array in shared memory, as ``numpy.empty`` makes one in private memory.

    Returned by a task on the process backend, it reaches the caller without a copy,
    as the caller's own writable array: the very memory the task wrote, so a task
    should not keep it and write to it again (a buffer reused from task to task would
    be every one of their results). Made in the caller, it is what ``share()``
    returns: process workers it is passed to see the same memory, read-only unless
    ``writable=True`` (then their writes show here). Its contents are unspecified, as
    with ``numpy.empty`` (today they are zeros); use ``zeros`` to rely on that.
    Its memory is allocated and mapped now, for the array is meant to be written
    whole (for one written here and there, use ``zeros``, which takes memory only as
    written). The memory is freed when the last array over it, in any process, is gone.

    Raises ``ImportError`` without NumPy, ``TypeError`` for a dtype of Python objects,
    ``ValueError`` for a negative dimension, ``OSError`` if the system has no shared
    memory to give.
    """
    return _new_array("empty", shape, dtype, order, writable, take_memory_now=True)


def zeros(
    shape: Any, dtype: Any = float, order: str = "C", *, writable: bool = False
) -> NDArray[Any]:
    """A new NumPy array of zeros in shared memory; otherwise as ``empty``.

    Nothing is written to make it: shared memory starts zeroed. Unlike ``empty``, its
    pages come as they are first written, so it suits an array written in part, and
    costs nothing to make; one written whole is written faster from ``empty``.
    """
    return _new_array("zeros", shape, dtype, order, writable, take_memory_now=False)


def _new_array(
    function: str, shape: Any, dtype: Any, order: str, writable: bool, *, take_memory_now: bool
) -> NDArray[Any]:
    numpy = _numpy(function)
    if not isinstance(writable, bool):
        raise TypeError(f"writable must be True or False; got {writable!r}")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F'; got {order!r}")
    dims = _dimensions(shape)
    kind = numpy.dtype(dtype)
    if kind.kind in "SU" and kind.itemsize == 0:  # "U", bytes: numpy.empty makes one character
        kind = numpy.dtype((kind.type, 1))
    if kind.hasobject:
        raise TypeError(
            f"workpool.{function}() cannot put Python objects (dtype {kind}) in shared memory: "
            "the elements would be references, not data"
        )
    nbytes = kind.itemsize
    for size in dims:
        nbytes *= size
    if nbytes > sys.maxsize:  # as numpy.zeros says, rather than an overflow deeper down
        raise ValueError(f"array is too big: {nbytes:,} bytes")
    memory = machine_memory()
    if memory is not None and nbytes > memory:
        # Shared memory is taken as it is written: such an array would be made, then
        # die of SIGBUS or the OOM killer partway through; NumPy refuses it at once.
        raise MemoryError(
            f"workpool.{function}() cannot allocate {nbytes:,} bytes of shared memory: more "
            f"than this machine's memory ({memory:,} bytes with swap)"
        )
    segment = new_segment(nbytes, writable_in_workers=writable)
    if take_memory_now:
        reserve(segment, 0, nbytes, map_now=True)
    array: NDArray[Any] = numpy.ndarray(dims, dtype=kind, buffer=segment, order=order)
    return array


def _numpy(function: str) -> Any:
    try:
        import numpy
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"workpool.{function}() makes a NumPy array, and NumPy is not installed "
            "(pip install numpy)"
        ) from exc
    except ImportError as exc:  # in a subinterpreter, for one: NumPy does not load there
        reason = str(exc).strip().splitlines()[-1]
        raise ImportError(
            f"workpool.{function}() makes a NumPy array, and NumPy cannot be imported "
            f"here: {reason}"
        ) from exc
    return numpy


def _dimensions(shape: Any) -> tuple[int, ...]:
    """``shape`` as NumPy takes it (an int or a sequence of ints), checked."""
    dims: tuple[int, ...]
    try:
        dims = (operator.index(shape),)
    except TypeError:
        try:
            dims = tuple(operator.index(size) for size in shape)
        except TypeError:
            raise TypeError(f"shape must be an int or a sequence of ints; got {shape!r}") from None
    if any(size < 0 for size in dims):
        raise ValueError(f"negative dimensions are not allowed; got shape {shape!r}")
    return dims
