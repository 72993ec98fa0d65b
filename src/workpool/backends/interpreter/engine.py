"""The interpreter backend: chunks run in subinterpreters of this process (Python 3.14+).

Each worker is a thread that owns one subinterpreter (``concurrent.interpreters``,
PEP 734). A subinterpreter has its own GIL and its own modules, so workers run Python
code in parallel even on a GIL build, isolated from each other and from the caller,
without a second process. Only bytes cross between interpreters. How one chunk travels::

    caller thread        worker thread workpool-interp-N     loop thread workpool-interp-N-loop
                         (in the main interpreter)           (inside subinterpreter N all its life)
    submit(chunk)
      queue it  -------> take it, claim it
                         pickle the items (the function
                         only the first time this
                         interpreter needs it)
                         CHUNK frame --------- pipe -------> unpickle, run every item,
                                                             pickle values and errors
                         <-------------------- pipe -------- BATCH frame
                         unpickle; rebuild each error as
    sink.deliver  <----- its own type (remote_errors.unpack_error)

The modules, in the order a chunk meets them:

- ``engine.py`` (this one): the backend. The queue, the workers' life cycle, shutdown
  and ``task_timeout`` are the worker-thread design every in-process engine shares
  (``backends/threaded.py``); what is particular to subinterpreters is the context and
  the wait at exit below.
- ``context.py``: a worker thread's context: pickles a chunk, runs it through the
  handle, turns the reply into result batches, and fails alone what cannot cross.
- ``handle.py``: one subinterpreter as the pool holds it: starts it, feeds it, closes it.
- ``worker.py``: the loop inside the subinterpreter, and the frames on the pipes.

Why a loop that stays inside the interpreter, fed through a pipe, rather than
``Interpreter.call`` once per chunk: every call enters the interpreter on a fresh thread
state and leaves it again, which measured about 0.2 ms per crossing on 3.14 and 1 ms on
3.14t, against 0.03 ms for a round trip through a pipe;
``concurrent.interpreters.Queue.get`` polls every 10 ms, slower still.

Workers start on demand, up to ``workers``: a pool that only ever gets one task at a
time creates one interpreter. ``max_tasks_per_worker`` retires a worker, and closes its
interpreter, after that many tasks; a successor with a fresh interpreter takes its place.

``task_timeout``: like a thread, a subinterpreter cannot be stopped from outside. Timed
tasks run one per chunk; the loop says when a task starts, and a watchdog that finds one
past its deadline reports ``TaskTimeout`` at once and lets a new worker take the place.
The deadline counts the task's own time, as the loop measured it: the loop also writes
when the task ended where the watchdog can read it (``worker.TIMES``), so a quick task
is not timed out because the worker thread, on a loaded machine, read its end late.
The overrunning worker is *abandoned*: it finishes the task in the background, its result
is discarded, then its interpreter is closed and its threads exit. Unlike an abandoned
thread, it also holds up the end of the program: Python cannot finalize a subinterpreter
that a thread is still running in (see ``_finish_before_exit``), so at exit the program
waits for such a task, and says so on stderr if that takes more than a moment.

Ctrl+C (``abandon``) cancels what is queued and returns at once, as on threads; the tasks
running finish in the background, and the program's exit waits for them, saying so. A
Ctrl+C during that wait ends the process at once, by SIGINT, the tasks with it: Python
would crash finalizing their interpreters if the exit went on.

A task that ends the process (``os._exit``, a segfault) ends the program, as on threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from workpool._options import PoolSpec
from workpool.backends.at_exit import ended_by_ctrl_c
from workpool.backends.interpreter.context import InterpreterContext
from workpool.backends.threaded import ThreadedBackend, WorkerContext
from workpool.chunking import THREAD_CHUNK_SECONDS
from workpool.daemons import DAEMONS
from workpool.exit_lists import ATEXIT, ExitList
from workpool.serialize import FunctionRegistry, dumps_function

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from workpool.timeline.recorder import Recorder

__all__ = ["InterpreterBackend"]

# Every backend still alive. A program that ends with a pool open (or shut down without
# waiting) must not leave a thread inside a subinterpreter when Python finalizes them:
# one waiting there blocks the exit for good, one that wakes up there crashes it
# (CPython gh-126016). Python runs this after joining non-daemon threads and before
# finalizing subinterpreters. It waits, as concurrent.futures does at exit, for the
# tasks still running, including those abandoned after a timeout.
# How long the exit waits quietly before saying what it waits for.
_EXIT_NOTICE_SECONDS = 2.0


# Set when that wait begins. A pool made after it (by a daemon thread of the program, or
# an atexit hook that runs later) would have interpreters no one waits for: it is refused.
_exit_lock = threading.Lock()
_exiting = False


def _finish_before_exit(backends: list[InterpreterBackend]) -> None:
    # The wait may be long (a Ctrl+C left a long task running, or one ran past its
    # timeout): a timer says what the program waits for, if it waits more than a moment.
    notice = threading.Timer(_EXIT_NOTICE_SECONDS, _say_why_the_exit_waits)
    notice.daemon = DAEMONS
    try:
        _refuse_new_pools()
        backends = _live_backends.members()  # with any made since this hook was called
        notice.start()
        # A pool shut down (at_exit.py) finishes its queue, unless the program ends on
        # Ctrl+C: then only the tasks running are waited for, since none can be stopped.
        interrupted = ended_by_ctrl_c()
        for backend in backends:
            backend.shutdown(wait=True, cancel_pending=interrupted or not backend.shutting_down)
        for thread in [t for backend in backends for t in backend.abandoned_threads()]:
            thread.join()
    except KeyboardInterrupt:
        # Returning now would let Python finalize the subinterpreters with the tasks
        # still inside them, which crashes it (SIGSEGV, most times). A Ctrl+C here means
        # "stop waiting": the process ends at once, the tasks with it.
        _end_the_process_on_ctrl_c()
    finally:
        notice.cancel()


def _refuse_new_pools() -> None:
    global _exiting
    with _exit_lock:
        _exiting = True


def _end_the_process_on_ctrl_c() -> NoReturn:
    """End the process as an uncaught Ctrl+C ends Python: by SIGINT where there are signals.

    The atexit hooks not yet run are skipped: they would run only to have Python crash
    after them. What workpool leaves otherwise (process workers, shared memory) goes with
    the process anyway.
    """
    print(
        "workpool: Ctrl+C while waiting for the tasks in subinterpreters: exiting without them",
        file=sys.stderr,
        flush=True,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or gone
            stream.flush()
    if hasattr(signal, "SIGINT") and os.name == "posix":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)  # where no signal ends the process at once


def _say_why_the_exit_waits() -> None:
    print(
        "workpool: waiting for the tasks still running in subinterpreters to end "
        "(a subinterpreter cannot be stopped, and Python cannot exit while one runs)",
        file=sys.stderr,
        flush=True,
    )


_live_backends = ExitList(_finish_before_exit, ATEXIT)


class InterpreterBackend(ThreadedBackend):
    """A queue of chunks served by up to ``workers`` threads, each owning a subinterpreter."""

    name = "interpreter"
    target_chunk_seconds = THREAD_CHUNK_SECONDS
    thread_prefix = "workpool-interp"
    kind = "a subinterpreter"

    def __init__(self, spec: PoolSpec, *, recorder: Recorder | None = None) -> None:
        self._init_payload = b""
        if spec.initializer is not None:
            # Pickled now, so that one that cannot be pickled fails here, at once.
            try:
                self._init_payload = dumps_function((spec.initializer, spec.initargs), shared=True)
            except Exception as exc:
                raise TypeError(
                    f"the initializer {spec.initializer!r} and its initargs cannot be sent to "
                    f"a subinterpreter: {exc}"
                ) from exc
        super().__init__(spec, recorder=recorder)
        self._functions = FunctionRegistry()
        with _exit_lock:
            if _exiting:
                raise RuntimeError(
                    "cannot start a subinterpreter pool: the program is exiting, and Python "
                    "would finalize its interpreters with its tasks still running in them"
                )
            _live_backends.add(self)

    def _new_context(self, thread: threading.Thread) -> WorkerContext:
        return InterpreterContext(thread, self._functions, self._init_payload)

    def abandon(self) -> None:
        # Ctrl+C: the caller has it back at once, as on threads; the tasks running finish
        # in the background, and the program's exit waits for them (_finish_before_exit).
        self._stop_without_waiting()
