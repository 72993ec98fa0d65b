"""A chunk as the process engine sends it: the chunk, and what crossing a socket adds.

``Chunk`` (``tasks.py``) says what to run and who wants the results; it is the same for
every backend. To send one to a worker process the engine adds, per chunk: the
function's pickled form (``FunctionRef``), the items pickled with the descriptors of
the shared memory they refer to and the objects that keep those open until sent, and
the chunk's number on the wire. ``WireChunk`` holds these beside the chunk.
"""

from __future__ import annotations

from workpool.serialize import FunctionRef
from workpool.sharing import dumps_sharing
from workpool.tasks import Chunk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["WireChunk"]


class WireChunk:
    """One chunk on its way to (or held by) a worker process.

    ``payload`` is None until ``encode()`` pickles the items: the submitting thread does
    it for a new chunk, the supervisor for a piece it split off one (after a crash).
    ``seq`` is given when the chunk is sent; the worker's batch answers with it.
    ``done`` counts its first items whose outcomes came back ahead of the rest (the
    worker sends them at once when one raised, ``protocol.py``); ``garbled``: some such
    outcomes could not be unpickled, and how many is not known.
    """

    __slots__ = ("chunk", "done", "fds", "fn_ref", "garbled", "keep", "payload", "seq")

    def __init__(self, chunk: Chunk, fn_ref: FunctionRef) -> None:
        self.chunk = chunk
        self.fn_ref = fn_ref
        self.payload: bytes | None = None
        self.fds: list[int] = []
        self.keep: list[Any] = []
        self.seq = 0
        self.done = 0
        self.garbled = False

    def __repr__(self) -> str:
        return f"<WireChunk seq={self.seq} {self.chunk!r}>"

    def encode(self, *, spill: bool = False) -> None:
        """Pickle the items, large arrays by shared memory; raises what pickling raises.

        ``spill``: arrays past what one message carries go by value (``dumps_sharing``).
        """
        self.payload, self.fds, self.keep = dumps_sharing(
            self.chunk.items, self.chunk.sharing, to_worker=True, spill=spill
        )

    def split(self, begin: int, end: int) -> WireChunk:
        """Items ``[begin, end)`` as a chunk of their own, not yet pickled."""
        return WireChunk(self.chunk.split(begin, end), self.fn_ref)
