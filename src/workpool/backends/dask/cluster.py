"""Where the cluster is: an address, a ``distributed.Client``, the program's own, or one
started here for the call.

``address=None`` looks, in this order, for the program's current Dask client, then for
Dask's configured ``scheduler-address`` (the ``DASK_SCHEDULER_ADDRESS`` environment
variable), and otherwise starts a cluster of worker processes on this machine,
listening on 127.0.0.1 only and without a dashboard, which is closed with the call or
pool. Only what workpool started is closed by workpool. While such a cluster runs here,
Dask's log messages below errors stay unprinted (``_QuietLogs``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from types import ModuleType
from typing import Any

from workpool._cpus import usable_cpus
from workpool.backends.dask import worker_setup

__all__ = [
    "CLOSE_SECONDS",
    "CONNECT_SECONDS",
    "MISSING_EXTRA",
    "ClusterLink",
    "connect",
    "require_distributed",
]

MISSING_EXTRA = "backend='dask' needs Dask, which is not installed: pip install 'workpool[dask]'"
# How long a scheduler has to answer before an address is called unreachable.
CONNECT_SECONDS = 5.0
# How long closing a client or a local cluster may take before it is given up on.
CLOSE_SECONDS = 10.0


def require_distributed() -> ModuleType:
    """``distributed``, imported now; an ImportError naming the extra if it is missing."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc
    return distributed


def is_client(obj: object) -> bool:
    """Is ``obj`` a ``distributed.Client``? (Answered without importing Dask.)"""
    return any(
        cls.__name__ == "Client" and cls.__module__.startswith("distributed")
        for cls in type(obj).__mro__
    )


class ClusterLink:
    """A client of the cluster a backend runs on, and what workpool started to get it."""

    def __init__(self, client: Any, *, cluster: Any = None, owned: bool, where: str) -> None:
        self.client = client
        self.cluster = cluster  # a LocalCluster workpool started, or None
        self.owned = owned  # workpool made the client, and closes it
        self.where = where  # the cluster, in words, for error messages
        self._lock = threading.Lock()
        self._closing = False
        # Not Thread.join: on 3.11 and 3.12, a join interrupted by Ctrl+C takes the
        # thread for ended, and every later join returns at once.
        self._closed = threading.Event()

    def close(self, *, wait: bool = True) -> None:
        """Close what workpool started (the client it made, the cluster it started).

        The closing runs in a thread of its own, waited for ``CLOSE_SECONDS`` at most:
        a client or cluster whose close wedges (seen at exit, after a Ctrl+C) cannot
        hang the program, whose end takes a local cluster's processes along anyway. A
        Ctrl+C that lands meanwhile lands in this wait, not inside Dask's own (where
        Dask logged an error of its own, and the close stopped half done): the close
        goes on, and calling ``close`` again waits for that same close.

        Not ``wait``: the scheduler is lost, and there is nothing to wait for. A
        client closed while it tries to reconnect may still wait for that attempt to
        give up (seen on Python 3.10: seconds); it ends in its thread meanwhile.
        """
        if not self.owned and self.cluster is None:
            return  # the client and its cluster are the program's: nothing of ours to close
        with self._lock:
            start, self._closing = not self._closing, True
        if start:
            threading.Thread(
                target=self._close_now, name="workpool-dask-link-closer", daemon=True
            ).start()
        if wait:
            self._closed.wait(CLOSE_SECONDS)

    def stop_workers(self) -> bool:
        """Kill the worker processes of the local cluster workpool started; whether it did.

        For a call abandoned with tasks still running (a Ctrl+C): closed politely, each
        worker waits for its running tasks, up to its nanny's grace of seconds, before
        it is killed. Each nanny is told first not to start a new worker in place of the
        one it loses. False when there is no such cluster, or it is not made the way
        this knows (the nanny's worker process is Dask's internals).
        """
        if self.cluster is None:
            return False
        stopped = False
        for nanny in list(getattr(self.cluster, "workers", {}).values()):
            process = getattr(getattr(nanny, "process", None), "process", None)
            pid = getattr(process, "pid", None)
            close_gracefully = getattr(nanny, "close_gracefully", None)
            if not isinstance(pid, int) or close_gracefully is None:
                return False
            close_gracefully(reason="workpool: the call was abandoned")  # no restart
            with contextlib.suppress(OSError):  # gone already
                os.kill(pid, signal.SIGKILL)
            stopped = True
        return stopped

    def _close_now(self) -> None:
        try:
            if self.owned:
                _drop_timeouts_left_at_close(self.client)
                with contextlib.suppress(Exception):  # the cluster is closed all the same
                    self.client.close(timeout=CLOSE_SECONDS)
            if self.cluster is not None:
                try:
                    self.cluster.close(timeout=CLOSE_SECONDS)
                except Exception:  # its processes end with this one all the same
                    pass
                finally:
                    _quiet_logs.release()
        finally:
            self._closed.set()


