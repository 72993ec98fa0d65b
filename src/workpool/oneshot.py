"""``workpool.map``, ``imap`` and ``starmap``: a pool for one call, gone when it returns."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from workpool._options import PoolSpec, RunOptions, check_function, make_pool_spec, make_run_options
from workpool.backends import create_backend
from workpool.pool import prepare_inputs
from workpool.run import MapRun

__all__ = ["imap", "map", "starmap"]

T = TypeVar("T")


class _OneShotCall:
    """Everything one call needs, validated before any worker starts."""

    def __init__(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        *,
        star: bool,
        pool_options: dict[str, Any],
        run_options: dict[str, Any],
    ) -> None:
        check_function(fn)
        self.fn = fn
        self.spec: PoolSpec = make_pool_spec(**pool_options)
        self.options: RunOptions = make_run_options(**run_options)
        self.inputs, self.mode, self.total = prepare_inputs(iterables, star=star)

    def results(self, *, raise_in_order: bool) -> Iterator[Any]:
        """Start the pool, yield the results, and leave no worker behind."""
        spec = self.spec
        if spec.backend == "auto":
            spec = _resolve_auto(spec)
        backend = create_backend(spec)
        finished = False
        try:
            run = MapRun(
                backend,
                self.fn,
                self.mode,
                self.inputs,
                self.total,
                self.options,
                raise_in_order=raise_in_order,
            )
            yield from run.results()
            finished = True
        finally:
            if finished:
                backend.shutdown(wait=True, cancel_pending=False)
            else:  # a failure, or the consumer stopped early: stop what still runs
                backend.terminate()


def _resolve_auto(spec: PoolSpec) -> PoolSpec:
    """``backend="auto"``: until measurement picks the engine, processes."""
    from dataclasses import replace

    from workpool._options import default_workers

    workers = spec.workers if spec.workers else default_workers("process")
    return replace(spec, backend="process", workers=workers)


def _split_options(
    backend: str,
    workers: int | None,
    chunksize: int | None,
    ordered: bool,
    task_timeout: float | None,
    retries: int,
    return_exceptions: bool,
    progress: bool,
    initializer: Callable[..., object] | None,
    initargs: Iterable[Any],
    max_tasks_per_worker: int | None,
    start_method: str | None,
) -> dict[str, dict[str, Any]]:
    return {
        "pool_options": {
            "backend": backend,
            "workers": workers,
            "initializer": initializer,
            "initargs": initargs,
            "max_tasks_per_worker": max_tasks_per_worker,
            "start_method": start_method,
        },
        "run_options": {
            "chunksize": chunksize,
            "ordered": ordered,
            "task_timeout": task_timeout,
            "retries": retries,
            "return_exceptions": return_exceptions,
            "progress": progress,
        },
    }


def map(  # noqa: A001 - the public name mirrors the builtin on purpose
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
) -> list[T]:
    """``fn`` over the inputs in parallel; the list of results, in input order.

    Several iterables are zipped, as in the builtin ``map``. A pool is started for the
    call and is gone when it returns. The first failure cancels what is pending and is
    raised, unless ``return_exceptions=True`` puts exceptions in place of results.
    """
    call = _OneShotCall(
        fn,
        iterables,
        star=False,
        **_split_options(
            backend,
            workers,
            chunksize,
            ordered,
            task_timeout,
            retries,
            return_exceptions,
            progress,
            initializer,
            initargs,
            max_tasks_per_worker,
            start_method,
        ),
    )
    return builtins.list(call.results(raise_in_order=False))


def imap(
    fn: Callable[..., T],
    *iterables: Iterable[Any],
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
) -> Iterator[T]:
    """A lazy ``map``: inputs are read as workers free up, results yielded as ready.

    Arguments are checked now; the pool starts at the first ``next()``. An endless
    input works in constant memory. Stopping early (``break``, ``close()``) stops the
    pool and everything still running in it.
    """
    call = _OneShotCall(
        fn,
        iterables,
        star=False,
        **_split_options(
            backend,
            workers,
            chunksize,
            ordered,
            task_timeout,
            retries,
            return_exceptions,
            progress,
            initializer,
            initargs,
            max_tasks_per_worker,
            start_method,
        ),
    )
    return call.results(raise_in_order=True)


def starmap(
    fn: Callable[..., T],
    iterable: Iterable[Iterable[Any]],
    *,
    backend: str = "auto",
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    task_timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
    progress: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    max_tasks_per_worker: int | None = None,
    start_method: str | None = None,
) -> list[T]:
    """``fn(*args)`` for every tuple of arguments, in parallel; the list of results."""
    call = _OneShotCall(
        fn,
        (iterable,),
        star=True,
        **_split_options(
            backend,
            workers,
            chunksize,
            ordered,
            task_timeout,
            retries,
            return_exceptions,
            progress,
            initializer,
            initargs,
            max_tasks_per_worker,
            start_method,
        ),
    )
    return builtins.list(call.results(raise_in_order=False))
