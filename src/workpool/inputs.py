"""Where a call's items come from, taken a chunk at a time.

A list, tuple or range is sliced directly: a slice of a range is itself a range (it
pickles in a few bytes) and a slice of a list copies pointers, not items one by one.
Anything else is read through its iterator, lazily, only as far as asked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

from workpool.tasks import CallMode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

__all__ = ["InputSource", "prepare_inputs"]


if TYPE_CHECKING:

    class ItemSource(Protocol):
        """Anything that hands out a call's items in order, a few at a time."""

        def take(self, count: int) -> Sequence[Any]:
            """Up to ``count`` next items (fewer when there are no more, or none right here)."""
            ...


_SLICEABLE = (range, list, tuple)


class InputSource:
    """The items of one call, handed out in order by ``take``. Not thread-safe."""

    def __init__(
        self, items: Iterable[Any], sources: tuple[Iterable[Any], ...] | None = None
    ) -> None:
        # The caller's iterables (zipped into ``items`` when there are several), for
        # the checks a checkpoint makes on them; nothing else looks at them.
        self.sources = (items,) if sources is None else sources
        self._sequence: Sequence[Any] | None = None
        self._iterator: Iterator[Any] | None = None
        # Exact types: a subclass may slice differently. A range longer than sys.maxsize
        # has no len(), which slicing needs: it is read through its iterator instead.
        if type(items) in _SLICEABLE and _length((items,)) is not None:
            self._sequence = items  # type: ignore[assignment]
            self._position = 0
        else:
            self._iterator = iter(items)
        self._peeked: list[Any] = []  # an item read by at_end(), not yet taken
        self._failure: BaseException | None = None  # raised while at_end() read ahead

    def take(self, count: int) -> Sequence[Any]:
        """Up to ``count`` next items (fewer only when the input is exhausted)."""
        if self._sequence is not None:
            piece = self._sequence[self._position : self._position + count]
            self._position += len(piece)
            return piece
        assert self._iterator is not None
        taken: list[Any] = []
        if self._peeked and count > 0:
            taken, self._peeked = self._peeked[:count], self._peeked[count:]
            if self._peeked:
                return taken
        if self._failure is not None and count > 0:
            failure, self._failure = self._failure, None
            raise failure
        try:
            # list.extend keeps what it appended before the input raised.
            taken.extend(itertools.islice(self._iterator, count - len(taken)))
        except BaseException:
            self._peeked = taken  # read before the failure, not lost: see salvage()
            raise
        return taken

    def salvage(self) -> list[Any]:
        """The items a ``take`` that raised had read before the input failed."""
        taken, self._peeked = self._peeked, []
        return taken

    def at_end(self) -> bool:
        """Whether no item is left (an iterator's next item is read, and kept for take).

        An input that raises while its next item is read here is not at its end: the
        error is kept, and raised by the next ``take``, where it would have come.
        """
        if self._sequence is not None:
            return self._position >= len(self._sequence)
        assert self._iterator is not None
        if self._failure is not None:
            return False
        if not self._peeked:
            try:
                self._peeked = list(itertools.islice(self._iterator, 1))
            except Exception as exc:  # as take() would let it through: not Ctrl+C
                self._failure = exc
                return False
        return not self._peeked

    def __iter__(self) -> Iterator[Any]:
        """The items not taken yet."""
        return iter(self.remaining())

    def read_all(self) -> int:
        """Read the rest of the input now and keep it; return how many items are left.

        For a caller that reads its whole input at once (``Executor.map``). If the input
        raises, that is raised, and the items it gave before are left to take.
        """
        if self._sequence is None:
            assert self._iterator is not None
            rest, self._peeked = self._peeked, []
            try:
                rest.extend(self._iterator)  # keeps what it appended before a failure
            finally:
                self._sequence, self._position, self._iterator = rest, 0, None
        return len(self._sequence) - self._position

    def remaining(self) -> Sequence[Any] | Iterator[Any]:
        """The items not taken yet, all taken now: a slice of a sequence, else an iterator.

        The iterator reads the input lazily, as far as it is read itself.
        """
        if self._sequence is not None:
            rest = self._sequence[self._position :]
            self._position = len(self._sequence)
            return rest
        assert self._iterator is not None
        if self._peeked:
            peeked, self._peeked = self._peeked, []
            return itertools.chain(peeked, self._iterator)
        return self._iterator


def _iterable(obj: object) -> bool:
    """Whether the builtin ``map`` takes ``obj`` as an input: an ``Iterable``, or an
    object iterated by the old sequence protocol (``__getitem__`` alone), which ``iter``
    accepts without running any of the object's code."""
    if isinstance(obj, Iterable):
        return True
    try:
        iter(obj)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """How many items the iterables zip to, when every one of them can say; else None.

    The builtin ``map`` never asks, so an input that cannot answer is still an input:
    one without ``len()``, a range longer than ``sys.maxsize`` (``OverflowError``), or
    a ``__len__`` that raises.
    """
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except Exception:
        return None


def prepare_inputs(
    iterables: tuple[Iterable[Any], ...], *, star: bool
) -> tuple[InputSource, CallMode, int | None]:
    """Turn the caller's iterables into one source of items, a call mode and a length.

    Several iterables are zipped, as the builtin ``map`` does. The length is known
    only when every iterable has one.
    """
    if not iterables:
        raise TypeError("at least one iterable of inputs is required")
    for iterable in iterables:
        if not _iterable(iterable):
            raise TypeError(f"inputs must be iterable; got {type(iterable).__name__}")
    total = _length(iterables)
    if len(iterables) == 1:
        return InputSource(iterables[0]), (CallMode.STAR if star else CallMode.ONE), total
    if star:
        raise TypeError("starmap takes one iterable of argument tuples")
    return InputSource(zip(*iterables), iterables), CallMode.STAR, total
