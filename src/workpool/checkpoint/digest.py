"""Reproducible digests of input items: what "the same input" means to a checkpoint.

A checkpoint knows an item by its input position; a digest checks, on resume, that
the item found at that position is the one that was journaled. Pickles cannot serve
as the thing digested: a set of strings pickles in hash order, which changes with
every ``PYTHONHASHSEED``, and two equal strings pickle differently depending on
whether they are one object or two. So each kind of value has a canonical encoding
here, a function of the value alone, the same in every run of every process:

==========================================  ===============================================
value                                       what is compared
==========================================  ===============================================
``None``, ``bool``, ``int``, ``float``,     the value (floats bit for bit, so ``-0.0`` is
``complex``, ``str``, ``bytes``,            not ``0.0``; ``1``, ``1.0`` and ``True`` are
``bytearray``                               three different values)
``tuple``, ``list``                         the items, in order
``dict``                                    the (key, value) pairs, in the order of the
                                            keys' encodings (insertion order is ignored)
``set``, ``frozenset``                      the items, in the order of their encodings
subclasses of the above (namedtuple,        as the base type, plus the subclass's module
``IntEnum``, ``OrderedDict``...)            and qualified name (an ``OrderedDict`` keeps
                                            its order)
``enum.Enum`` members                       the enum's module, qualified name and the
                                            member's name
NumPy arrays and scalars                    dtype, shape, and the bytes in C order
paths (``pathlib``)                         the type and the path's text
classes, functions, modules                 their module and qualified name
anything else that pickles (``datetime``,   what ``__reduce_ex__`` gives: the rebuilding
``Decimal``, ``UUID``, dataclasses...)      callable by name, the arguments, the state
                                            and the items held, each encoded as here
anything that cannot be pickled             nothing: only its position is checked
==========================================  ===============================================

A chunk's digest is a 16-byte BLAKE2b over the encodings of its items, so a mismatch
names the chunk's positions. Chunks made only of plain ``int`` (within 64 bits),
``float`` or ``str`` items, such as a ``range``, a list of numbers or of file names,
have a compact encoding computed in C, and ints in arithmetic progression are encoded
by first item, step and length (so a ``range`` is digested without visiting its
items). Which encoding a chunk gets depends only on its values: a list and a range
holding the same numbers have the same digest. Tuples of plain ints and floats
(``starmap``'s arguments) get the general encoding, but written a column at a time in
C rather than a value at a time in Python: the same bytes, about five times sooner.
"""

from __future__ import annotations

import collections
import enum
import struct
import sys
import types
from array import array
from collections.abc import Callable, Sequence
from operator import itemgetter, ne
from typing import Any

from workpool.int_lists import int64_bytes, little_endian_bytes

try:  # BLAKE2 itself: hashlib would also load OpenSSL, a few milliseconds for nothing
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python without the _blake2 module
    from hashlib import blake2b

__all__ = [
    "CanonicalEncoder",
    "blake2b",
    "chunk_digest",
    "digest_and_encodings",
    "encode",
    "part_digest",
    "qualified_name",
]

_pack_i64 = struct.Struct("<q").pack
_pack_u64 = struct.Struct("<Q").pack
_pack_f64 = struct.Struct("<d").pack
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# The order matters: a subclass of several of these is encoded as the first it matches.
_BUILTIN_KINDS: tuple[type, ...] = (
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    tuple,
    list,
    dict,
    set,
    frozenset,
)


def _type_name(cls: type) -> bytes:
    return f"{cls.__module__}.{cls.__qualname__}".encode("utf-8", "surrogatepass")


# Objects pickle carries by name.
_GLOBALS = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)


def qualified_name(obj: Any) -> str:
    """A class's or function's module and qualified name (a module's: its name; an
    object without a name: its type's, as "... object")."""
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        cls = type(obj)
        return f"{cls.__module__}.{cls.__qualname__} object"
    return f"{module}.{name}" if module else str(name)


