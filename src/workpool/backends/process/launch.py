"""How worker processes come into being: from the zygote, through multiprocessing, or by exec.

The supervisor asks a launcher for a worker and gets back a ``WorkerProcess``
(``handle.py``): its ``pid``; ``ended_fd``, which becomes readable when the process ends
(a pidfd where the system has one, see ``lifeline.py``); ``kill()``, ``join(timeout)``,
``exitcode`` and ``close()``.

Which launcher: the zygote (``zygote.py``: forked from the program if it ran one
thread when the first pool started, else exec'd). Without one (it could not start, or
was lost before it forked a worker): in a daemonic process (a Dask worker, a
``multiprocessing`` daemon), which ``multiprocessing`` refuses to give children, or
when the main module cannot be run again (a script read from standard input), exec
(``exec_launch.py``); else the standard library's fork server or spawn.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref

from workpool.backends.process import ctrl_c, exit_hook, lifeline, parent_watch
from workpool.backends.process.poller import wait_readable
from workpool.backends.process.preload import main_imports, program_place, take_place
from workpool.backends.process.slots import SharedSlots
from workpool.backends.process.unix_sockets import Socket
from workpool.backends.process.worker import worker_main
from workpool.backends.process.zygote import Zygote, get_zygote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from workpool.backends.process.handle import WorkerProcess

__all__ = ["ChildProcess", "default_start_method", "make_launcher"]

#: How long ``ChildProcess.close`` waits for a child whose sentinel closed to be
#: reapable: it closes as the child exits, so this is a bound, not an estimate.
_REAP_SECONDS = 1.0

# exec_launch.py's method; that module (and subprocess) loads only when a pool uses it.
EXEC_METHOD = "exec"


if TYPE_CHECKING:

    class Launcher(Protocol):
        #: How workers start, in words for error messages and reports.
        method: str

        def start(self, sock: Socket, slots: SharedSlots, slot: int) -> WorkerProcess: ...


# The workers this process started through multiprocessing (see _disown_in_child).
_started: weakref.WeakSet[Any] = weakref.WeakSet()
# Whether a pool of this process asked for the standard fork server (ditto).
_used_fork_server = False


def _disown_in_child() -> None:
    """In a process forked from this one (by the program, not by us), forget what is ours.

    multiprocessing keeps the processes it started in a module-level set, which a fork
    copies. The child would take the parent's workers for its own: its exit hook would
    join each of them, which only their parent may, and print a traceback every time
    a forked child exits (a web server's worker, say).

    It keeps its fork server in a module-level object too, and before each start checks
    that the server lives with waitpid, which only the server's parent may call: in the
    child every worker would fail to start (ChildProcessError, as the standard pools'
    do). Forgotten, the parent's server is left to the parent, and the child starts a
    server of its own when it needs one.
    """
    global _used_fork_server
    if _started:
        from multiprocessing import process

        process._children.difference_update(_started)  # type: ignore[attr-defined]
        _started.clear()
    if _used_fork_server:
        _used_fork_server = False
        from multiprocessing import forkserver

        _forget_fork_server(getattr(forkserver, "_forkserver", None))


def _forget_fork_server(server: Any) -> None:
    """Make multiprocessing's fork server ``server`` start afresh, leaving the old one alone."""
    if getattr(server, "_forkserver_pid", None) is None:
        return
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)  # our copy: the parent keeps its own
    server._forkserver_alive_fd = None
    server._forkserver_pid = None
    server._forkserver_address = None  # the parent's socket: the parent removes it
    if hasattr(server, "_forkserver_authkey"):  # newer Pythons have one
        server._forkserver_authkey = None
    server._lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_in_child)


