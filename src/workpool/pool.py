"""``Pool``: a reusable pool of workers that is a ``concurrent.futures.Executor``."""

from __future__ import annotations

import concurrent.futures
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from workpool._options import (
    BACKENDS,
    RunOptions,
    check_function,
    check_trace_backend,
    make_pool_spec,
    make_run_options,
)
from workpool.backends import Backend, create_backend
from workpool.errors import add_note
from workpool.inputs import prepare_inputs
from workpool.run import MapRun
from workpool.sharing import DEFAULT_SHARE_THRESHOLD, SharingContext
from workpool.tasks import CallMode, Chunk, ResultBatch

__all__ = ["Pool"]

T = TypeVar("T")
_UNSET: Any = object()


class _FutureSink:
    """Receives the result of one submitted task and settles its Future."""

    __slots__ = ("backend", "claimed", "future", "retries")

    def __init__(self, future: concurrent.futures.Future[Any], backend: Backend, retries: int):
        self.future = future
        self.backend = backend
        self.retries = retries
        self.claimed = False

    def claim(self, chunk: Chunk) -> bool:
        if self.claimed:  # a retry: the Future is already running
            return True
        self.claimed = True
        return self.future.set_running_or_notify_cancel()

    def deliver(self, batch: ResultBatch) -> None:
        chunk = batch.chunk
        try:
            if not batch.errors:
                self.future.set_result(batch.values[0])
                return
            error = batch.errors[0]
            if isinstance(error, concurrent.futures.CancelledError) and not self.claimed:
                self.future.cancel()
                return
            if batch.retryable and chunk.attempt < self.retries:
                again = chunk.split(0, 1)
                again.attempt += 1
                try:
                    self.backend.submit(again)
                    return
                except Exception:
                    pass  # the pool is stopping or broken: this failure stands
            if batch.worker:
                note = f"workpool: raised by a submitted task in {batch.worker}"
                if self.retries:
                    note += f" (attempt {chunk.attempt + 1} of {self.retries + 1})"
                add_note(error, note)
            self.future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: nobody wants the outcome


