"""The zygote: a fork server, forked from the program (Linux) or exec'd (elsewhere, or late).

Forking a worker straight from a multi-threaded program is unsafe: the child inherits
locks that other threads held at that instant, and can hang on them forever. The
standard library's answer, the fork server, starts a fresh interpreter to fork
workers from; that costs 100-300 ms and makes every worker import the main module.

The zygote gets the safety for a few milliseconds: the first time a pool needs a
worker, if the program runs no other thread at that moment, workpool forks a helper
process (the zygote) that never starts a thread. Every worker is then forked from the
zygote on request, so it starts with the program's modules already imported, in a
process that had one thread when it forked. It lets go of the program's pipes and
stream sockets as it starts (``_drop_program_streams``): it outlives them. If the
program already runs threads when the first pool starts, or the zygote is lost
(killed) after it served, an exec'd one, below, is started instead.

Where ``fork`` without ``exec`` is unsafe (macOS: Apple's system frameworks), and in
portable mode (``_platform.py``), the zygote is instead a fresh interpreter started by
``exec`` (``subprocess``), like the standard library's fork server but without
running the program's main module: it imports the worker's modules, and the modules
the main module imported (``preload.py``), and forks workers from then on. Whatever
a task needs from ``__main__`` itself travels by value. It is safe to start from a
threaded program, so it is always used there. Either way, a script need not guard its
work with ``if __name__ == "__main__":``, as the standard fork server and spawn (the
launcher's fallbacks, ``launch.py``) require.

Protocol, over a Unix stream socket pair (one request, one reply; each message a
length and a pickle, with descriptors beside its first bytes)::

    parent -> zygote   SPAWN slot, the program's place, preload
                                                           + fds [worker socket, slots]
    zygote -> parent   pid                                 + fd  [exit pipe]

The zygote stays until the program ends (as the standard fork server does), so it
says it is ``workpool-zygote``: on Linux as its process name (``prctl.py``; its
workers are ``workpool-worker``), when exec'd on its command line. ``ps`` and ``top``
then show what it is rather than one more copy of the program.

The zygote keeps the write end of one *exit pipe* per worker. When the worker ends,
the zygote reaps it and writes its exit status there, then closes it: the read end,
in the parent, is the worker's sentinel and carries its exit code.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import pickle
import signal
import stat
import struct
import sys
import threading
import time
import warnings
from collections.abc import Sequence

from workpool import _platform
from workpool.backends.process import exit_hook, lifeline, parent_watch, prctl, unix_sockets
from workpool.backends.process.poller import READ, Poller, wait_readable
from workpool.backends.process.preload import (
    program_limits,
    program_place,
    take_limits,
    take_place,
)
from workpool.backends.process.unix_sockets import Socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

__all__ = ["ZygoteWorker", "get_zygote", "start_early"]

_STATUS = struct.Struct("<i")
_LENGTH = struct.Struct("<I")
_MAX_MESSAGE = 1 << 20

#: What the exec'd zygote's command line says it is.
ZYGOTE_TITLE = "workpool-zygote"

# How long after its start the zygote sets the kernel's parent-death signal (``_serve``):
# after the first workers of a pool have been forked, ahead of nearly any pool's end.
_DEATH_SIGNAL_AFTER = 0.05

# How long the parent waits for a zygote whose socket failed to be seen ended (``_lost``):
# one killed has closed its socket as it died, and is collectable a moment later.
_LOST_WAIT = 0.5

# How long an ending zygote waits for its workers still ending (``_end``): they were
# stopped or killed before, so a moment; the parent waits longer for the zygote.
_END_WAIT = 0.5

# The exec'd zygote's first lines, after exec_launch.IGNORE_CTRL_C: find workpool where
# the parent found it, then serve.
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[2]); "
    "from workpool.backends.process.zygote import exec_main; "
    "exec_main(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1')"
)


# The parent's last message when it ends the zygote on purpose (``Zygote.stop``).
_GOODBYE = "goodbye"


def _send(sock: Socket, obj: Any, fds: Sequence[int] = ()) -> None:
    """One message: its length, then its pickle; ``fds`` ride with the first bytes."""
    body = pickle.dumps(obj)
    data = _LENGTH.pack(len(body)) + body
    sent = unix_sockets.send_fds(sock, data, fds) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def _recv(sock: Socket, max_fds: int) -> tuple[Any, list[int]]:
    """One message and its descriptors; ``(None, [])`` when the other end has closed."""
    data, fds = unix_sockets.recv_fds(sock, _MAX_MESSAGE, max_fds)
    while len(data) < _LENGTH.size or len(data) < _LENGTH.size + _LENGTH.unpack_from(data)[0]:
        more = sock.recv(_MAX_MESSAGE)
        if not more:
            for fd in fds:
                os.close(fd)
            return None, []
        data += more
    return pickle.loads(data[_LENGTH.size :]), fds


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
        if not wait_readable(self.sentinel, timeout):
            return
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(self.sentinel, _STATUS.size)
        if len(data) == _STATUS.size:
            self.exitcode = _STATUS.unpack(data)[0]
            return
        # Without a status the zygote itself died, and the worker may still run: nothing
        # would tell of its end any more (without a pidfd), and it would run on past
        # its pool. It is killed, and its task counted as one that crashed.
        lifeline.kill(self.pid, self._pidfd)
        self.exitcode = -signal.SIGKILL

    def close(self) -> None:
        for fd in (self.sentinel, self._pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sentinel, self._pidfd = -1, None


class Zygote:
    """The parent's handle on the zygote process. Thread-safe.

    ``by_exec`` starts it as a fresh interpreter rather than forking this process.
    """

    def __init__(self, *, by_exec: bool) -> None:
        parent_end, zygote_end = unix_sockets.pair()
        self._popen: subprocess.Popen[bytes] | None = None  # the exec'd zygote's (portable)
        try:
            self.pid = self._exec(zygote_end) if by_exec else self._fork(parent_end, zygote_end)
        finally:
            zygote_end.close()
        self._socket = parent_end
        self._lock = threading.Lock()
        self._ending = threading.Lock()  # held for good by whoever reaps it (see _lost)
        self.alive = True
        self.served = False  # it has forked a worker: one that is lost may be replaced

    @staticmethod
    def _fork(parent_end: Socket, zygote_end: Socket) -> int:
        for stream in (sys.stdout, sys.stderr):  # or the zygote's workers print it again
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        with warnings.catch_warnings():
            # Forked only while this is the one Python thread (``_single_threaded``): the
            # threads CPython would warn of here are C code's, which it counts too.
            warnings.filterwarnings("ignore", _FORK_WARNING, DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                parent_end.close()
                _drop_program_streams(keep=zygote_end.fileno())
                code = _serve(zygote_end, -1, parent)
            finally:
                os._exit(code)
        return pid

    def _exec(self, zygote_end: Socket) -> int:
        if not sys.executable:
            raise OSError("cannot exec the zygote: sys.executable is unknown here")
        import subprocess  # only here: the forked zygote (Linux) never needs it

        from workpool.backends.process.exec_launch import (
            IGNORE_CTRL_C,
            interpreter_flags,
            package_root,
            popen_ignoring_ctrl_c,
        )

        watch = parent_watch.read_end()
        passed = [zygote_end.fileno()] + ([watch] if watch >= 0 else [])
        # The kernel's parent-death signal comes when the *thread* that started a process
        # ends, and the zygote outlives the pool that started it: only the main thread
        # lasts as long as the program.
        death_signal = threading.current_thread() is threading.main_thread()
        self._popen = popen_ignoring_ctrl_c(
            [
                sys.executable,
                *interpreter_flags(),
                "-c",
                IGNORE_CTRL_C + _BOOTSTRAP,
                ZYGOTE_TITLE,
                package_root(),
                str(zygote_end.fileno()),
                str(watch),
                "1" if death_signal else "0",
            ],
            pass_fds=passed,
            stdin=subprocess.DEVNULL,
        )
        return self._popen.pid

    def stop(self, timeout: float) -> None:
        """End the zygote (it ends when its socket closes) and wait for it, ``timeout`` at most.

        It ends at once, and is waited for so that the program reaps it: otherwise it
        would outlive the program for a moment, then stay a zombie wherever the
        system's first process does not collect orphans (some containers and VMs).
        """
        if not self._ending.acquire(blocking=False):
            return  # reaped already: its pid may be another process's by now
        # Said first, so that the zygote can tell this end from the parent's death: a
        # dying parent's socket closes before the zygote is handed to a new parent, so
        # its parent's pid cannot tell them apart (``_serve``).
        if self._lock.acquire(timeout=timeout):  # not between another thread's request
            try:
                with contextlib.suppress(OSError):
                    _send(self._socket, _GOODBYE)
            finally:
                self._lock.release()
        with contextlib.suppress(OSError):
            self._socket.close()
        self._reap_within(timeout)

    def _reap_within(self, timeout: float) -> bool:
        """Collect the zygote if it ends within ``timeout`` seconds; whether it did."""
        if self._popen is not None:
            import subprocess  # imported already: the zygote was exec'd

            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        pidfd = lifeline.open_pidfd(self.pid)
        if pidfd is None:
            return lifeline.wait_for(lambda: _reaped(self.pid), timeout) is not None
        try:
            if not wait_readable(pidfd, timeout):
                return False
            _reaped(self.pid)
            return True
        finally:
            os.close(pidfd)

    def _lost(self) -> None:
        """Its socket failed: no pool asks the zygote again.

        One that has ended (killed, say) is collected now: otherwise it would stay a
        zombie for as long as the program runs, which for a service is months. One that
        still runs is left for ``stop`` to end at exit, as its workers may serve pools.
        """
        self.alive = False
        if not self._ending.acquire(blocking=False):
            return  # stopped, or collected, already
        if not self._reap_within(_LOST_WAIT):
            self._ending.release()
            return
        with self._lock, contextlib.suppress(OSError):  # not under another thread's request
            self._socket.close()

    def spawn(
        self,
        worker_socket: Socket,
        slots_fd: int,
        slots_count: int,
        slot: int,
        preload: Sequence[str] = (),
    ) -> ZygoteWorker:
        """Fork a worker that runs ``worker_main`` on the given socket and slot.

        The zygote imports the modules in ``preload`` first (once: later workers
        inherit them), so that the worker need not import them on its first task
        (``preload.py``).
        """
        request = (slot, slots_count, program_place(), list(preload), program_limits())
        lost: OSError | None = None  # dealt with once the lock is released
        with self._lock:
            try:
                _send(self._socket, request, [worker_socket.fileno(), slots_fd])
                pid, fds = _recv(self._socket, 1)
            except OSError as exc:
                lost = exc
        if lost is not None:
            self._lost()
            raise OSError(f"the zygote process {self.pid} is gone: {lost}") from lost
        if pid is None or not fds:
            for fd in fds:
                os.close(fd)
            self._lost()  # it closed its end: ended, as it does when it cannot fork
            raise OSError(f"the zygote process {self.pid} could not fork a worker")
        if isinstance(pid, BaseException):
            os.close(fds[0])
            raise pid
        self.served = True
        return ZygoteWorker(pid, fds[0])


def _drop_program_streams(keep: int) -> None:
    """In the forked zygote: let go of the program's pipes and stream sockets.

    Forked from the program, the zygote holds a copy of every descriptor the program
    had open then, and lives until the program ends. A pipe's reader, or the peer of a
    connection, would wait for an end of file that the program's close no longer
    brings (``cat`` fed through ``Popen(stdin=PIPE)``, a client whose connection the
    program closed), and a listening socket would keep its port. Each is replaced by
    ``/dev/null`` rather than closed: its number stays taken, so an object the
    workers inherit that closes it later closes nothing of theirs. Files, shared
    memory, datagram sockets (syslog) and the standard streams stay, for tasks that
    write or log through the program's handlers, as forked workers do.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the zygote holds them until the program ends
        return
    null = -1
    for fd in fds:
        if fd <= 2 or fd == keep or not _is_stream(fd):
            continue
        if null < 0:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            os.dup2(null, fd, inheritable=os.get_inheritable(fd))
    if null >= 0:
        os.close(null)


