"""At interpreter exit, no worker may outlive the program.

Pools register here while their supervisor runs (``track``) and leave when it ends
(``forget``). At exit, one that was shut down finishes the work it was given, as
``concurrent.futures`` promises (every ``Pool`` still open was shut down just before,
by ``backends/at_exit.py``), unless the program ends on Ctrl+C or gets one meanwhile;
one still open (a one-shot ``imap`` left unread) is terminated. Then what must come
after them runs (``afterwards``: the zygote is told to end).

``atexit`` runs handlers last registered first. multiprocessing registers its own the
first time it is imported: it joins every live ``multiprocessing.Process``, which would
wait for ever on idle workers started that way. So a launcher that starts workers with
multiprocessing calls ``run_before_multiprocessing()``, which registers our hook again
after multiprocessing's. Workers from the zygote are not ``Process`` objects and need
none of this.
"""

from __future__ import annotations

from collections.abc import Callable

from workpool.backends.at_exit import end_all
from workpool.exit_lists import ATEXIT, ExitList

TYPE_CHECKING = False
if TYPE_CHECKING:
    from workpool.backends.at_exit import Endable

__all__ = ["afterwards", "forget", "run_before_multiprocessing", "track"]


_afterwards: list[Callable[[], None]] = []


def track(pool: Endable) -> None:
    """Terminate ``pool`` at exit, if it is still running then."""
    _live.add(pool)


def forget(pool: Endable) -> None:
    _live.discard(pool)


def afterwards(callback: Callable[[], None]) -> None:
    """Run ``callback`` at exit once every pool has been terminated."""
    _afterwards.append(callback)


def _terminate_everything(pools: list[Endable]) -> None:
    end_all(pools)
    for callback in _afterwards:
        callback()


def run_before_multiprocessing() -> None:
    """Make our exit hook run before multiprocessing's (see the module docstring)."""
    import multiprocessing.util  # noqa: F401 - registers multiprocessing's own hook

    _live.register_now()


_live = ExitList(_terminate_everything, ATEXIT)
_live.register_now()  # the zygote's end (``afterwards``) is due even if no pool started