def _drop_timeouts_left_at_close(client: Any) -> None:
    """Keep a closing client's event loop from printing the timeout Dask leaves behind.

    The scheduler ends its stream on the client's ``close-stream``, so the client's
    batched sender is never closed: it may still wait, with a deadline of milliseconds,
    when the loop stops. If the deadline passes in the loop's last turn, its (tornado)
    timeout future is never read, and when collected asyncio prints "Future exception
    was never retrieved ... TimeoutError('Timeout')" on stderr, at the program's exit.
    The loop is workpool's (it runs a client workpool made), so that one message is
    dropped on it; anything else still reaches asyncio's default handler.
    """
    import asyncio

    try:
        loop = client.loop.asyncio_loop
    except (AttributeError, RuntimeError):  # its loop has stopped already
        return

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        left_timeout = isinstance(context.get("exception"), asyncio.TimeoutError)
        if not (left_timeout and context.get("message") == _NEVER_RETRIEVED):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


_NEVER_RETRIEVED = "Future exception was never retrieved"  # asyncio's words, since 3.4


class _QuietLogs:
    """Dask's log handlers held at ERROR while any cluster workpool started runs here.

    ``LocalCluster(silence_logs=...)`` lowers them itself, but restores them when the
    cluster that lowered them closes, while a second cluster, which found them lowered
    and so left them alone, still runs: that one's scheduler then logs every message
    to stderr. Here the first cluster to start lowers them and the last to close
    restores them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._restore: list[tuple[logging.Handler, int]] = []

    def hold(self) -> None:
        with self._lock:
            self._holders += 1
            if self._holders > 1:
                return
            for handler in logging.getLogger("distributed").handlers:
                if isinstance(handler, logging.StreamHandler) and handler.level < logging.ERROR:
                    self._restore.append((handler, handler.level))
                    handler.setLevel(logging.ERROR)

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders:
                return
            for handler, level in self._restore:
                handler.setLevel(level)
            self._restore.clear()


_quiet_logs = _QuietLogs()


def connect(address: Any, workers: int) -> ClusterLink:
    """Connect to the cluster ``address`` names (see the module docstring for None).

    ``workers`` is the size of a cluster started here (0: one worker per usable CPU).
    Raises ``TypeError`` for an address of the wrong type, and ``ConnectionError``
    naming the address when no scheduler answers there within ``CONNECT_SECONDS``.
    """
    distributed = require_distributed()
    if address is None:
        try:
            client = distributed.Client.current(allow_global=True)
        except ValueError:
            client = None
        if client is not None:
            _check_not_on_its_loop(client, "the current Dask client")
            return ClusterLink(client, owned=False, where=f"the current Dask client {client}")
        import dask

        configured = dask.config.get("scheduler-address", None)
        if not configured:
            return _start_local_cluster(distributed, workers or usable_cpus())
        return _connect_to(distributed, str(configured), "Dask's configured scheduler-address ")
    if isinstance(address, str):
        return _connect_to(distributed, address, "")
    if is_client(address):
        if address.status not in ("running", "connecting", "newly-created"):
            raise ValueError(f"address is a Dask client that is {address.status}: {address!r}")
        _check_not_on_its_loop(address, "address is a Dask client that")
        return ClusterLink(address, owned=False, where=f"the Dask client {address!r}")
    raise TypeError(
        "address must be a scheduler address (str), a distributed.Client or None; "
        f"got {address!r} ({type(address).__name__})"
    )


def _check_not_on_its_loop(client: Any, what: str) -> None:
    """Refuse an asynchronous client whose event loop is the one this thread runs.

    Every wait of a pool (for the cluster's size, a scatter, its results) is a wait for
    the client's loop: from that loop's own thread it would block the loop for ever.
    From another thread (``loop.run_in_executor``) the same client serves a pool well.
    """
    if client.asynchronous:
        raise ValueError(
            f"{what} is asynchronous and runs on this thread's event loop, which a pool "
            "would block waiting for it: use the pool from another thread (such as "
            "loop.run_in_executor), or give the scheduler's address instead"
        )


def _connect_to(distributed: ModuleType, address: str, origin: str) -> ClusterLink:
    _check_a_scheduler_answers(distributed, address, origin)
    try:
        client = distributed.Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"no Dask scheduler answered at {origin}{address!r} within "
            f"{CONNECT_SECONDS:g} s ({type(exc).__name__}: {exc})"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise _not_an_address(address, origin, exc) from exc
    return ClusterLink(client, owned=True, where=f"the Dask scheduler at {address}")


def _not_an_address(address: str, origin: str, why: object) -> ValueError:
    hint = ""
    if os.path.isfile(address):  # such as the --scheduler-file of ``dask scheduler``
        hint = (
            "; it names a file: a scheduler file's address is its 'address' field, "
            "json.load(open(path))['address']"
        )
    return ValueError(
        f"{origin}{address!r} is not a Dask scheduler address "
        f"(such as 'tcp://10.0.0.5:8786'): {why}{hint}"
    )


def _check_a_scheduler_answers(distributed: ModuleType, address: str, origin: str) -> None:
    """Ask ``address`` who it is, before a ``distributed.Client`` is made for it.

    A Client pointed at a port where something listens but no scheduler speaks waits
    forever for its greeting (Dask's handshake has no deadline), or fails inside its
    constructor in odd ways (another protocol's bytes read as a frame length: a
    MemoryError); and a Client whose constructor failed leaves its event-loop thread
    running, which then delays the program's exit by seconds. One question with a
    deadline, in a thread of its own (the caller may be running an event loop, as a
    notebook does), tells a scheduler from the rest first.
    """
    import asyncio

    security = distributed.Security().get_connection_args("client")

    async def ask() -> Any:
        comm = await distributed.comm.connect(address, timeout=CONNECT_SECONDS, **security)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(asyncio.wait_for(ask(), CONNECT_SECONDS)))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    asker = threading.Thread(target=run, name="workpool-dask-address-check", daemon=True)
    asker.start()
    asker.join(CONNECT_SECONDS + 1)
    answer = outcome[0] if outcome else TimeoutError("the question was never answered")
    if isinstance(answer, (ValueError, TypeError)):  # the address itself is malformed
        raise _not_an_address(address, origin, answer) from answer
    if isinstance(answer, (OSError, TimeoutError, asyncio.TimeoutError)):
        why = _why_unreachable(distributed, address)
        detail = f" ({type(answer).__name__}: {answer}{why})" if str(answer) else why
        raise ConnectionError(
            f"no Dask scheduler answered at {origin}{address!r} within "
            f"{CONNECT_SECONDS:g} s{detail}"
        ) from answer
    if isinstance(answer, BaseException):
        raise ConnectionError(
            f"something answered at {origin}{address!r}, but not as a Dask scheduler "
            f"does ({type(answer).__name__}: {answer})"
        ) from answer
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind != "Scheduler":
        raise _not_an_address(address, origin, f"it is a Dask {kind or 'peer'}, not a scheduler")


def _why_unreachable(distributed: ModuleType, address: str) -> str:
    """What one plain TCP connection to ``address`` says (refused, no such host), if
    it fails; empty if it succeeds or the address is not TCP.

    Dask's own error after its deadline says only that it timed out: it tries again
    until then, and its last try may itself have been cut short by the deadline.
    """
    try:
        scheme, location = distributed.comm.parse_address(address)
        if scheme != "tcp":
            return ""
        host, port = distributed.comm.parse_host_port(location)
        import socket  # only here, on the way to an error

        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        return f"; a plain connection to it: {type(exc).__name__}: {exc}"
    except Exception:
        return ""
    return ""


def loopback_cluster_options() -> dict[str, Any]:
    """How workpool makes a local cluster, as ``LocalCluster`` keyword arguments.

    Single-threaded worker processes on loopback, no dashboard; the scheduler's small
    HTTP server (health, metrics) takes any free loopback port rather than 8787, which
    another cluster may hold. Tests and benchmarks build their clusters from it too. A
    new dict each time: it holds a nested one that a caller might change.
    """
    return {
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
    }


def _start_local_cluster(distributed: ModuleType, workers: int) -> ClusterLink:
    """A cluster of ``workers`` single-threaded worker processes, reachable from here only.

    Started in a thread of its own, which the caller waits for. A Ctrl+C during the
    start (it takes a second) then lands in that wait, not inside Dask's own: Dask cannot
    stop a cluster half-started, and its exit hook then failed to close the one left
    behind, printing its logs and an AssertionError. The start is waited for instead,
    and the cluster killed and closed, before the ``KeyboardInterrupt`` goes on.
    """
    made: list[ClusterLink | BaseException] = []
    started = threading.Event()  # not Thread.join (see ClusterLink.__init__)

    def start() -> None:
        try:
            made.append(_make_local_cluster(distributed, workers))
        except BaseException as exc:  # handed to the caller below
            made.append(exc)
        finally:
            started.set()

    threading.Thread(target=start, name="workpool-dask-cluster-starter", daemon=True).start()
    try:
        started.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):  # another Ctrl+C: leave it to exit
            started.wait(CLOSE_SECONDS)
            if made and isinstance(made[0], ClusterLink):
                made[0].stop_workers()
                made[0].close()
        raise
    outcome = made[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _make_local_cluster(distributed: ModuleType, workers: int) -> ClusterLink:
    import dask

    # Ours, then theirs: the workers leave Ctrl+C to the caller (``worker_setup.py``) as
    # soon as Dask lets them, before the program's own preloads take their time.
    preload = [worker_setup.__name__, *dask.config.get("distributed.worker.preload", [])]
    _quiet_logs.hold()
    try:
        cluster = distributed.LocalCluster(
            n_workers=workers,
            silence_logs=logging.ERROR,
            preload=preload,
            **loopback_cluster_options(),
        )
    except BaseException:
        _quiet_logs.release()
        raise
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        ClusterLink(None, cluster=cluster, owned=False, where="").close()
        raise
    return ClusterLink(
        client,
        cluster=cluster,
        owned=True,
        where=f"a local Dask cluster of {workers} workers at {cluster.scheduler_address}",
    )