class MultiprocessingLauncher:
    """Workers as ``multiprocessing.Process`` of one start method (fork, forkserver, spawn)."""

    def __init__(self, method: str) -> None:
        import multiprocessing  # only here and in _safe_method: the zygote needs none of it

        exit_hook.run_before_multiprocessing()
        self.method = method
        self._context = multiprocessing.get_context(method)
        if method == "fork":
            _refuse_to_fork_beside_subinterpreters()
            # Workers fork from the supervisor thread while the caller's thread may be
            # pickling a lambda, and so importing cloudpickle: a child forked then would
            # inherit that module's import lock, held forever. Import it first.
            import cloudpickle  # noqa: F401
        if method == "forkserver":
            global _used_fork_server
            _used_fork_server = True
            _refuse_an_unbindable_fork_server()
            # Import the main module and the worker once in the server, not per worker.
            # This takes effect only if the fork server is not running yet.
            with contextlib.suppress(Exception):
                self._context.set_forkserver_preload(
                    ["__main__", "workpool.backends.process.worker", "cloudpickle"]
                )
        # The pid a worker should see as its parent; a fork server's is unknown here.
        self._parent_pid = 0 if method == "forkserver" else os.getpid()
        watch = parent_watch.read_end()
        self._watch = parent_watch.WatchEnd(watch) if watch >= 0 else None

    def start(self, sock: Socket, slots: SharedSlots, slot: int) -> WorkerProcess:
        import socket  # multiprocessing has it imported: its pickler sends only these

        if self.method == "fork":  # an interpreter pool may have started since
            _refuse_to_fork_beside_subinterpreters()
        given = socket.socket(fileno=os.dup(sock.fileno()))
        target: Any = worker_main
        arguments: tuple[Any, ...] = (given, slots, slot, self._parent_pid, self._watch)
        try:
            if self.method == "forkserver":  # forked from a server: told where the program is
                target, arguments = _worker_in_place, (program_place(), *arguments)
            process = self._context.Process(  # type: ignore[attr-defined]
                target=target, args=arguments, name=f"workpool-worker-{slot}", daemon=False
            )
            if self.method != "fork":
                # Starting it unblocks SIGINT before Python 3.14 (instead of restoring
                # the mask it found), and spawn and the fork server start it first.
                from multiprocessing import resource_tracker

                resource_tracker.ensure_running()
            with ctrl_c.blocked_while_starting():  # the worker ignores it once it runs
                process.start()
        finally:
            given.close()  # the worker has its own by now
        _started.add(process)
        return ChildProcess(process, ours=self.method != "forkserver")


def _worker_in_place(place: Any, *arguments: Any) -> None:
    """``worker_main``, where the program was when the worker was asked for."""
    take_place(place)
    worker_main(*arguments)


class ChildProcess:
    """A worker started by multiprocessing, watched through a pidfd where there is one.

    ``ours`` says the worker is this process's child (fork, spawn), so that waitpid
    knows when it ends; its multiprocessing sentinel is then a pipe the worker holds,
    which any process forked from it (or from us at the wrong instant) holds too. A
    fork server's worker is the server's child, and its sentinel the server's socket.
    """

    def __init__(self, process: Any, *, ours: bool) -> None:
        self._process = process
        self._ours = ours
        self.pid: int = process.pid
        self._pidfd = lifeline.open_pidfd(self.pid)
        self.ended_fd: int = process.sentinel if self._pidfd is None else self._pidfd
        self.needs_polling = self._pidfd is None and ours

    @property
    def exitcode(self) -> int | None:
        code: int | None = self._process.exitcode  # our child: waitpid(WNOHANG)
        return code

    def kill(self) -> None:
        if self.exitcode is None:
            lifeline.kill(self.pid, self._pidfd)

    def join(self, timeout: float | None = None) -> None:
        if self._pidfd is not None:
            if not wait_readable(self._pidfd, timeout) or self._ours:
                return  # still running; or ended, and waitpid tells how
        elif self._ours:  # the pipe may be held open elsewhere: ask waitpid instead
            lifeline.wait_for(lambda: self.exitcode, timeout)
            return
        self._process.join(timeout)  # the fork server sends the exit code

    def close(self) -> None:
        """Let go of the process; reap our child if its exit is under way.

        Without a pidfd the sentinel is the multiprocessing pipe, which closes as the
        child exits, a moment before waitpid can report it: the supervisor may get here
        in that moment (a worker that ended as asked is not waited for). Reaped now, it
        is not left a zombie until multiprocessing next looks at its children.
        """
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
        elif self._ours and self.exitcode is None and wait_readable(self.ended_fd, 0):
            lifeline.wait_for(lambda: self.exitcode, _REAP_SECONDS)
        self._process.close()  # ValueError while it still runs


class ZygoteLauncher:
    """Workers forked by the zygote; if it is lost, by its replacement, else the fork server.

    With each request the zygote is told what to import first, once, so that workers
    do not each import it on their first task: the modules the program's main imported
    (``preload.py``: an exec'd zygote has none of them), and cloudpickle once this
    program has needed it.
    """

    method = "zygote"

    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote
        self._fallback: Launcher | None = None

    def start(self, sock: Socket, slots: SharedSlots, slot: int) -> WorkerProcess:
        while self._fallback is None:
            modules = main_imports()
            if "cloudpickle" in sys.modules:  # functions travel by value: workers need it
                modules.append("cloudpickle")
            try:
                return self._zygote.spawn(sock, slots.fd, slots.count, slot, modules)
            except OSError:
                # Lost: ask for its replacement (``get_zygote`` makes one only for a
                # zygote that had served, so this ends).
                replacement = get_zygote()
                if replacement is None or replacement is self._zygote:
                    self._fallback = make_launcher(_safe_method())
                else:
                    self._zygote = replacement
        return self._fallback.start(sock, slots, slot)


