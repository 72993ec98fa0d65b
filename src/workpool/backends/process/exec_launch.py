"""Workers started by exec: a fresh interpreter per worker, from any kind of parent.

The other ways to start a worker each need something of the parent. ``fork`` (and the
zygote, which forks) needs a parent that runs one thread; ``multiprocessing`` refuses
to start children from a *daemonic* process, whatever its start method. A Dask worker
started by a nanny is both daemonic and multi-threaded (dask/distributed#2142), and a
pool inside it has to start workers all the same. ``subprocess`` can: it starts a new
program with ``vfork``/``posix_spawn`` and ``exec``, which is safe from a threaded
parent and asks nothing of ``multiprocessing``.

What crosses into the child, and how::

    parent (the launcher)                         child: python -c <bootstrap>
    ---------------------                         ----------------------------
    socketpair, slots memory, prep pipe  --fds--> kept open by number (pass_fds)
    write prep: sys.path, cwd, fds, slot --pipe-> read it, set sys.path and cwd
                                                  worker_main(socket, slots, slot, parent)
    sentinel: a pidfd (Linux), or the read end of a pipe whose only write end the
    child holds: it becomes readable when the child ends

A worker notices its parent's death the way every worker does (``worker.py``): its
socket's other end closes, and on Linux ``PR_SET_PDEATHSIG`` too. Nothing here needs
Linux: without ``pidfd_open`` the exit pipe is the sentinel.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys

from workpool import _platform
from workpool.backends.process import ctrl_c, lifeline, parent_watch
from workpool.backends.process.poller import wait_readable
from workpool.backends.process.preload import program_place

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool.backends.process.slots import SharedSlots
    from workpool.backends.process.unix_sockets import Socket

__all__ = [
    "HAS_PIDFD",
    "IGNORE_CTRL_C",
    "ExecLauncher",
    "ExecWorker",
    "interpreter_flags",
    "package_root",
    "popen_ignoring_ctrl_c",
]

#: Whether exits are watched through pidfds; otherwise (and on other systems) through
#: the exit pipe.
HAS_PIDFD = _platform.USE_PIDFD

#: The first statements of a helper started by ``popen_ignoring_ctrl_c``.
IGNORE_CTRL_C = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
)

# The child's first lines: ignore Ctrl+C, find workpool where the parent found it, then
# hand over.
_BOOTSTRAP = IGNORE_CTRL_C + (
    "import sys; sys.path.insert(0, sys.argv[2]); "
    "from workpool.backends.process.exec_worker import main; main(int(sys.argv[1]))"
)


def popen_ignoring_ctrl_c(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a helper interpreter whose code begins with ``IGNORE_CTRL_C``.

    Ctrl+C is the parent's to handle, but it reaches the whole process group: one
    pressed while the helper starts up would reach it before its code can ignore it,
    and it would die printing a traceback. So it starts with SIGINT blocked (the mask
    survives exec) and unblocks it once it ignores it.
    """
    with ctrl_c.blocked_while_starting():
        return subprocess.Popen(args, **options)


def package_root() -> str:
    """The directory that holds the ``workpool`` package this module belongs to."""
    package = os.path.abspath(__file__)
    for _ in range(4):  # .../<root>/workpool/backends/process/exec_launch.py
        package = os.path.dirname(package)
    return package


def interpreter_flags() -> list[str]:
    """Options this interpreter was started with (-X, -O, -W...), for the child too."""
    try:
        return list(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]
    except Exception:  # a private helper: do without it if it ever goes
        return []


#: How long ``ExecWorker.close`` waits for a child that closed its exit pipe to be
#: reapable: it closes the pipe on its way out, so this is a bound, not an estimate.
_REAP_SECONDS = 1.0


