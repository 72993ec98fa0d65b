"""How worker processes come into being: from the zygote, or through multiprocessing.

The supervisor asks a launcher for a worker and gets back something process-like:
``pid``, a ``sentinel`` that becomes readable when the process ends, ``kill()``,
``join(timeout)``, ``exitcode`` and ``close()``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import socket
import sys
import weakref
from typing import Any, Protocol

from workpool.backends.process.slots import SharedSlots
from workpool.backends.process.worker import worker_main
from workpool.backends.process.zygote import Zygote, get_zygote

__all__ = ["Launcher", "WorkerProcess", "default_start_method", "make_launcher"]


class WorkerProcess(Protocol):
    pid: Any
    sentinel: int

    @property
    def exitcode(self) -> int | None: ...

    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


class Launcher(Protocol):
    #: How workers start, in words for error messages and reports.
    method: str

    def start(self, sock: socket.socket, slots: SharedSlots, slot: int) -> WorkerProcess: ...


class MultiprocessingLauncher:
    """Workers as ``multiprocessing.Process`` of one start method (fork, forkserver, spawn)."""

    def __init__(self, method: str) -> None:
        from workpool.backends.process.supervisor import run_exit_hook_before_multiprocessing

        run_exit_hook_before_multiprocessing()
        self.method = method
        self._context = multiprocessing.get_context(method)
        if method == "fork":
            # Workers fork from the supervisor thread while the caller's thread may be
            # pickling a lambda, and so importing cloudpickle: a child forked then would
            # inherit that module's import lock, held forever. Import it first.
            import cloudpickle  # noqa: F401
        if method == "forkserver":
            # Import the main module and the worker once in the server, not per worker.
            # This takes effect only if the fork server is not running yet.
            with contextlib.suppress(Exception):
                self._context.set_forkserver_preload(
                    ["__main__", "workpool.backends.process.worker", "cloudpickle"]
                )
        # The pid a worker should see as its parent; a fork server's is unknown here.
        self._parent_pid = 0 if method == "forkserver" else os.getpid()

    def start(self, sock: socket.socket, slots: SharedSlots, slot: int) -> WorkerProcess:
        process = self._context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(sock, slots, slot, self._parent_pid),
            name=f"workpool-worker-{slot}",
            daemon=False,
        )
        process.start()
        if self.method != "forkserver" and hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # no pidfd here: the sentinel it is
                return _ChildWatchedByPidfd(process, os.pidfd_open(process.pid))
        return process  # type: ignore[no-any-return]


class _ChildWatchedByPidfd:
    """A worker that is this process's own child (fork, spawn), watched through a pidfd.

    ``multiprocessing``'s sentinel is a pipe whose other end only the child should
    hold. A process forked by another thread while the worker was starting (another
    pool starting its own workers, a ``Manager``) holds a copy of that end too, and
    then the sentinel stays silent when the worker ends, for as long as that other
    process lives. A pidfd becomes readable when the process ends, whoever holds
    what. The exit code comes from ``waitpid``, which is the parent's alone.
    """

    def __init__(self, process: Any, pidfd: int) -> None:
        self._process = process
        self.pid: int = process.pid
        self.sentinel = pidfd
        self._close_pidfd = weakref.finalize(self, _close_quietly, pidfd)

    @property
    def exitcode(self) -> int | None:
        code: int | None = self._process.exitcode  # reaps the child once it has ended
        return code

    def kill(self) -> None:
        self._process.kill()

    def join(self, timeout: float | None = None) -> None:
        if self.sentinel >= 0 and self._process.exitcode is None:
            with selectors.DefaultSelector() as selector:
                selector.register(self.sentinel, selectors.EVENT_READ)
                selector.select(timeout)

    def close(self) -> None:
        try:
            self._process.close()  # raises ValueError while the child runs, as Process does
        finally:
            self._close_pidfd()
            self.sentinel = -1


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class ZygoteLauncher:
    """Workers forked by the zygote; if the zygote is lost, the fork server takes over.

    ``expect_by_value`` says the pool will likely send functions that only cloudpickle
    can rebuild: the zygote then imports it once, in parallel with the program,
    rather than every worker on its first task.
    """

    method = "zygote"

    def __init__(self, zygote: Zygote, expect_by_value: bool) -> None:
        self._zygote = zygote
        self._expect_by_value = expect_by_value
        self._fallback: MultiprocessingLauncher | None = None

    def start(self, sock: socket.socket, slots: SharedSlots, slot: int) -> WorkerProcess:
        if self._fallback is None:
            by_value = self._expect_by_value or "cloudpickle" in sys.modules
            try:
                return self._zygote.spawn(
                    sock, slots.fd, slots.count, slot, ["cloudpickle"] if by_value else ()
                )
            except OSError:
                self._fallback = MultiprocessingLauncher(_safe_method())
        return self._fallback.start(sock, slots, slot)


def _safe_method() -> str:
    """The standard library's start method that is safe with threads in the parent."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_start_method() -> str:
    """What the default start method means here and now: 'zygote' or a safe fallback."""
    return "zygote" if get_zygote() is not None else _safe_method()


def make_launcher(start_method: str | None, *, expect_by_value: bool) -> Launcher:
    """The launcher for ``start_method``; None picks the zygote when it can be had."""
    if start_method is None:
        zygote = get_zygote()
        if zygote is not None:
            return ZygoteLauncher(zygote, expect_by_value)
        start_method = _safe_method()
    return MultiprocessingLauncher(start_method)