def _is_stream(fd: int) -> bool:
    """Is ``fd`` a pipe, or a socket other than a datagram one? (False: closed already.)"""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:  # the listing's own descriptor, closed since
        return False
    if stat.S_ISFIFO(mode):
        return True
    if not stat.S_ISSOCK(mode):
        return False
    try:
        kind = _socket.socket(fileno=fd)
    except OSError:
        return True
    try:
        return kind.type != _socket.SOCK_DGRAM
    finally:
        kind.detach()


def _reaped(pid: int) -> int | None:
    """Collect child ``pid`` if it has ended: its exit code, or None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # collected already
        return 0
    return os.waitstatus_to_exitcode(status) if done else None


def exec_main(control_fd: int, watch_fd: int, death_signal: bool) -> None:
    """Entry point of the exec'd zygote (``_BOOTSTRAP``).

    ``death_signal``: whether it may ask for the kernel's parent-death signal (it was
    started by the program's main thread; see ``Zygote._exec``).
    """
    code = 1
    try:
        # What every worker runs, imported once here rather than in each worker.
        import workpool.backends.process.worker  # noqa: F401

        control = unix_sockets.from_descriptor(control_fd)
        try:
            code = _serve(control, watch_fd, os.getppid(), death_signal=death_signal)
        finally:  # closed, not left to the collector (a ResourceWarning under -X dev)
            control.close()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _serve(control: Socket, watch_fd: int, parent: int, *, death_signal: bool = True) -> int:
    """The zygote's loop: fork a worker per request, report each one's exit.

    ``watch_fd`` is the parent-death pipe's read end (``parent_watch.py``) or -1: the
    zygote ends when it is readable, and its workers inherit it to watch themselves.
    ``parent`` is the pid of the program that started it.

    The zygote also ends when the program closes its end of ``control``, which its
    death does, unless a process the program forked since holds a copy. A program that
    ends the zygote on purpose says goodbye first (``Zygote.stop``); an end of file
    without one means the program is dying, and its workers are killed. (Its pid cannot
    tell: a dying program's descriptors close before its children get a new parent.)
    On Linux the kernel's parent-death signal covers that too, unless ``death_signal``
    is False. Setting it takes ``ctypes``, a few
    milliseconds the first workers should not wait for, so it is set
    ``_DEATH_SIGNAL_AFTER`` seconds after the zygote starts, and the parent checked
    then: a program that died before has no signal to send. That signal is SIGTERM,
    which ends the zygote as it would by default, but through ``_end``: when the
    parent has died, its workers are killed there. Their own watch of the parent is a
    Python thread, which cannot act while a task's C code holds the GIL; the zygote,
    idle, always can.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the parent to handle
    terminated = False

    def on_sigterm(*_: object) -> None:
        nonlocal terminated
        terminated = True

    prctl.set_name(ZYGOTE_TITLE)  # it outlives calls: ps must not show the program
    # When to set the parent-death signal; None once it is set, or where there is none.
    death_signal_at = (
        time.monotonic() + _DEATH_SIGNAL_AFTER if _platform.USE_PDEATHSIG and death_signal else None
    )
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, on_sigterm)  # wakes the wait below through wake_w
    exit_pipes: dict[int, int] = {}  # worker pid -> write end of its exit pipe
    poller = Poller()
    poller.register(control.fileno(), READ, "control")
    poller.register(wake_r, READ, "child")
    if watch_fd >= 0:
        poller.register(watch_fd, READ, "parent")
    while True:
        timeout = None
        if death_signal_at is not None:
            timeout = death_signal_at - time.monotonic()
            if timeout <= 0:
                death_signal_at = None
                if prctl.die_with_parent(signal.SIGTERM) and os.getppid() != parent:
                    return _end(exit_pipes, wake_r, orphaned=True)
                continue
        for source, _ in poller.wait(timeout):
            if source == "parent":  # the pipe's end of file: the parent died
                return _end(exit_pipes, wake_r, orphaned=True)
            if source == "child":
                _reap(exit_pipes, wake_r)
                if terminated:
                    return _end(exit_pipes, wake_r, orphaned=os.getppid() != parent)
                continue
            try:
                request, fds = _recv(control, 2)
            except OSError:
                request = None
            if request == _GOODBYE:  # the parent ends us, its pools done
                return _end(exit_pipes, wake_r, orphaned=False)
            if request is None:  # closed without a goodbye: the parent died, or dies now
                return _end(exit_pipes, wake_r, orphaned=True)
            _fork_worker(control, request, fds, exit_pipes, (wake_r, wake_w), watch_fd)