# --- one function per kind of single value: its encoding ------------------------------


def _none_bytes(obj: object) -> bytes:
    return b"N"


def _bool_bytes(obj: bool) -> bytes:
    return b"T" if obj else b"F"


def _int_bytes(obj: int) -> bytes:
    if _INT64_MIN <= obj <= _INT64_MAX:
        return b"i" + _pack_i64(obj)
    data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
    return b"I" + _pack_u64(len(data)) + data


def _float_bytes(obj: float) -> bytes:
    return b"f" + _pack_f64(obj)


def _complex_bytes(obj: complex) -> bytes:
    return b"c" + _pack_f64(obj.real) + _pack_f64(obj.imag)


def _str_bytes(obj: str) -> bytes:
    data = obj.encode("utf-8", "surrogatepass")
    return b"s" + _pack_u64(len(data)) + data


def _bytes_bytes(obj: bytes) -> bytes:
    return b"b" + _pack_u64(len(obj)) + bytes(obj)


def _bytearray_bytes(obj: bytearray) -> bytes:
    return b"y" + _pack_u64(len(obj)) + bytes(obj)


# Exact types only: a subclass (IntEnum, a str subclass) also records its name.
_SCALAR_BYTES: dict[type, Callable[[Any], bytes]] = {
    type(None): _none_bytes,
    bool: _bool_bytes,
    int: _int_bytes,
    float: _float_bytes,
    complex: _complex_bytes,
    str: _str_bytes,
    bytes: _bytes_bytes,
    bytearray: _bytearray_bytes,
}