def _safe_method() -> str:
    """The start method that is safe with threads in the parent, and allowed here."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return EXEC_METHOD  # multiprocessing gives a daemon no children
    if not _main_runs_again():
        return EXEC_METHOD
    if "forkserver" in multiprocessing.get_all_start_methods() and _fork_server_socket() is None:
        return "forkserver"
    return "spawn"


# The longest path a Unix socket may have, its terminating NUL aside: ``sun_path`` holds
# 108 bytes on Linux, 104 on macOS and the BSDs.
_SOCKET_PATH_MAX = (108 if sys.platform.startswith("linux") else 104) - 1
# What multiprocessing appends to its temporary directory for the fork server's socket.
_LISTENER_NAME = "/listener-XXXXXXXX"


def _fork_server_socket() -> str | None:
    """Where a new fork server's socket would be, if that path is too long to bind; else None.

    The standard fork server listens on a socket in multiprocessing's temporary
    directory, under ``TMPDIR``; before Python 3.14, when that path is too long,
    starting it fails. (This makes that directory, as the fork server would.)
    """
    from multiprocessing import util

    try:
        path = util.get_temp_dir() + _LISTENER_NAME
    except OSError:
        return None  # the fork server will say what is wrong
    return path if len(os.fsencode(path)) > _SOCKET_PATH_MAX else None


def _refuse_an_unbindable_fork_server() -> None:
    """Raise OSError, saying what to change, where the fork server cannot start."""
    path = _fork_server_socket()
    if path is not None:
        raise OSError(
            f"start_method='forkserver' cannot start here: its socket would be {path} "
            f"({len(os.fsencode(path))} bytes), longer than a Unix socket's path may be "
            f"({_SOCKET_PATH_MAX} bytes). Set TMPDIR to a shorter directory, or choose "
            "another start method (or none: the default works here)"
        )


def _refuse_to_fork_beside_subinterpreters() -> None:
    """Raise RuntimeError, saying why and what to do, while this process runs subinterpreters.

    A child forked then dies of SIGSEGV inside CPython (3.14, with or without the GIL)
    before it runs a line of its own. They run while an interpreter pool is open, and
    after its call while a task that timed out there runs on (none can be stopped).
    """
    interpreters = sys.modules.get("_interpreters")  # none ran if it was never imported
    if interpreters is None:
        return
    main = interpreters.get_main()[0]
    others = [entry[0] for entry in interpreters.list_all() if entry[0] != main]
    if others:
        raise RuntimeError(
            f"start_method='fork' cannot start a worker while this process runs "
            f"subinterpreters ({len(others)} now: a backend='interpreter' pool still open, "
            "or a task of one that timed out and runs on): a child forked now would crash "
            "inside CPython. Use the default start method, 'forkserver' or 'spawn', or "
            "start the pool once the interpreter pool is shut down and its tasks ended"
        )


def _main_runs_again() -> bool:
    """Whether the fork server and spawn can run the main module again, as they must.

    Not when it names a file that is not there: ``python - < script.py`` names
    ``<stdin>``, and every worker would fail to start.
    """
    from multiprocessing import process

    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True  # run with -m: found again by its name
    path = getattr(main, "__file__", None)
    if path is None:
        return True  # python -c, a notebook: there is nothing to run again
    started_in = getattr(process, "ORIGINAL_DIR", None)  # as multiprocessing reads it
    if not os.path.isabs(path) and started_in is not None:
        path = os.path.join(started_in, path)
    return os.path.isfile(path)


def default_start_method() -> str:
    """What the default start method means here and now: 'zygote' or a safe fallback."""
    return "zygote" if get_zygote() is not None else _safe_method()


def make_launcher(start_method: str | None) -> Launcher:
    """The launcher for ``start_method``; None picks the zygote when it can be had.

    ``"exec"`` is not a user's choice (``start_method`` takes the standard library's
    three) but the engine's, for processes where the others cannot work.
    """
    if start_method is None:
        zygote = get_zygote()
        if zygote is not None:
            return ZygoteLauncher(zygote)
        start_method = _safe_method()
    if start_method == EXEC_METHOD:
        from workpool.backends.process.exec_launch import ExecLauncher

        return ExecLauncher()
    return MultiprocessingLauncher(start_method)
