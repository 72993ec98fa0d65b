"""The zygote: a fork server made by ``fork``, while the program is single-threaded.

Forking a worker straight from a multi-threaded program is unsafe: the child inherits
locks that other threads held at that instant, and can hang on them forever. The
standard library's answer, the fork server, starts a fresh interpreter to fork
workers from; that costs 100-300 ms and makes every worker import the main module.

The zygote gets the safety for a few milliseconds: the first time a pool needs a
worker, if the program runs no other thread at that moment, workpool forks a helper
process (the zygote) that never starts a thread. Every worker is then forked from the
zygote on request, so it starts with the program's modules already imported, in a
process that had one thread when it forked. If the program already runs threads when
the first pool starts, the standard fork server is used instead (``launch.py``).

Protocol, over a Unix datagram socket pair (one request, one reply)::

    parent -> zygote   SPAWN slot, sys.path, cwd, preload  + fds [worker socket, slots]
    zygote -> parent   pid                                 + fd  [exit pipe]

The zygote stays until the program ends (as the standard fork server does), so it
names itself ``workpool-zygote`` (``prctl.py``; its workers are ``workpool-worker``):
``ps`` and ``top`` then show what it is rather than one more copy of the program.

The zygote keeps the write end of one *exit pipe* per worker. When the worker ends,
the zygote reaps it and writes its exit status there, then closes it: the read end,
in the parent, is the worker's sentinel and carries its exit code.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence

from workpool.backends.process import exit_hook, lifeline, prctl

__all__ = ["ZygoteWorker", "get_zygote"]

_STATUS = struct.Struct("<i")
_MAX_MESSAGE = 1 << 20


class ZygoteWorker:
    """A worker process forked by the zygote, as the supervisor sees it (``WorkerProcess``).

    It is not our child: a pidfd says when it ends (where the system has them), and
    its exit pipe, which only the zygote writes, brings the exit code.
    """

    def __init__(self, pid: int, sentinel: int) -> None:
        self.pid = pid
        self.sentinel = sentinel  # the exit pipe's read end
        self.exitcode: int | None = None
        self._pidfd = lifeline.open_pidfd(pid)
        self.ended_fd = sentinel if self._pidfd is None else self._pidfd
        self.needs_polling = False  # the exit pipe's write end is the zygote's alone

    def kill(self) -> None:
        if self.exitcode is None:
            lifeline.kill(self.pid, self._pidfd)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the zygote reports the worker's end, then read its exit code."""
        if self.exitcode is not None or self.sentinel < 0:
            return
        if not lifeline.wait_readable(self.sentinel, timeout):
            return
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(self.sentinel, _STATUS.size)
        # Without a status the zygote itself died; call it a kill.
        self.exitcode = _STATUS.unpack(data)[0] if len(data) == _STATUS.size else -signal.SIGKILL

    def close(self) -> None:
        for fd in (self.sentinel, self._pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sentinel, self._pidfd = -1, None


class Zygote:
    """The parent's handle on the zygote process. Thread-safe."""

    def __init__(self) -> None:
        parent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):  # or the zygote's workers print it again
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                parent_end.close()
                code = _serve(zygote_end)
            finally:
                os._exit(code)
        zygote_end.close()
        self.pid = pid
        self._socket = parent_end
        self._lock = threading.Lock()
        self.alive = True

    def spawn(
        self,
        worker_socket: socket.socket,
        slots_fd: int,
        slots_count: int,
        slot: int,
        preload: Sequence[str] = (),
    ) -> ZygoteWorker:
        """Fork a worker that runs ``worker_main`` on the given socket and slot.

        The zygote imports the modules in ``preload`` first (once: later workers
        inherit them), so that the worker need not import them on its first task.
        """
        request = pickle.dumps((slot, slots_count, list(sys.path), os.getcwd(), list(preload)))
        with self._lock:
            try:
                socket.send_fds(self._socket, [request], [worker_socket.fileno(), slots_fd])
                reply, fds, _, _ = socket.recv_fds(self._socket, _MAX_MESSAGE, 1)
            except OSError as exc:
                self.alive = False
                raise OSError(f"the zygote process {self.pid} is gone: {exc}") from exc
        if not reply or not fds:
            self.alive = False
            raise OSError(f"the zygote process {self.pid} could not fork a worker")
        pid = pickle.loads(reply)
        if isinstance(pid, BaseException):
            os.close(fds[0])
            raise pid
        return ZygoteWorker(pid, fds[0])