class CanonicalEncoder:
    """Turns values into their canonical encodings (see the module's table).

    Every encoding is self-delimiting (a tag byte, then fixed-size or length-prefixed
    content), so a sequence of encodings can be split back apart: different values
    never share an encoding. Subclasses decide what "anything else" becomes by
    overriding ``encode_object``. Not thread-safe: one encoder per thread.
    """

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self._active: set[int] = set()  # containers being encoded, against cycles

    def encoding(self, obj: object) -> bytes:
        """The encoding of ``obj`` alone, as one byte string."""
        scalar = _SCALAR_BYTES.get(type(obj))
        if scalar is not None:
            return scalar(obj)
        saved, self.parts = self.parts, []
        try:
            self.encode(obj)
            return b"".join(self.parts)
        finally:
            self.parts = saved

    def encode(self, obj: object) -> None:
        """Append the encoding of ``obj`` to ``parts``."""
        scalar = _SCALAR_BYTES.get(type(obj))
        if scalar is not None:
            self.parts.append(scalar(obj))
            return
        write = _CONTAINERS.get(type(obj))
        if write is not None:
            write(self, obj)
        else:
            self._encode_uncommon(obj)

    def encode_other(self, obj: object) -> None:
        """A value of no kind above, by ``encode_object``; once, if it holds itself."""
        key = id(obj)
        if key in self._active:  # an object that holds itself (or a function that calls itself)
            self.parts.append(b"^")
            return
        self._active.add(key)
        try:
            self.encode_object(obj)
        finally:
            self._active.discard(key)

    def encode_object(self, obj: object) -> None:
        """What "anything else" becomes: here, what pickling makes of it."""
        self.encode_reduced(obj)

    def encode_reduced(self, obj: object) -> None:
        """``obj`` as pickling knows it, each part encoded canonically.

        A path is its type and its text. A class, function or module is its name, as
        pickle carries it. Anything else is what ``__reduce_ex__`` gives: the callable
        that rebuilds it, by name, then its arguments, its state and the items it
        holds, encoded as values here, so that a ``datetime``, a ``Decimal``, a
        ``UUID`` or a dataclass instance is compared by value, and a set in its state
        in any hash order. An object that cannot be pickled has no encoding: nothing
        of it is compared.
        """
        # A path exists only once pathlib (perhaps being imported by another thread) has
        # its PurePath.
        pure_path = getattr(sys.modules.get("pathlib"), "PurePath", None)
        if pure_path is not None and isinstance(obj, pure_path):  # its pickle varies
            self.encode_name(b"p", _type_name(type(obj)).decode("utf-8", "surrogatepass"))
            self.parts.append(_str_bytes(str(obj)))
            return
        if isinstance(obj, _GLOBALS):
            self.encode_name(b"K", qualified_name(obj))
            return
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:  # not picklable: locks, files, generators...
            self.parts.append(b"?")
            return
        if isinstance(reduced, str):  # a global object, pickled by name
            self.encode_name(b"K", f"{getattr(obj, '__module__', None)}.{reduced}")
            return
        if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
            self.parts.append(b"?")
            return
        rebuild, args, state, items, pairs = (*reduced, None, None, None)[:5]
        self.encode_name(b"R", qualified_name(rebuild))
        self.encode(args)
        self.encode(state)
        self.encode(None if items is None else list(items))
        self.encode(None if pairs is None else dict(pairs))

    def encode_name(self, tag: bytes, name: str) -> None:
        data = name.encode("utf-8", "surrogatepass")
        self.parts.append(tag + _pack_u64(len(data)) + data)

    # --- one method per kind of container -------------------------------------------

    def _sequence(self, tag: bytes, obj: tuple[Any, ...] | list[Any]) -> None:
        key = id(obj)
        if key in self._active:  # a container holding itself
            self.parts.append(b"^")
            return
        self._active.add(key)
        try:
            self.parts.append(tag + _pack_u64(len(obj)))
            for item in obj:
                self.encode(item)
        finally:
            self._active.discard(key)

    def _tuple(self, obj: tuple[Any, ...]) -> None:
        self._sequence(b"t", obj)

    def _list(self, obj: list[Any]) -> None:
        self._sequence(b"l", obj)

    def _dict(self, obj: dict[Any, Any], *, keep_order: bool = False) -> None:
        key = id(obj)
        if key in self._active:
            self.parts.append(b"^")
            return
        self._active.add(key)
        try:
            pairs = [(self.encoding(k), self.encoding(v)) for k, v in list(obj.items())]
            if not keep_order:
                pairs.sort()
            self.parts.append((b"o" if keep_order else b"d") + _pack_u64(len(pairs)))
            for k, v in pairs:
                self.parts.append(k)
                self.parts.append(v)
        finally:
            self._active.discard(key)

    def _set(self, obj: set[Any] | frozenset[Any]) -> None:
        key = id(obj)
        if key in self._active:
            self.parts.append(b"^")
            return
        self._active.add(key)
        try:
            members = sorted(self.encoding(item) for item in list(obj))
            self.parts.append((b"S" if isinstance(obj, set) else b"z") + _pack_u64(len(members)))
            self.parts.extend(members)
        finally:
            self._active.discard(key)

    def _encode_uncommon(self, obj: object) -> None:
        """Values whose type is not exactly one of the builtin kinds."""
        numpy = sys.modules.get("numpy")  # an array exists only if numpy was imported
        if numpy is not None and isinstance(obj, numpy.ndarray):
            self._ndarray(obj)
            return
        if numpy is not None and isinstance(obj, numpy.generic):
            self.parts.append(b"g" + _dtype_name(obj.dtype) + obj.tobytes())
            return
        if isinstance(obj, enum.Enum) and not isinstance(obj, _BUILTIN_KINDS):
            self.encode_name(b"e", f"{type(obj).__module__}.{type(obj).__qualname__}")
            self.parts.append(_str_bytes(obj.name))
            return
        for kind in _BUILTIN_KINDS:
            if isinstance(obj, kind):
                name = _type_name(type(obj))
                self.parts.append(b"<" + _pack_u64(len(name)) + name)
                if kind is dict:
                    self._dict(obj, keep_order=isinstance(obj, collections.OrderedDict))  # type: ignore[arg-type]
                elif kind in _SCALAR_BYTES:
                    self.parts.append(_SCALAR_BYTES[kind](obj))
                else:
                    _CONTAINERS[kind](self, obj)
                return
        self.encode_other(obj)

    def _ndarray(self, array_: Any) -> None:
        self.parts.append(b"a" + _dtype_name(array_.dtype) + _pack_u64(array_.ndim))
        self.parts.extend(_pack_u64(n) for n in array_.shape)
        if array_.dtype.hasobject:  # object arrays: their elements, one by one
            for item in array_.ravel(order="C").tolist():
                self.encode(item)
        else:
            data = _array_bytes(array_)
            self.parts.append(_pack_u64(data.nbytes))
            self.parts.append(data)  # a view: hashed or joined at once, never kept


