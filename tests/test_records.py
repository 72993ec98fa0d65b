"""Records: the library's small read-only values (records.py), built without typing."""

from __future__ import annotations

import pytest

import workpool
from workpool._options import PoolSpec, RunOptions
from workpool.advise import Advice, Measurement
from workpool.interpreter_trial import Trial
from workpool.records import Record


def every_record() -> list[type[Record]]:
    found, pending = [], list(Record.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_record_annotates_exactly_its_fields() -> None:
    # The annotations are what type checkers see; the slots are what the record holds.
    records = every_record()
    assert {PoolSpec, RunOptions, Advice, Measurement, Trial} <= set(records)
    for cls in records:
        assert set(cls.__annotations__) == set(cls.__slots__), cls


class Point(Record, defaults={"label": ""}):
    __slots__ = ("label", "x", "y")
    x: int
    y: int
    label: str


def test_a_record_takes_its_fields_by_keyword_and_defaults_the_rest() -> None:
    point = Point(x=1, y=2)
    assert (point.x, point.y, point.label) == (1, 2, "")
    assert repr(point) == "Point(label='', x=1, y=2)"
    with pytest.raises(TypeError, match="Point needs a value for 'y'"):
        Point(x=1)
    with pytest.raises(TypeError, match="Point has no field 'z'"):
        Point(x=1, y=2, z=3)
    with pytest.raises(TypeError):
        Point(1, 2)  # type: ignore[misc]


def test_a_record_is_a_value_that_never_changes() -> None:
    point = Point(x=1, y=2)
    moved = point.replace(y=5)
    assert (point.y, moved.y, moved.x) == (2, 5, 1)
    assert point == Point(x=1, y=2) and point != moved
    assert point != (1, 2)
    with pytest.raises(AttributeError, match="read-only"):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(point)  # equal by value, with fields that may not be hashable


def test_advice_reads_as_it_did() -> None:
    advice = workpool.advise(abs, range(-50, 50))
    assert advice.backend in ("serial", "thread", "process", "interpreter")
    assert advice.workers >= 1 and advice.chunksize >= 1
    assert str(advice).startswith(f"backend={advice.backend!r} workers={advice.workers}")
    assert type(advice).__module__ == "workpool" and type(advice).__name__ == "Advice"