def _end(exit_pipes: dict[int, int], wake_r: int, *, orphaned: bool) -> int:
    """Collect the workers still ending (``_END_WAIT`` seconds at most), then end too.

    A worker that outlived the zygote would be left to the system's first process to
    collect, and stay a zombie where it collects no orphans; the parent, which waits
    for the zygote at exit, would have ended with a process of its own still there.
    ``orphaned``: the parent died, and every worker still there is killed first.
    """
    if orphaned:
        for pid in exit_pipes:  # not reaped yet, so each pid is still that worker's
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _END_WAIT
    _reap(exit_pipes, wake_r)
    while exit_pipes and (left := deadline - time.monotonic()) > 0:
        wait_readable(wake_r, left)  # SIGCHLD writes to it
        _reap(exit_pipes, wake_r)
    return 0


def _fork_worker(
    control: Socket,
    request: tuple[Any, ...],
    fds: list[int],
    exit_pipes: dict[int, int],
    wake: tuple[int, int],
    watch_fd: int,
) -> None:
    slot, slots_count, place, preload, limits = request
    worker_fd, slots_fd = fds
    take_place(place)  # before the imports, which find modules there and may read it
    _preload(preload)
    exit_r, exit_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (exit_r, exit_w, *wake, *exit_pipes.values()):
                os.close(fd)
            control.close()
            take_limits(limits)  # here: the zygote's own may not be lowered for good
            _reseed_numpy()
            code = _run_worker(worker_fd, slots_fd, slots_count, slot, watch_fd)
        finally:
            os._exit(code)
    os.close(worker_fd)
    os.close(slots_fd)
    exit_pipes[pid] = exit_w
    try:
        _send(control, pid, [exit_r])
    finally:
        os.close(exit_r)


