"""Every user option is checked here, once, and frozen into a spec before any work starts.

Each check raises at once with a message that says what was given and what is
accepted, so a bad argument never reaches a worker thread or process.
"""

from __future__ import annotations

import multiprocessing
import numbers
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from workpool._cpus import usable_cpus
from workpool.sharing import DEFAULT_SHARE_THRESHOLD

__all__ = [
    "BACKENDS",
    "PoolSpec",
    "RunOptions",
    "check_function",
    "check_trace_backend",
    "default_workers",
    "make_pool_spec",
    "make_run_options",
]


def _has_subinterpreters() -> bool:
    """Whether ``concurrent.interpreters`` (Python 3.14+) exists here, without importing it."""
    from importlib.util import find_spec

    return find_spec("concurrent.interpreters") is not None


# Engines a caller may name. "auto" measures and then picks one of the others (never
# "dask": a cluster is for the caller to choose).
BACKENDS: tuple[str, ...] = (
    ("auto", "serial", "thread", "process")
    + (("interpreter",) if _has_subinterpreters() else ())
    + ("dask",)
)

DASK_EXTRA = "pip install 'workpool[dask]'"

START_METHODS: tuple[str, ...] = ("fork", "forkserver", "spawn")


class RunOptions(NamedTuple):
    """How one map/imap/starmap call runs: validated, immutable."""

    chunksize: int | None = None
    ordered: bool = True
    task_timeout: float | None = None
    retries: int = 0
    return_exceptions: bool = False
    progress: bool = False
    timeout: float | None = None  # overall deadline of Pool.map (Executor semantics)
    share_threshold: int | None = DEFAULT_SHARE_THRESHOLD  # bytes: NumPy arrays go by shared memory
    checkpoint: str | None = None  # the journal file of finished results (checkpoint=)
    trace: str | None = None  # where to write the call's timeline (trace=)


