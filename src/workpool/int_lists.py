"""Lists of plain ints pickled as one block of 8-byte integers instead of one by one.

Pickle writes each int as its own opcode, and reads an int of 2**31 or more back
through a general byte-string conversion: a chunk of results such as ``x * x`` takes
longer to unpickle than to compute. ``pack`` wraps such a list so that it pickles as
one block of little-endian int64 and unpickles, anywhere, as the same ``list`` again::

    worker                                      parent (or a resumed checkpoint)
      [0, 1, 4, 9, ...]  --pack-->  IntList     pickle.loads(...)
        pickled as  (ints_from, (bytes,))  ==>    ints_from(bytes) -> [0, 1, 4, 9, ...]

Only lists of exact ``int`` that all fit in 64 bits are packed, and only long ones
(a few items pickle faster as they are): ``bool``, ``IntEnum`` and NumPy integers keep
their types by staying out. Whatever reads the pickle needs nothing but this module.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["IntList", "int64_bytes", "ints_from", "little_endian_bytes", "pack"]

#: Lists shorter than this are left alone: checking them would cost more than it saves.
PACK_FROM_ITEMS = 64
_BIG_ENDIAN = sys.byteorder == "big"
# How struct writes n ints as little-endian int64. Where a C long is 8 bytes and the
# machine little-endian (Linux, macOS), the native "l" writes the same bytes as "<q"
# at twice the speed: "q" converts each int of 2**30 or more through a byte array.
_INT64_FORMAT = "%dl" if not _BIG_ENDIAN and struct.calcsize("l") == 8 else "<%dq"


class IntList:
    """A list of ints on its way into a pickle; unpickles as a plain ``list``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data  # the ints, as little-endian int64

    def __reduce__(self) -> tuple[Any, ...]:
        return (ints_from, (self.data,))


def int64_bytes(ints: Sequence[int]) -> bytes | None:
    """Plain ints as one block of little-endian int64; None if one does not fit."""
    try:
        return struct.pack(_INT64_FORMAT % len(ints), *ints)
    except (struct.error, OverflowError):
        return None


def little_endian_bytes(numbers: array.array[Any]) -> bytes:
    """The bytes of ``numbers`` in little-endian order, whatever the machine's."""
    if _BIG_ENDIAN:
        numbers = array.array(numbers.typecode, numbers)  # a copy: the caller's stays as is
        numbers.byteswap()
    return numbers.tobytes()


def ints_from(data: bytes) -> list[int]:
    """The list an ``IntList`` was made from."""
    if _BIG_ENDIAN:
        ints = array.array("q", data)
        ints.byteswap()
        return ints.tolist()
    return memoryview(data).cast("q").tolist()


def pack(values: list[Any]) -> Any:
    """``values`` as an ``IntList`` if it is a long list of plain 64-bit ints, else as is."""
    if len(values) < PACK_FROM_ITEMS or type(values[0]) is not int:
        return values
    # Exact ints only: bools and anything else with __index__ must keep their types.
    if list(map(type, values)).count(int) != len(values):
        return values
    data = int64_bytes(values)
    return values if data is None else IntList(data)  # None: one too large for 64 bits
