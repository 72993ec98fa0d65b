"""What the parent knows about one worker process."""

from __future__ import annotations

import signal
import socket
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workpool.backends.process.framing import FrameReader, FrameWriter
from workpool.tasks import Chunk

if TYPE_CHECKING:
    from workpool.backends.process.launch import WorkerProcess

__all__ = ["KillReason", "WorkerHandle", "describe_exit"]

# Functions a worker keeps at once; the parent evicts the least recently used.
FUNCTION_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class KillReason:
    """Why the supervisor killed a worker: the item it overran and the limit it broke."""

    position: int
    limit: float


@dataclass(eq=False)
class WorkerHandle:
    """The parent's side of one worker: its process, socket and the chunks it holds.

    Only the supervisor thread touches a handle.
    """

    slot: int
    process: WorkerProcess
    pid: int
    sock: socket.socket
    reader: FrameReader
    writer: FrameWriter
    # Chunks sent and not yet answered, in the order the worker runs them.
    assigned: deque[Chunk] = field(default_factory=deque)
    # Function ids the worker holds, least recently used first.
    functions: OrderedDict[int, None] = field(default_factory=OrderedDict)
    tasks_left: int | None = None  # before max_tasks_per_worker retires it
    ready: bool = False  # the initializer ran and the worker said so
    stop_sent: bool = False
    alive: bool = True
    kill_reason: KillReason | None = None
    init_error: BaseException | None = None

    @property
    def label(self) -> str:
        return f"worker process {self.pid}"

    @property
    def accepts_work(self) -> bool:
        return (
            self.alive
            and not self.stop_sent
            and self.kill_reason is None
            and (self.tasks_left is None or self.tasks_left > 0)
        )


def describe_exit(exitcode: int | None) -> str:
    """'killed by SIGSEGV', 'exited with code 3': how a process ended, in words."""
    if exitcode is None:
        return "ended in an unknown way"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}"
    return f"exited with code {exitcode}"