class PoolSpec(NamedTuple):
    """What a pool is made of: validated, immutable."""

    backend: str
    workers: int
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    start_method: str | None = None
    # Dask only: a scheduler address, a distributed.Client, or None (see backends/dask).
    # With Dask, ``workers`` is 0 when the caller gave none: the cluster decides.
    address: Any = None


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _positive_int(name: str, value: object, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    number = _as_int(value)
    accepted = "a positive integer" + (" or None" if allow_none else "")
    if number is None:
        raise TypeError(f"{name} must be {accepted}; got {_describe(value)}")
    if number < 1:
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return number


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {_describe(value)}")
    return value


def _seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None; got {_describe(value)}")
    seconds = float(value)
    if not seconds > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number of seconds or None; got {value!r}")
    return seconds


def check_function(fn: object) -> None:
    """Raise ``TypeError`` unless ``fn`` can be called."""
    if not callable(fn):
        raise TypeError(f"the function to run must be callable; got {_describe(fn)}")


def check_backend(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        choices = ", ".join(repr(b) for b in BACKENDS)
        hint = ""
        if backend == "interpreter":
            version = sys.version.split()[0]
            if sys.version_info < (3, 14):
                raise ValueError(
                    "backend='interpreter' needs Python 3.14 or newer (concurrent.interpreters); "
                    f"this is Python {version}"
                )
            raise ValueError(
                "backend='interpreter' needs concurrent.interpreters, which this build of "
                f"Python {version} lacks"
            )
        raise ValueError(f"backend must be one of {choices}; got {backend!r}{hint}")
    if backend == "dask" and not _dask_installed():
        raise ImportError(f"backend='dask' needs Dask, which is not installed: {DASK_EXTRA}")
    return backend


def _dask_installed() -> bool:
    """Can ``distributed`` be imported? (Asked without importing it.)"""
    from importlib.util import find_spec

    try:
        return find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def check_trace_backend(trace: str | None, backend: str) -> None:
    """Refuse ``trace`` on Dask: its workers' times do not come back to the caller yet."""
    if trace is not None and backend == "dask":
        raise ValueError(
            "trace applies to the serial, thread, process and interpreter backends; got "
            f"trace={trace!r} with backend='dask'"
        )


def check_address(address: object, backend: str) -> Any:
    """A scheduler address string, a ``distributed.Client`` or None, for Dask only."""
    if address is None:
        return None
    if backend != "dask":
        raise ValueError(
            f"address applies to backend='dask' only; got address={address!r} with "
            f"backend={backend!r}"
        )
    if isinstance(address, str):
        if not address.strip():
            raise ValueError(
                "address must name a Dask scheduler (such as 'tcp://10.0.0.5:8786'); got ''"
            )
        return address.strip()
    is_client = any(
        cls.__name__ == "Client" and cls.__module__.startswith("distributed")
        for cls in type(address).__mro__
    )
    if not is_client:
        raise TypeError(
            "address must be a Dask scheduler address (such as 'tcp://10.0.0.5:8786'), a "
            f"distributed.Client, or None; got {_describe(address)}"
        )
    return address


def default_workers(backend: str) -> int:
    """Workers used when the caller names none: CPUs for processes, more for threads."""
    if backend == "dask":
        return 0  # the cluster's size decides (see backends/dask)
    cpus = usable_cpus()
    if backend == "thread":
        return min(32, cpus + 4)
    return cpus


def check_start_method(method: object, backend: str) -> str | None:
    if method is None:
        return None
    if backend not in ("process", "auto"):
        raise ValueError(
            f"start_method applies to backend='process' only; got start_method={method!r} "
            f"with backend={backend!r}"
        )
    available = multiprocessing.get_all_start_methods()
    if method not in START_METHODS or method not in available:
        choices = ", ".join(repr(m) for m in START_METHODS if m in available)
        raise ValueError(
            f"start_method must be None or one of {choices} on this platform; got {method!r}"
        )
    return str(method)


def make_pool_spec(
    *,
    backend: object,
    workers: object,
    initializer: object,
    initargs: object,
    max_tasks_per_worker: object,
    start_method: object,
    address: object = None,
) -> PoolSpec:
    """Validate the options that shape a pool."""
    name = check_backend(backend)
    count = _positive_int("workers", workers, allow_none=True)
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable or None; got {_describe(initializer)}")
    if isinstance(initargs, (str, bytes)) or not isinstance(initargs, Iterable):
        raise TypeError(f"initargs must be a tuple of arguments; got {_describe(initargs)}")
    return PoolSpec(
        backend=name,
        workers=count if count is not None else default_workers(name),
        initializer=initializer,
        initargs=tuple(initargs),
        max_tasks_per_worker=_positive_int(
            "max_tasks_per_worker", max_tasks_per_worker, allow_none=True
        ),
        start_method=check_start_method(start_method, name),
        address=check_address(address, name),
    )


def make_run_options(
    *,
    chunksize: object = None,
    ordered: object = True,
    task_timeout: object = None,
    retries: object = 0,
    return_exceptions: object = False,
    progress: object = False,
    timeout: object = None,
    share_threshold: object = DEFAULT_SHARE_THRESHOLD,
    checkpoint: object = None,
    trace: object = None,
) -> RunOptions:
    """Validate the options of one map/imap/starmap call."""
    retry_count = _as_int(retries)
    if retry_count is None:
        raise TypeError(f"retries must be an integer >= 0; got {_describe(retries)}")
    if retry_count < 0:
        raise ValueError(f"retries must be an integer >= 0; got {retries!r}")
    return RunOptions(
        chunksize=_positive_int("chunksize", chunksize, allow_none=True),
        ordered=_flag("ordered", ordered),
        task_timeout=_seconds("task_timeout", task_timeout),
        retries=retry_count,
        return_exceptions=_flag("return_exceptions", return_exceptions),
        progress=_flag("progress", progress),
        timeout=_seconds("timeout", timeout),
        share_threshold=_byte_count("share_threshold", share_threshold),
        checkpoint=_file_path("checkpoint", checkpoint),
        trace=_file_path("trace", trace),
    )


def _file_path(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a file path (str or os.PathLike) or None; got {_describe(value)}"
        )
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a text path, not bytes; got {value!r}")
    if not path:
        raise ValueError(f"{name} must be a file path or None; got an empty string")
    return path


def _byte_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    count = _as_int(value)
    if count is None:
        raise TypeError(
            f"{name} must be a number of bytes (an integer >= 0) or None; got {_describe(value)}"
        )
    if count < 0:
        raise ValueError(
            f"{name} must be a number of bytes (an integer >= 0) or None; got {value!r}"
        )
    return count
