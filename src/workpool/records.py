"""Small read-only values with named fields, for the modules a plain map loads.

``typing.NamedTuple`` would do, but importing ``typing`` costs a few milliseconds, which
every script would pay for classes that only type checkers need to understand (the
engine imports ``typing`` for them alone: ``TYPE_CHECKING = False`` in each module). A
``Record`` subclass lists its fields in ``__slots__``, annotates each for the type
checker (a test holds the two lists equal) and may give defaults for some::

    class Trial(Record, defaults={"speedup": None}):
        __slots__ = ("items", "speedup")
        items: int
        speedup: float | None

    Trial(items=3).replace(speedup=1.9)  # keywords only; a new value, never a change

Records are equal when their classes and all their fields are; they are not tuples.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TypeVar

    R = TypeVar("R", bound="Record")

__all__ = ["Record"]


class Record:
    """A read-only value whose fields are its ``__slots__``, given by keyword."""

    __slots__: tuple[str, ...] = ()
    _defaults: Mapping[str, Any] = {}

    def __init_subclass__(cls, *, defaults: Mapping[str, Any] | None = None) -> None:
        super().__init_subclass__()
        cls._defaults = dict(defaults or {})

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        unknown = values.keys() - set(cls.__slots__)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
        defaults = cls._defaults
        for name in cls.__slots__:
            if name in values:
                value = values[name]
            elif name in defaults:
                value = defaults[name]
            else:
                raise TypeError(f"{cls.__name__} needs a value for {name!r}")
            object.__setattr__(self, name, value)

    def replace(self: R, **changes: Any) -> R:
        """A copy with the values in ``changes`` in place of this one's."""
        return type(self)(**{name: getattr(self, name) for name in self.__slots__} | changes)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only; make another with replace()")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and some fields are not hashable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
