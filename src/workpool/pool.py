"""``Pool``: a reusable pool of workers that is a ``concurrent.futures.Executor``."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator

from workpool._options import (
    POOL_BACKEND,
    UNSET,
    RunOptions,
    check_function,
    pool_spec,
    refuses_unknown_options,
    run_options,
)
from workpool.backends import at_exit, create_backend
from workpool.backends.base import ShutDown
from workpool.errors import note_origin
from workpool.inputs import prepare_inputs
from workpool.run import MapRun, RetryPolicy
from workpool.sharing import DEFAULT_SHARE_THRESHOLD, SharingContext
from workpool.tasks import CallMode, Chunk, ResultBatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["Pool"]


class _FutureSink:
    """Receives the result of one submitted task and settles its Future."""

    __slots__ = ("__weakref__", "claimed", "future", "retries")  # weakly: FunctionRegistry

    def __init__(self, future: concurrent.futures.Future[Any], retries: RetryPolicy) -> None:
        self.future = future
        self.retries = retries
        self.claimed = False

    def claim(self, chunk: Chunk) -> bool:
        if self.claimed:  # a retry: the Future is already running
            return True
        self.claimed = True
        try:
            return self.future.set_running_or_notify_cancel()
        except RuntimeError:
            # The caller set it running or gave it a result itself (only an executor
            # should): the task is not ours to run, and costs no other its worker.
            return False

    def deliver(self, batch: ResultBatch) -> None:
        try:
            if not batch.errors:
                self.future.set_result(batch.values[0])
                return
            error = batch.errors[0]
            if isinstance(error, concurrent.futures.CancelledError) and not self.claimed:
                # Cancelled, and told so: wait() and as_completed() count a Future as
                # done only once notified (the standard pools forget to: CPython gh-87893).
                # cancel() runs the done-callbacks, and passes on a SystemExit one
                # raises: the Future is cancelled by then, and is told so all the same.
                try:
                    self.future.cancel()
                finally:
                    if self.future.cancelled():
                        self.future.set_running_or_notify_cancel()
                return
            if self.retries.resubmit(batch):
                return
            if batch.worker:
                note_origin(
                    error,
                    f"a submitted task in {batch.worker}"
                    + self.retries.describe(batch.chunk.attempt),
                )
            self.future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: nobody wants the outcome


# How many forks away this process is from the one that first imported this module. A
# Pool made in another generation was made by an ancestor: its threads did not come
# along with the fork, and its workers (or its Dask client) are the ancestor's.
_generation = 0


def _count_fork() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
    os.register_at_fork(after_in_child=_count_fork)


def _release_unless_inherited(backend: Any, generation: int) -> None:
    """What a Pool dropped without ``shutdown()`` does: let its workers go, once idle."""
    if generation == _generation:
        backend.shutdown(wait=False, cancel_pending=False)


class Pool(concurrent.futures.Executor):
    """A pool of workers (processes by default) that runs functions over inputs.

    Use it as a context manager, or call ``shutdown()``. It is an ``Executor``:
    ``submit``, ``map`` and ``shutdown`` behave as in ``concurrent.futures``, and
    ``loop.run_in_executor(pool, ...)`` works. ``imap`` and ``starmap`` add lazy
    input, unordered results, retries, timeouts and progress.

    ``task_timeout``, ``retries`` and ``share_threshold`` given here are the defaults
    for every call. ``address`` (``backend="dask"`` only) says where the cluster is.
    ``max_workers``, the name ``concurrent.futures`` gives it, is ``workers`` too.
    """

    @refuses_unknown_options("Pool()")
    def __init__(
        self,
        workers: int | None = None,
        backend: str = POOL_BACKEND,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_worker: int | None = None,
        start_method: str | None = None,
        address: object = None,
        task_timeout: float | None = None,
        retries: int = 0,
        share_threshold: int | None = DEFAULT_SHARE_THRESHOLD,
        max_workers: int | None = None,
    ) -> None:
        given = locals()
        self._spec = pool_spec(given, named_backend=True)
        self._defaults = run_options(given, backend=self._spec.backend)
        self._shut_down = False
        # Its workers and threads belong to this process: a child forked from it holds
        # copies that do not run, and must neither wait for them nor stop them.
        self._generation = _generation
        self._made_in = os.getpid()
        self._backend = create_backend(self._spec)
        self._retries = RetryPolicy(self._defaults.retries, self._backend.submit)  # for submit()
        self._unread_runs: weakref.WeakSet[MapRun] = weakref.WeakSet()  # see map()
        self._unread_runs_lock = threading.Lock()  # another thread's map adds as we look
        # A pool dropped without shutdown() still lets its workers go, once its work is
        # done; one still open at exit is shut down then (backends/at_exit.py).
        self._finalizer = weakref.finalize(
            self, _release_unless_inherited, self._backend, self._generation
        )
        self._finalizer.atexit = False
        at_exit.finish_if_open_at_exit(self)

    @property
    def backend(self) -> str:
        """The engine's name: 'serial', 'thread', 'process', 'interpreter' or 'dask'."""
        return self._backend.name

    @property
    def workers(self) -> int:
        """How many tasks the pool runs at once: its workers; on Dask, the cluster's threads."""
        return self._backend.workers

    @property
    def _max_workers(self) -> int:
        # Where ThreadPoolExecutor and ProcessPoolExecutor keep their size, and where
        # code written for them reads it: Dask's local schedulers, given this pool as
        # `dask.config.set(pool=...)`, do.
        return self._backend.workers

    def __repr__(self) -> str:
        state = "shut down" if self._shut_down else "open"
        return f"<workpool.Pool backend={self.backend!r} workers={self.workers} {state}>"

    def _check_open(self) -> None:
        if self._forked_copy():
            raise RuntimeError(
                f"this pool was made in process {self._made_in}, and this process "
                f"({os.getpid()}) is a fork of it: a pool's workers serve the process "
                "that made it; make a new Pool here"
            )
        if self._shut_down:
            raise ShutDown()

    def _forked_copy(self) -> bool:
        """Whether this is a forked child's copy of a parent's pool: nothing to stop here."""
        return self._generation != _generation

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; return its Future at once."""
        check_function(fn)
        self._check_open()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        sink = _FutureSink(future, self._retries)
        # The task's own shared copies of its big arrays (a pool-wide context kept every
        # array it was ever given): they go with the task, at the latest when it settles.
        sharing = SharingContext(self._defaults.share_threshold)
        self._backend.submit(
            Chunk(
                sink=sink,
                fn=fn,
                mode=CallMode.CALL,
                start=-1,
                items=[(args, kwargs)],
                task_timeout=self._defaults.task_timeout,
                sharing=sharing,
            )
        )
        if sharing.holds_copies:  # made while pickling the arguments, just now
            future.add_done_callback(lambda _: sharing.release())
        return future

    def _options(self, given: dict[str, Any]) -> RunOptions:
        """The options of one call; those left ``UNSET`` are the pool's."""
        return run_options(given, backend=self._spec.backend, defaults=self._defaults)

    @refuses_unknown_options("Pool.map()")
    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = UNSET,
        retries: int = UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> Iterator[T]:
        """``Executor.map``: the work starts now; results come as you iterate.

        Every input is read and submitted now, unless ``buffersize`` is given (as in
        Python 3.14's ``Executor.map``, on every Python here): then at most that many
        inputs are read and submitted ahead of the results you have taken, so an endless
        input works. ``timeout`` is the deadline for the whole call, counted from now (0 or
        less: already past, so only results already done are yielded). A failure is
        raised when iteration reaches it; the tasks after it are cancelled.
        Results dropped unread are computed all the same, as with any ``Executor``;
        with ``checkpoint`` or ``trace``, a thread of the call's own then takes them
        (journaling them, writing the trace) and lets the files go when the last is in:
        ``shutdown()`` waits for it, and so does the program's exit.
        """
        check_function(fn)
        options = self._options(locals())
        self._check_open()
        # Executor.map zips its iterables: with none at all, there is nothing to run.
        inputs, mode, total = prepare_inputs(iterables or ((),), star=False)
        run = MapRun(
            self._backend,
            fn,
            mode,
            inputs,
            total,
            options,
            eager=options.buffersize is None,
            owner=self,
        )
        run.start()
        with self._unread_runs_lock:  # shutdown() waits for one dropped unread (MapRun._dropped)
            self._unread_runs.add(run)
        return run.results()

    @refuses_unknown_options("Pool.imap()")
    def imap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = UNSET,
        retries: int = UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> Iterator[T]:
        """Lazily map ``fn`` over the inputs; the pool must stay open while you iterate.

        The input is read as workers free up, so an endless generator works in
        constant memory. Closing the iterator early drops the tasks not yet started.
        """
        check_function(fn)
        options = self._options(locals())
        self._check_open()
        inputs, mode, total = prepare_inputs(iterables, star=False)
        return MapRun(self._backend, fn, mode, inputs, total, options, owner=self).results()

    @refuses_unknown_options("Pool.starmap()")
    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = UNSET,
        retries: int = UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> list[T]:
        """``fn(*args)`` for every tuple of arguments; returns the list of results."""
        check_function(fn)
        options = self._options(locals())
        self._check_open()
        inputs, mode, total = prepare_inputs((iterable,), star=True)
        run = MapRun(self._backend, fn, mode, inputs, total, options, raise_in_order=False)
        return run.collect()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """Leave a ``with`` block: wait for the work, as ``Executor`` does, except on Ctrl+C.

        After ``KeyboardInterrupt`` nobody waits for results, so the pool is terminated
        instead of finishing tasks that may take a long time (tasks running on threads,
        which cannot be stopped, finish in the background).
        """
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._end_now(abandon=True)
        else:
            self.shutdown(wait=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; finish what was submitted (unless ``cancel_futures``).

        ``wait=True`` returns once every worker has stopped. A Ctrl+C that interrupts
        the wait abandons the work, as leaving a ``with`` block by Ctrl+C does.
        """
        self._shut_down = True
        self._finalizer.detach()
        if self._forked_copy():
            return  # the pool is its parent's to end
        try:
            self._backend.shutdown(wait=wait, cancel_pending=cancel_futures)
            if wait:
                with self._unread_runs_lock:
                    runs = list(self._unread_runs)
                for run in runs:
                    run.join_unread()
        except KeyboardInterrupt:
            # Nobody waits for the rest any more; left to go on, it would start queued
            # tasks until the program's exit ended it (which the exit cannot do for
            # tasks in subinterpreters: it waits for them).
            self._end_now(abandon=True)
            raise

    def _shut_down_at_exit(self) -> None:
        """The program exits with this pool open: it finishes its work, as an Executor does."""
        if not self._shut_down:
            self.shutdown(wait=False)

    def terminate(self) -> None:
        """Stop at once: pending work is cancelled and process workers are killed."""
        self._end_now(abandon=False)

    def _end_now(self, *, abandon: bool) -> None:
        self._shut_down = True
        self._finalizer.detach()
        if self._forked_copy():
            return
        if abandon:
            self._backend.abandon()
        else:
            self._backend.terminate()