def _array_bytes(array_: Any) -> memoryview:
    """The array's bytes in C order, without a copy when they already are."""
    if array_.flags.c_contiguous:
        try:
            return memoryview(array_).cast("B")
        except (TypeError, ValueError):  # dtypes the buffer protocol lacks (datetime64)
            pass
    return memoryview(array_.tobytes(order="C"))


def _dtype_name(dtype: Any) -> bytes:
    # ``str`` names byte order and size ("<f8"); structured dtypes need their fields.
    text = str(dtype.descr) if dtype.fields is not None else dtype.str
    data = text.encode()
    return _pack_u64(len(data)) + data


_CONTAINERS: dict[type, Callable[[CanonicalEncoder, Any], None]] = {
    tuple: CanonicalEncoder._tuple,
    list: CanonicalEncoder._list,
    dict: CanonicalEncoder._dict,
    set: CanonicalEncoder._set,
    frozenset: CanonicalEncoder._set,
}


def encode(obj: object) -> bytes:
    """The canonical encoding of one value."""
    return CanonicalEncoder().encoding(obj)


def _progression(numbers: Sequence[int]) -> bytes | None:
    """First item and step if ``numbers`` is an arithmetic progression, else None.

    A ``range`` is digested from its first item, step and length alone, without
    visiting its items; a list holding the same numbers must get the same digest.
    """
    count = len(numbers)
    first, last = numbers[0], numbers[-1]
    step = numbers[1] - first if count > 1 else 0
    if last != first + (count - 1) * step:  # most lists fail here, at no cost
        return None
    if count > 2:
        if step == 0:
            if numbers.count(first) != count:
                return None
        elif any(map(ne, numbers, range(first, first + count * step, step))):
            return None
    return _first_and_step(first, last, step)


def _range_progression(items: range) -> bytes | None:
    """``_progression`` for a range, read off its ends."""
    return _first_and_step(items[0], items[-1], items.step if len(items) > 1 else 0)


def _first_and_step(first: int, last: int, step: int) -> bytes | None:
    """A progression's encoding; None beyond 64 bits (its items lie between its ends)."""
    if all(_INT64_MIN <= n <= _INT64_MAX for n in (first, last, step)):
        return _pack_i64(first) + _pack_i64(step)
    return None


def chunk_digest(items: Sequence[Any]) -> bytes:
    """The 16-byte digest of consecutive input items, in order (see the module's table)."""
    fast = _fast_digest(items)
    return fast if fast is not None else encodings_digest(item_encodings(items))


def digest_and_encodings(items: Sequence[Any]) -> tuple[bytes, list[bytes] | None]:
    """``chunk_digest(items)``, and each item's encoding if they are digested that way.

    Only such items can be changed in place by a function (a dict, a list...): the
    fast ways take plain numbers, strings and tuples of numbers. Their encodings, made
    before the items run, digest any part of them later as they were (``part_digest``).
    """
    fast = _fast_digest(items)
    if fast is not None:
        return fast, None
    encodings = item_encodings(items)
    return encodings_digest(encodings), encodings


def part_digest(items: Sequence[Any], encodings: Sequence[bytes], low: int, high: int) -> bytes:
    """``chunk_digest(items[low:high])``, as the items were when ``encodings`` were made."""
    fast = _fast_digest(items[low:high])  # items that cannot have changed
    return fast if fast is not None else encodings_digest(encodings[low:high])


