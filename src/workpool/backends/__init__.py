"""The engines behind ``backend=...``: a module or package each, one interface (``base.Backend``).

The thread and interpreter engines share one worker-thread design (``threaded.py``).
Nothing is imported here until an engine is asked for: a worker process imports its
engine's worker-side modules through this package, and need not pay for the options
and the parent's side.
"""

from __future__ import annotations

from collections.abc import Callable

from workpool import _platform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from workpool._options import PoolSpec
    from workpool.backends.base import Backend as Backend
    from workpool.timeline.recorder import Recorder

__all__ = ["Backend", "create_backend"]


def create_backend(
    spec: PoolSpec, fn: Callable[..., Any] | None = None, recorder: Recorder | None = None
) -> Backend:
    """Start the engine ``spec.backend`` names (``"auto"`` must be resolved before).

    ``fn`` is the function the engine will run, when that is known in advance;
    ``recorder`` the timeline of the one call the pool is for, when it is traced.
    """
    if spec.backend == "serial":
        from workpool.backends.serial import SerialBackend

        return SerialBackend(spec, recorder=recorder)
    if spec.backend == "thread":
        from workpool.backends.thread import ThreadBackend

        return ThreadBackend(spec, recorder=recorder)
    if spec.backend == "process":
        if not _platform.PROCESSES:
            from workpool._options import BACKENDS

            raise ValueError(
                _platform.no_processes_reason(
                    name for name in BACKENDS if name not in ("auto", "process")
                )
            )
        if spec.start_method is None:
            from workpool.backends.process.zygote import start_early

            start_early()  # where it is exec'd, it comes up while the engine is imported
        from workpool.backends.process import ProcessBackend

        return ProcessBackend(spec, fn, recorder=recorder)
    if spec.backend == "interpreter":
        from workpool.backends.interpreter import InterpreterBackend

        return InterpreterBackend(spec, recorder=recorder)
    if spec.backend == "dask":
        from workpool.backends.dask import DaskBackend

        return DaskBackend(spec, fn)
    raise ValueError(f"no engine named {spec.backend!r}")


def __getattr__(name: str) -> Any:
    if name == "Backend":
        from workpool.backends.base import Backend

        return Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