def _serve(control: socket.socket) -> int:
    """The zygote's loop: fork a worker per request, report each one's exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the parent to handle
    prctl.die_with_parent()
    prctl.set_name("workpool-zygote")  # it outlives calls: ps must not show the program
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    exit_pipes: dict[int, int] = {}  # worker pid -> write end of its exit pipe
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                _reap(exit_pipes)
                continue
            try:
                request, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 2)
            except OSError:
                request = b""
            if not request:  # the parent closed its end or died: so do we
                return 0
            _fork_worker(control, request, fds, exit_pipes, (wake_r, wake_w))


def _fork_worker(
    control: socket.socket,
    request: bytes,
    fds: list[int],
    exit_pipes: dict[int, int],
    wake: tuple[int, int],
) -> None:
    slot, slots_count, sys_path, cwd, preload = pickle.loads(request)
    worker_fd, slots_fd = fds
    for module in preload:
        with contextlib.suppress(Exception):  # the worker will say what fails, if it does
            importlib.import_module(module)
    exit_r, exit_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (exit_r, exit_w, *wake, *exit_pipes.values()):
                os.close(fd)
            control.close()
            code = _run_worker(worker_fd, slots_fd, slots_count, slot, sys_path, cwd)
        finally:
            os._exit(code)
    os.close(worker_fd)
    os.close(slots_fd)
    exit_pipes[pid] = exit_w
    try:
        socket.send_fds(control, [pickle.dumps(pid)], [exit_r])
    finally:
        os.close(exit_r)


def _run_worker(
    worker_fd: int, slots_fd: int, slots_count: int, slot: int, sys_path: list[str], cwd: str
) -> int:
    sys.path[:] = sys_path
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    from workpool.backends.process.slots import SharedSlots
    from workpool.backends.process.worker import worker_main

    sock = socket.socket(fileno=worker_fd)
    worker_main(sock, SharedSlots(slots_count, fd=slots_fd), slot, 0)
    return 0


def _reap(exit_pipes: dict[int, int]) -> None:
    """Collect every ended worker and hand its exit status to the parent."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        exit_w = exit_pipes.pop(pid, None)
        if exit_w is not None:
            with contextlib.suppress(OSError):
                os.write(exit_w, _STATUS.pack(code))
            os.close(exit_w)


_zygote: Zygote | None = None
_zygote_refused = False
_zygote_lock = threading.Lock()


def _single_threaded() -> bool:
    """Does this process run one Python thread only?

    This is the test CPython applies before it warns about fork with threads (3.12+).
    Threads that C libraries start on their own, like OpenBLAS's under NumPy, are not
    counted: they are idle between calls and such libraries make fork safe themselves
    (``pthread_atfork``); refusing the zygote whenever NumPy is imported would make the
    common case the slow one.
    """
    return threading.active_count() == 1


def get_zygote() -> Zygote | None:
    """The zygote, made now if this process is single-threaded; else None.

    Once the program has run threads at the moment of first need, the answer stays
    None: a zygote forked later could inherit a lock some thread held.
    """
    global _zygote, _zygote_refused
    with _zygote_lock:
        if _zygote is not None and _zygote.alive:
            return _zygote
        if _zygote_refused or not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
            return None
        if _zygote is None and _single_threaded():
            _zygote = Zygote()
            return _zygote
        _zygote_refused = True
        return None


def _forget_in_child() -> None:
    """A process forked from the program must not share the program's zygote."""
    global _zygote, _zygote_refused, _zygote_lock
    _zygote = None
    _zygote_refused = False
    _zygote_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def _stop_at_exit() -> None:
    """The zygote ends when its socket closes; at exit, after the pools have stopped."""
    if _zygote is not None:
        with contextlib.suppress(OSError):
            _zygote._socket.close()


exit_hook.afterwards(_stop_at_exit)
