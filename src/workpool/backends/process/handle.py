"""What the parent knows about one worker process."""

from __future__ import annotations

import signal
from collections import OrderedDict, deque

from workpool.backends.process.framing import FrameReader, FrameWriter
from workpool.backends.process.lifeline import RECHECK_FIRST
from workpool.backends.process.unix_sockets import Socket
from workpool.backends.process.wire import WireChunk
from workpool.clock import now_ns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from workpool.tasks import Chunk

__all__ = ["TRACE_GROUP", "KillReason", "WorkerHandle", "describe_exit"]

# Functions a worker keeps at once; the parent evicts the least recently used.
FUNCTION_CACHE_SIZE = 64

# The group of worker processes' tracks in a timeline.
TRACE_GROUP = "worker processes"


if TYPE_CHECKING:

    class WorkerProcess(Protocol):
        """A worker process as the supervisor sees it, however it was started (``launch.py``)."""

        pid: int
        #: Readable once the process has ended; watched by the supervisor.
        ended_fd: int
        #: True when ``ended_fd`` is a pipe that another process may keep open: the
        #: supervisor then also asks ``exitcode`` (a waitpid), on a timer (``lifeline.py``).
        needs_polling: bool

        @property
        def exitcode(self) -> int | None:
            """How the process ended (negative: by that signal); None while unknown.

            Never blocks.
            """

        def kill(self) -> None: ...
        def join(self, timeout: float | None = None) -> None:
            """Wait up to ``timeout`` seconds for the process to end and its exit code to be
            known."""

        def close(self) -> None: ...


class KillReason:
    """Why the supervisor killed a worker: the item it overran and the limit it broke."""

    __slots__ = ("limit", "position")  # not a NamedTuple: that costs a compile at import

    def __init__(self, position: int, limit: float) -> None:
        self.position = position
        self.limit = limit


class WorkerHandle:
    """The parent's side of one worker: its process, socket and the chunks it holds.

    Touched only under the supervisor's lock: by the supervisor's thread, or by a
    submitting thread that sends a chunk straight to this worker while it has room.
    """

    __slots__ = (
        "alive",
        "assigned",
        "busy_since_ns",
        "clock_offset_ns",
        "functions",
        "init_error",
        "kill_reason",
        "killed",
        "pid",
        "process",
        "reader",
        "ready",
        "recheck_at",
        "recheck_every",
        "slot",
        "sock",
        "started_ns",
        "stop_sent",
        "tasks_left",
        "watching_writes",
        "writer",
    )

    def __init__(
        self,
        slot: int,
        process: WorkerProcess,
        pid: int,
        sock: Socket,
        reader: FrameReader,
        writer: FrameWriter,
        tasks_left: int | None = None,
    ) -> None:
        self.slot = slot
        self.process = process
        self.pid = pid
        self.sock = sock
        self.reader = reader
        self.writer = writer
        # Chunks sent and not yet answered, in the order the worker runs them.
        self.assigned: deque[WireChunk] = deque()
        # Function ids the worker holds, least recently used first.
        self.functions: OrderedDict[int, None] = OrderedDict()
        self.tasks_left = tasks_left  # before max_tasks_per_worker retires it
        self.ready = False  # the initializer ran and the worker said so
        self.stop_sent = False
        self.alive = True
        self.watching_writes = False  # registered for EVENT_WRITE too: it has bytes to send
        self.kill_reason: KillReason | None = None
        self.init_error: BaseException | None = None
        self.killed = False  # SIGKILL sent
        # Where only waitpid can confirm the process's end: when to ask it next, and
        # the pause before that (it grows from RECHECK_FIRST to the beat).
        self.recheck_at: float | None = None
        self.recheck_every = RECHECK_FIRST
        # For timelines (``workpool.clock``): when the worker was started; what to add
        # to its clock readings to put them on ours (measured when it says READY); and,
        # while a traced chunk is at the head of ``assigned``, since when it runs.
        self.started_ns = now_ns()
        self.clock_offset_ns = 0
        self.busy_since_ns = 0

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

    def takes_whole(self, chunk: Chunk) -> bool:
        """Whether all of ``chunk`` fits in the tasks this worker has left."""
        return self.tasks_left is None or len(chunk.items) <= self.tasks_left


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