def _reseed_numpy() -> None:
    """Give NumPy's global random state (``np.random.random``) a seed of this worker's own.

    Python reseeds ``random`` in every forked process; NumPy keeps the state it was
    forked with. Every worker forked from the zygote, and every one that replaces
    them, would draw the same numbers as the others once the program (or the zygote's
    imports) had drawn one before the zygote forked: the same "random" samples in
    every task of a simulation. A spawned worker draws its own, and now so does this
    one. A seed the initializer sets comes after, and stays.
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        # 128 bits from the system: a few microseconds, where seed() takes hundreds.
        with contextlib.suppress(Exception):
            numpy_random.seed(struct.unpack("4I", os.urandom(16)))


# Modules the zygote could not import: not tried again for each worker.
_unimportable: set[str] = set()


def _preload(modules: list[str]) -> None:
    """Import ``modules`` here, once (found where the parent finds them: ``take_place``)."""
    wanted = [name for name in modules if name not in sys.modules and name not in _unimportable]
    for name in wanted:
        try:
            __import__(name)
        except BaseException:  # the worker will say what fails, if it needs it
            _unimportable.add(name)


def _run_worker(
    worker_fd: int,
    slots_fd: int,
    slots_count: int,
    slot: int,
    watch_fd: int,
) -> int:
    from workpool.backends.process.slots import SharedSlots
    from workpool.backends.process.worker import worker_main

    sock = unix_sockets.from_descriptor(worker_fd)
    watch = parent_watch.WatchEnd(watch_fd) if watch_fd >= 0 else None
    worker_main(sock, SharedSlots(slots_count, fd=slots_fd), slot, 0, watch)
    return 0


def _reap(exit_pipes: dict[int, int], wake_r: int) -> None:
    """Collect every ended worker and hand its exit status to the parent.

    ``wake_r`` (where SIGCHLD writes) is emptied first: a worker ending after the
    collection writes to it again.
    """
    with contextlib.suppress(BlockingIOError):
        while os.read(wake_r, 512):
            pass
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


# What CPython (3.12+) says when a process with more than one thread forks.
_FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)"

_zygote: Zygote | None = None
_zygote_refused = False
_zygote_lock = threading.Lock()
# Zygotes lost and replaced: one whose socket failed may still run, to be ended at exit.
_replaced: list[Zygote] = []


def _single_threaded() -> bool:
    """Does this process run one Python thread only?

    Threads that C code starts on its own, like OpenBLAS's under NumPy or faulthandler's
    watchdog, are not counted: they are idle between calls and such libraries make fork
    safe themselves (``pthread_atfork``); refusing the zygote whenever NumPy is imported
    would make the common case the slow one. CPython (3.12+, where it can count a
    process's threads) counts them too before it warns about fork with threads, so
    ``Zygote._fork`` silences that warning.
    """
    return threading.active_count() == 1


def get_zygote() -> Zygote | None:
    """The zygote, made now if it can be; else None.

    Forked from the program when it is single-threaded at the first need, where
    forking is safe (Linux); else exec'd, which is safe from a threaded program too,
    and means the same to a task: the main module is not run again in the workers
    (what a task needs from it travels by value). A zygote that is lost (killed, say)
    after it forked a worker is replaced by an exec'd one; one lost before it forked
    any is not, and the answer stays None (the launcher then uses the fork server or
    spawn).
    """
    global _zygote, _zygote_refused
    with _zygote_lock:
        if _zygote is not None and _zygote.alive:
            return _zygote
        if _zygote_refused or not hasattr(os, "fork"):
            return None
        lost = _zygote
        if lost is not None:
            if not lost.served:  # it never worked here: another would fare no better
                _zygote_refused = True
                return None
            _replaced.append(lost)
        by_fork = _platform.FORK_ZYGOTE and lost is None and _single_threaded()
        try:
            _zygote = Zygote(by_exec=not by_fork)
        except OSError:
            _zygote = None
            _zygote_refused = True
            return None
        return _zygote


def start_early() -> None:
    """Where the zygote is exec'd, start it now, before the engine's modules are imported.

    A fresh interpreter takes tens of milliseconds to be ready to fork; the parent's
    imports then run meanwhile instead of before. A zygote forked from the program is
    left for ``get_zygote``: it must fork after the function is pickled, so that it
    inherits what pickling imported (``engine.py``).
    """
    if not _platform.FORK_ZYGOTE:
        get_zygote()


def _forget_in_child() -> None:
    """A process forked from the program must not share the program's zygote."""
    global _zygote, _zygote_refused, _zygote_lock
    _zygote = None
    _zygote_refused = False
    _zygote_lock = threading.Lock()
    _replaced.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _stop_at_exit() -> None:
    """At exit, after the pools have stopped, the zygotes are ended and reaped."""
    for zygote in [*_replaced, *([_zygote] if _zygote is not None else [])]:
        zygote.stop(timeout=1.0)


exit_hook.afterwards(_stop_at_exit)