class ExecWorker:
    """A worker started by exec, as the supervisor sees it (``handle.WorkerProcess``).

    It is this process's child, so waitpid knows when it ends. ``ended_fd`` is its
    pidfd, or else the read end of an exit pipe only the child holds a write end of,
    which a process the worker forked may hold too: then ``needs_polling`` says to ask
    waitpid as well.
    """

    def __init__(self, popen: subprocess.Popen[bytes], ended_fd: int, pidfd: int | None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.ended_fd = ended_fd
        self._pidfd = pidfd
        self.needs_polling = pidfd is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()  # waitpid(WNOHANG): never blocks

    def kill(self) -> None:
        if self.exitcode is None:  # not reaped yet, so the pid is still this child's
            lifeline.kill(self.pid, self._pidfd)

    def join(self, timeout: float | None = None) -> None:
        if self._pidfd is not None and not wait_readable(self._pidfd, timeout):
            return
        lifeline.wait_for(lambda: self.exitcode, timeout)

    def close(self) -> None:
        """Close the sentinel, and reap the child if its exit is under way.

        A child whose sentinel is readable has ended, or is ending: the exit pipe
        closes as the child exits, a moment before waitpid can report it. Reaping it
        here keeps ``subprocess`` from finding it unreaped later (a zombie, and a
        "still running" warning). A child still alive is left to the caller's kill.
        """
        if self.ended_fd >= 0 and self._popen.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if wait_readable(self.ended_fd, 0):
                    self._popen.wait(_REAP_SECONDS)
        with contextlib.suppress(OSError):
            os.close(self.ended_fd)
        self.ended_fd, self._pidfd = -1, None


class ExecLauncher:
    """Starts each worker as ``python -c <bootstrap>`` with its descriptors passed along.

    ``use_pidfd`` chooses the sentinel: a pidfd where the system has one (default), or
    the portable exit pipe.
    """

    method = "exec"  # launch.EXEC_METHOD, which names it without importing this module

    def __init__(self, *, use_pidfd: bool | None = None) -> None:
        self._use_pidfd = HAS_PIDFD if use_pidfd is None else use_pidfd
        self._command = [
            sys.executable,
            *interpreter_flags(),
            "-c",
            _BOOTSTRAP,
        ]
        self._root = package_root()

    def start(self, sock: Socket, slots: SharedSlots, slot: int) -> ExecWorker:
        if not sys.executable:
            raise OSError("cannot start a worker by exec: sys.executable is unknown here")
        prep_r, prep_w = os.pipe()
        exit_r, exit_w = (-1, -1) if self._use_pidfd else os.pipe()
        watch = parent_watch.read_end()  # -1 where the socket's close is watched instead
        passed = [sock.fileno(), slots.fd, prep_r] + [fd for fd in (exit_w, watch) if fd >= 0]
        try:
            popen = popen_ignoring_ctrl_c(
                [*self._command, str(prep_r), self._root],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (prep_r, prep_w, exit_r, exit_w):
                if fd >= 0:
                    os.close(fd)
            raise
        os.close(prep_r)
        if exit_w >= 0:
            os.close(exit_w)  # the child's copy is now the only one
        pidfd: int | None = None
        if self._use_pidfd:
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError:  # the child is already gone and reaped: nothing to watch
                pidfd = None
        prep: dict[str, Any] = {
            "socket": sock.fileno(),
            "slots": (slots.fd, slots.count),
            "slot": slot,
            "parent": os.getpid(),
            "place": program_place(),
            "exit_pipe": exit_w,
            "watch": watch,
        }
        try:
            with open(prep_w, "wb", closefd=True) as pipe:
                pipe.write(pickle.dumps(prep))
        except BrokenPipeError:
            pass  # the child died before it read: its sentinel tells the supervisor
        if pidfd is not None:
            return ExecWorker(popen, pidfd, pidfd)
        if exit_r >= 0:
            return ExecWorker(popen, exit_r, None)
        # Reaped before we could open its pidfd: an already readable sentinel.
        done_r, done_w = os.pipe()
        os.close(done_w)
        return ExecWorker(popen, done_r, None)
