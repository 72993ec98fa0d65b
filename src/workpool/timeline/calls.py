"""What a traced call records about its results, and how its trace is closed.

The run (``run.py``) and the one-shot call (``oneshot.py``) import this only when the
call has ``trace=``. ``record_batch`` turns each batch a worker sends back into its
chunk span (with the worker's receive/run/return times) and the call's retries into
instant events; ``close_trace`` writes the file once the call is over, saying whether
and how it ended early.

Every input position lands in exactly one chunk span whose outcome is "ok" or
"error": the one whose batch delivered its result or its final exception. A position
that raised and is tried again is listed in that span's ``retried`` (its attempt
decides nothing); positions whose own task crashed or timed out are in the engine's
"crashed"/"timeout" span only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workpool.clock import now_ns
from workpool.errors import TaskTimeout, add_note
from workpool.tasks import ResultBatch
from workpool.timeline import Recorder, finish, rewrite

if TYPE_CHECKING:
    from workpool.backends.base import Backend

__all__ = [
    "close_trace",
    "open_trace",
    "record_batch",
    "record_inline",
    "record_retry",
    "why_ended",
]


def open_trace(
    path: str, fn: Callable[..., Any], *, pool: Backend | None = None, **facts: Any
) -> Recorder:
    """A recorder for one call of ``fn``; raises at once if ``path`` cannot be written.

    ``pool`` is the engine of a ``Pool`` the call runs on, started before it: the
    trace says so with an instant event at the call's start (how long before the
    call the pool began to start and its last worker was ready), and shows the
    start of every worker that is still starting or replaces another during the call.
    """
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    recorder = Recorder(path, function=name, **facts)
    recorder.rewrite_while_running(functools.partial(rewrite, recorder))
    if pool is not None:
        began = recorder.begun_ns
        ready = pool.last_worker_ready_ns
        recorder.instant(
            recorder.caller_track("pool"),
            "pool started before the call",
            "startup",
            began,
            {
                "backend": pool.name,
                "workers": pool.workers,
                "started_ms_before": round((began - pool.started_ns) / 1e6, 3),
                "last_worker_ready_ms_before": round((began - ready) / 1e6, 3) if ready else None,
            },
        )
        recorder.pool = pool
        pool.traced_calls.append(recorder)
    return recorder


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def record_batch(
    recorder: Recorder, batch: ResultBatch, retried: frozenset[int], group: str | None
) -> None:
    """Put ``batch`` on its worker's track: its chunk span, retries, serial timeouts.

    A batch without ``times`` is an engine's verdict on a chunk that did not come back
    from a worker (a crash, a timeout, a cancelled or unsendable chunk): the engine has
    recorded what it saw, so only its retries are added here.
    """
    chunk = batch.chunk
    if batch.times is None and not retried:
        return
    track = recorder.worker_track(batch.worker or "the pool", group)
    if batch.times is not None:
        errors = batch.errors
        recorder.chunk(
            track,
            chunk.start,
            len(chunk.items),
            chunk.attempt,
            "error" if errors else "ok",
            batch.times,
            errors=len(errors),
            retried=tuple(sorted(retried)),
        )
        for offset, error in errors.items():
            if isinstance(error, TaskTimeout):  # noticed late, by the serial backend
                recorder.instant(
                    track,
                    "timeout",
                    "fault",
                    batch.times[2],
                    {"position": chunk.start + offset, "reason": str(error)},
                )
    for offset in sorted(retried):
        record_retry(recorder, track, chunk.start + offset, chunk.attempt + 1, batch.errors[offset])
    recorder.note_progress()


def record_retry(
    recorder: Recorder, track: int, position: int, attempt: int, error: BaseException
) -> None:
    """The task at ``position`` raised ``error`` and is tried again (``attempt``: from 0)."""
    recorder.instant(
        track,
        "retry",
        "fault",
        now_ns(),
        {"position": position, "attempt": attempt, "reason": _describe(error)},
    )


def record_inline(
    recorder: Recorder,
    track: int,
    first: int,
    count: int,
    attempt: int,
    times: tuple[int, int],
    errors: int,
    retried: tuple[int, ...] = (),
) -> None:
    """Items run in the calling thread (``backend="auto"`` measuring): one chunk span."""
    begun, ended = times
    outcome = "error" if errors else "ok"
    recorder.chunk(
        track, first, count, attempt, outcome, (begun, begun, ended, ended), errors, retried
    )


def why_ended(error: BaseException | None) -> str:
    """How a call that did not run to its end ended, in a few words ("" if it did)."""
    if error is None:
        return ""
    if isinstance(error, GeneratorExit):
        return "stopped early: its results were not all read"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(error, concurrent.futures.TimeoutError):
        return f"timed out ({_describe(error)})"
    return f"failed ({_describe(error)})"


def close_trace(recorder: Recorder, ended_by: BaseException | None) -> None:
    """Write the trace; ``ended_by`` is what ended the call early, if anything did.

    A trace that cannot be written raises ``OSError`` after a call that succeeded; after
    one that failed, the call's own exception goes on, with a note saying so.
    """
    if recorder.pool is not None:
        with contextlib.suppress(ValueError):
            recorder.pool.traced_calls.remove(recorder)
    try:
        finish(recorder, partial=ended_by is not None, reason=why_ended(ended_by))
    except OSError as exc:
        if ended_by is None:
            raise
        add_note(ended_by, f"workpool: the trace could not be written: {_describe(exc)}")
