"""What becomes of a pool's work when the interpreter exits, on the local backends.

``concurrent.futures`` promises that the program does not exit before the work given to
an executor is done, whether it was shut down (``shutdown(wait=False)`` means "finish
it, without me waiting here") or left open. workpool keeps that promise in two steps:

    threading's exit hooks (before threads are joined, before atexit)
        every ``Pool`` still open -> shutdown(wait=False)
        Dask pools: ``dask/engine.py`` ends them (``end_all``), before Dask's threads stop
    atexit hooks
        thread and interpreter workers: this module waits for the pools shut down
        process workers: ``process/exit_hook.py`` ends them (``end_all``), then the zygote

So every ``Pool`` finishes the work it was given. Nothing finishes when the program
ends on Ctrl+C, or gets one while it waits: then pools are abandoned (process pools
terminated: no worker outlives the program). A one-shot ``workpool.imap`` left unread
is no ``Pool``: nobody can read its results any more, and its work is abandoned too.
Each hook shuts the open ``Pool``s down first, whichever runs first.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable

from workpool.exit_lists import ATEXIT, THREADS, ExitList

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

__all__ = [
    "end_all",
    "ended_by_ctrl_c",
    "finish_before_exit",
    "finish_if_open_at_exit",
]


if TYPE_CHECKING:

    class Finishable(Protocol):
        def shutdown(self, *, wait: bool, cancel_pending: bool) -> None: ...

    class OpenExecutor(Protocol):
        def _shut_down_at_exit(self) -> None:
            """Shut down without waiting, unless shut down already."""

    class Endable(Protocol):
        @property
        def shutting_down(self) -> bool:
            """Whether ``shutdown`` was called: the pool finishes its work, then ends."""

        def join(self) -> None: ...
        def terminate(self) -> None: ...


def end_all(live: Iterable[Endable]) -> None:
    """At exit: terminate the pools still open; those shut down first finish their work.

    On Ctrl+C (the one that ends the program, or one that lands meanwhile, at any point
    of this, while ``live`` is read too) every pool is terminated at once.
    """
    pools: list[Endable] = []
    finishing: list[Endable] = []
    try:
        pools = list(live)
        _shut_down_open_pools()
        if not ended_by_ctrl_c():
            finishing = [pool for pool in pools if pool.shutting_down]
        for pool in pools:
            if pool not in finishing:
                pool.terminate()
        for pool in finishing:
            pool.join()
    except KeyboardInterrupt:  # what is left, the pool it interrupted included, ends now
        finishing = pools or list(live)
    for pool in finishing:
        pool.terminate()  # one that has ended already: nothing happens


def ended_by_ctrl_c() -> bool:
    """Whether the program is exiting because of an uncaught ``KeyboardInterrupt``."""
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


def finish_before_exit(pool: Finishable) -> None:
    """``pool`` was shut down: at exit, wait until it has done the work it holds."""
    _finishing.add(pool)


def finish_if_open_at_exit(pool: OpenExecutor) -> None:
    """At exit, shut ``pool`` down if it is still open, so that it finishes its work."""
    _open.add(pool)


def _shut_down_open_pools(pools: list[OpenExecutor] | None = None) -> None:
    if ended_by_ctrl_c():
        return
    with contextlib.suppress(KeyboardInterrupt):
        for pool in _open.members() if pools is None else pools:
            pool._shut_down_at_exit()


def _finish_everything(pools: list[Finishable]) -> None:
    if ended_by_ctrl_c():
        return
    _shut_down_open_pools()
    # A Ctrl+C while waiting leaves the rest: worker threads end with the process.
    with contextlib.suppress(KeyboardInterrupt):
        for pool in pools:
            pool.shutdown(wait=True, cancel_pending=False)


# concurrent.futures' own hook runs among threading's too: before non-daemon threads are
# joined and before any atexit hook, so that the backends' hooks (which may have been
# registered earlier or later) all find these pools shut down.
_open = ExitList(_shut_down_open_pools, THREADS)
_finishing = ExitList(_finish_everything, ATEXIT)