def item_encodings(items: Sequence[Any]) -> list[bytes]:
    """Each item's canonical encoding."""
    encoder = CanonicalEncoder()
    return [encoder.encoding(item) for item in items]


def encodings_digest(encodings: Sequence[bytes]) -> bytes:
    """The digest of items that take no fast way, from their encodings."""
    hasher = blake2b(digest_size=16, person=b"workpool.items.1")
    hasher.update(b"G" + _pack_u64(len(encodings)))
    for encoding in encodings:
        hasher.update(encoding)
    return hasher.digest()


def _fast_digest(items: Sequence[Any]) -> bytes | None:
    """The digest of items all of one plain kind, made in C; None for the others."""
    hasher = blake2b(digest_size=16, person=b"workpool.items.1")
    count = len(items)
    kinds: set[type] = set(map(type, items)) if type(items) is not range else {int}
    if count and len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is int:
            progression = _range_progression(items) if type(items) is range else _progression(items)
            if progression is not None:
                hasher.update(b"R" + _pack_u64(count) + progression)
                return hasher.digest()
            block = int64_bytes(items)
            if block is not None:  # None: some beyond 64 bits, the general encoding
                hasher.update(b"Q" + _pack_u64(count) + block)
                return hasher.digest()
        elif kind is float:
            hasher.update(b"D" + _pack_u64(count))
            hasher.update(little_endian_bytes(array("d", items)))
            return hasher.digest()
        elif kind is str:
            # Lengths in code points, then the concatenation: the lengths say where
            # each item ends, so no separator is needed.
            hasher.update(b"U" + _pack_u64(count))
            hasher.update(little_endian_bytes(array("q", map(len, items))))
            hasher.update("".join(items).encode("utf-8", "surrogatepass"))
            return hasher.digest()
        elif kind is tuple:
            records = _numeric_records(items)
            if records is not None:
                hasher.update(b"G" + _pack_u64(count))
                hasher.update(records)
                return hasher.digest()
    return None


# Tags of the numbers a tuple may hold for ``_numeric_records``, by array typecode.
_NUMBER_TAGS = {"q": b"i", "d": b"f"}
_NUMBER_TYPES = frozenset({int, float})


def _numeric_records(items: Sequence[tuple[Any, ...]]) -> bytearray | None:
    """The general encodings of ``items``, made a column at a time, or None.

    For tuples of one length whose every column is all plain ints (within 64 bits) or
    all floats, such as ``starmap``'s argument pairs. The bytes are exactly those the
    ``CanonicalEncoder`` writes, item after item (so the digest does not depend on
    which way it was made), but the encoder visits every value in Python, about a
    microsecond each; here each column is copied into place in C, a byte lane at a time.
    """
    width = len(items[0])
    if not width or not set(map(type, items[0])) <= _NUMBER_TYPES:
        return None  # at no cost for most other tuples: the first item shows it
    if set(map(len, items)) != {width}:
        return None
    columns = []
    for index in range(width):
        column = list(map(itemgetter(index), items))
        kinds = set(map(type, column))
        if kinds == {int}:
            data = int64_bytes(column)
            if data is None:  # an int beyond 64 bits: the general encoding
                return None
            columns.append(("q", data))
        elif kinds == {float}:
            columns.append(("d", little_endian_bytes(array("d", column))))
        else:
            return None
    # One record per item: "t", the width, then a tag and 8 bytes per value.
    head = b"t" + _pack_u64(width)
    size = len(head) + 9 * width
    template = head + b"".join(_NUMBER_TAGS[typecode] + bytes(8) for typecode, _ in columns)
    records = bytearray(template * len(items))
    for index, (_, data) in enumerate(columns):
        offset = len(head) + 9 * index + 1
        for lane in range(8):
            records[offset + lane :: size] = data[lane::8]
    return records
