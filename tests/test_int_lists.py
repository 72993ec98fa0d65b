"""Long lists of plain ints travel as int64 blocks and come back as the same list."""

from __future__ import annotations

import enum
import pickle
from typing import Any

import pytest

import workpool
from helpers import cube_or_parity
from workpool.int_lists import PACK_FROM_ITEMS, IntList, pack

LONG = PACK_FROM_ITEMS * 3


class Colour(enum.IntEnum):
    RED = 1


def round_trip(values: list[Any]) -> Any:
    return pickle.loads(pickle.dumps(pack(values), pickle.HIGHEST_PROTOCOL))


def test_plain_ints_are_packed_and_come_back_equal_and_exact() -> None:
    values = [(-1) ** i * i * i * 7919 for i in range(LONG)] + [2**63 - 1, -(2**63)]
    assert isinstance(pack(values), IntList)
    back = round_trip(values)
    assert type(back) is list
    assert back == values
    assert {type(value) for value in back} == {int}


@pytest.mark.parametrize(
    "odd_one",
    [True, Colour.RED, 2**63, -(2**63) - 1, 1.0, None, "1"],
    ids=["bool", "IntEnum", "too-large", "too-small", "float", "None", "str"],
)
def test_a_list_with_anything_but_a_64_bit_int_is_pickled_as_it_is(odd_one: Any) -> None:
    for where in (0, LONG // 2, LONG - 1):
        values: list[Any] = list(range(LONG))
        values[where] = odd_one
        assert pack(values) is values
        back = round_trip(values)
        assert back == values
        assert type(back[where]) is type(odd_one)


def test_numpy_integers_keep_their_type() -> None:
    np = pytest.importorskip("numpy")
    values = [np.int64(i) for i in range(LONG)]
    assert pack(values) is values
    values = [int(i) for i in range(LONG)]
    values[3] = np.int32(3)
    assert type(round_trip(values)[3]) is np.int32


def test_short_lists_are_left_alone() -> None:
    values = list(range(PACK_FROM_ITEMS - 1))
    assert pack(values) is values
    assert pack([]) == []


def test_int_results_of_a_map_come_back_exact_on_every_backend(backend: str) -> None:
    # Big squares, negatives, and one chunk of bools among them: each keeps its type.
    items = list(range(-3_000, 3_000))
    results = workpool.map(cube_or_parity, items, backend=backend, workers=2, chunksize=500)
    assert results == [cube_or_parity(x) for x in items]
    assert [type(r) for r in results] == [type(cube_or_parity(x)) for x in items]


def test_the_block_is_little_endian_whichever_way_it_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import array

    from workpool import int_lists

    values = [1, -2, 2**40, 2**63 - 1, -(2**63)] * PACK_FROM_ITEMS
    little = b"".join(n.to_bytes(8, "little", signed=True) for n in values)
    packed = pack(values)
    assert isinstance(packed, IntList)
    assert packed.data == little
    # The portable format, for machines where the native long is not the block.
    monkeypatch.setattr(int_lists, "_INT64_FORMAT", "<%dq")
    assert pack(values).data == little
    too_large = [*values, 2**63]
    assert pack(too_large) is too_large
    native = array.array("q", values)
    assert int_lists.little_endian_bytes(native) == little
    # As a big-endian machine would: its native order swapped on the way out and on
    # the way back in, the caller's array untouched.
    monkeypatch.setattr(int_lists, "_BIG_ENDIAN", True)
    swapped = int_lists.little_endian_bytes(native)
    assert swapped == b"".join(n.to_bytes(8, "big", signed=True) for n in values)
    assert native.tolist() == values
    assert int_lists.ints_from(swapped) == values