class Pool(concurrent.futures.Executor):
    """A pool of workers (processes by default) that runs functions over inputs.

    Use it as a context manager, or call ``shutdown()``. It is an ``Executor``:
    ``submit``, ``map`` and ``shutdown`` behave as in ``concurrent.futures``, and
    ``loop.run_in_executor(pool, ...)`` works. ``imap`` and ``starmap`` add lazy
    input, unordered results, retries, timeouts and progress.

    ``task_timeout``, ``retries`` and ``share_threshold`` given here are the defaults
    for every call. ``address`` (``backend="dask"`` only) says where the cluster is.
    """

    def __init__(
        self,
        workers: int | None = None,
        backend: str = "process",
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_worker: int | None = None,
        start_method: str | None = None,
        address: Any = None,
        task_timeout: float | None = None,
        retries: int = 0,
        share_threshold: int | None = DEFAULT_SHARE_THRESHOLD,
    ) -> None:
        if backend == "auto":
            raise ValueError(
                "backend='auto' chooses an engine per function and is offered by "
                "workpool.map/imap/starmap; a Pool needs a named backend: "
                + ", ".join(repr(name) for name in BACKENDS if name != "auto")
            )
        self._spec = make_pool_spec(
            backend=backend,
            workers=workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_worker,
            start_method=start_method,
            address=address,
        )
        self._defaults = make_run_options(
            task_timeout=task_timeout, retries=retries, share_threshold=share_threshold
        )
        self._shut_down = False
        self._backend = create_backend(self._spec)
        # A pool dropped without shutdown() still lets its workers go.
        self._finalizer = weakref.finalize(
            self, self._backend.shutdown, wait=False, cancel_pending=False
        )

    @property
    def backend(self) -> str:
        """The engine's name: 'serial', 'thread', 'process', 'interpreter' or 'dask'."""
        return self._backend.name

    @property
    def workers(self) -> int:
        return self._backend.workers

    def __repr__(self) -> str:
        state = "shut down" if self._shut_down else "open"
        return f"<workpool.Pool backend={self.backend!r} workers={self.workers} {state}>"

    def _check_open(self) -> None:
        if self._shut_down:
            raise RuntimeError("cannot schedule new work after shutdown")

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker; return its Future at once."""
        check_function(fn)
        self._check_open()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        sink = _FutureSink(future, self._backend, self._defaults.retries)
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

    def _options(self, options: dict[str, Any]) -> RunOptions:
        options.setdefault("task_timeout", self._defaults.task_timeout)
        options.setdefault("retries", self._defaults.retries)
        options.setdefault("share_threshold", self._defaults.share_threshold)
        checked = make_run_options(**options)
        check_trace_backend(checked.trace, self._backend.name)
        return checked

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = _UNSET,
        retries: int = _UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = _UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> Iterator[T]:
        """``Executor.map``: every input is submitted now; results come as you iterate.

        ``timeout`` is the deadline for the whole call, counted from now. A failure is
        raised when iteration reaches it; the tasks after it are cancelled.
        """
        check_function(fn)
        options = self._options(
            _given(
                chunksize=chunksize,
                ordered=ordered,
                task_timeout=task_timeout,
                retries=retries,
                return_exceptions=return_exceptions,
                progress=progress,
                timeout=timeout,
                share_threshold=share_threshold,
                checkpoint=checkpoint,
                trace=trace,
            )
        )
        self._check_open()
        inputs, mode, total = prepare_inputs(iterables, star=False)
        run = MapRun(self._backend, fn, mode, inputs, total, options, eager=True)
        run.submit_all()
        return run.results()

    def imap(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = _UNSET,
        retries: int = _UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = _UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> Iterator[T]:
        """Lazily map ``fn`` over the inputs; the pool must stay open while you iterate.

        The input is read as workers free up, so an endless generator works in
        constant memory. Closing the iterator early drops the tasks not yet started.
        """
        check_function(fn)
        options = self._options(
            _given(
                chunksize=chunksize,
                ordered=ordered,
                task_timeout=task_timeout,
                retries=retries,
                return_exceptions=return_exceptions,
                progress=progress,
                share_threshold=share_threshold,
                checkpoint=checkpoint,
                trace=trace,
            )
        )
        self._check_open()
        inputs, mode, total = prepare_inputs(iterables, star=False)
        return MapRun(self._backend, fn, mode, inputs, total, options).results()

    def starmap(
        self,
        fn: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        task_timeout: float | None = _UNSET,
        retries: int = _UNSET,
        return_exceptions: bool = False,
        progress: bool = False,
        share_threshold: int | None = _UNSET,
        checkpoint: str | os.PathLike[str] | None = None,
        trace: str | os.PathLike[str] | None = None,
    ) -> list[T]:
        """``fn(*args)`` for every tuple of arguments; returns the list of results."""
        check_function(fn)
        options = self._options(
            _given(
                chunksize=chunksize,
                ordered=ordered,
                task_timeout=task_timeout,
                retries=retries,
                return_exceptions=return_exceptions,
                progress=progress,
                share_threshold=share_threshold,
                checkpoint=checkpoint,
                trace=trace,
            )
        )
        self._check_open()
        inputs, mode, total = prepare_inputs((iterable,), star=True)
        run = MapRun(self._backend, fn, mode, inputs, total, options, raise_in_order=False)
        return run.collect()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """Leave a ``with`` block: wait for the work, as ``Executor`` does, except on Ctrl+C.

        After ``KeyboardInterrupt`` nobody waits for results, so the pool is terminated
        instead of finishing tasks that may take a long time.
        """
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.terminate()
        else:
            self.shutdown(wait=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; finish what was submitted (unless ``cancel_futures``).

        ``wait=True`` returns once every worker has stopped.
        """
        self._shut_down = True
        self._finalizer.detach()
        self._backend.shutdown(wait=wait, cancel_pending=cancel_futures)

    def terminate(self) -> None:
        """Stop at once: pending work is cancelled and process workers are killed."""
        self._shut_down = True
        self._finalizer.detach()
        self._backend.terminate()


def _given(**options: Any) -> dict[str, Any]:
    """The options the caller actually passed (unset ones fall back to pool defaults)."""
    return {name: value for name, value in options.items() if value is not _UNSET}
