"""Every user option, declared once, checked once, and frozen into a spec before work starts.

``OPTIONS`` is the one list of options: a row says an option's name, its default, the
check its value must pass, where it is given and which backends understand it.
Everything else derives from it::

    map/imap/starmap(..., **)  --\\
    Pool(...)                  ---> pool_spec(given)              -> PoolSpec
    Pool.map/imap/starmap(...) --/   run_options(given, backend)  -> RunOptions

The public functions keep explicit, typed keyword arguments (for IDEs and type
checkers) and hand their ``locals()`` to these two functions, which read the names the
table lists; a test checks that every signature names exactly its rows, with the same
defaults. Adding an option is one row here, one field in ``PoolSpec`` or
``RunOptions``, and the parameter in the signatures that take it.

Each check raises at once with a message that says what was given and what is
accepted, so a bad argument never reaches a worker thread or process.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping

from workpool._cpus import usable_cpus
from workpool.records import Record
from workpool.sharing import DEFAULT_SHARE_THRESHOLD

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ParamSpec, TypeVar

    _Params = ParamSpec("_Params")
    _Returned = TypeVar("_Returned")

__all__ = [
    "BACKENDS",
    "CALL",
    "EXECUTOR_ALIASES",
    "EXECUTOR_MAP",
    "OPTIONS",
    "POOL",
    "POOL_BACKEND",
    "UNSET",
    "Option",
    "PoolSpec",
    "RunOptions",
    "check_function",
    "default_workers",
    "option_names",
    "pool_spec",
    "refuses_unknown_options",
    "resolve_auto",
    "run_options",
]


def _has_subinterpreters() -> bool:
    """Whether ``concurrent.interpreters`` (Python 3.14+) exists here, without importing it."""
    if sys.version_info >= (3, 14):  # before, importlib.util need not load to say no
        from importlib.util import find_spec

        return find_spec("concurrent.interpreters") is not None
    return False


# Engines a caller may name. "auto" measures and then picks one of the others (never
# "dask": a cluster is for the caller to choose).
BACKENDS: tuple[str, ...] = (
    ("auto", "serial", "thread", "process")
    + (("interpreter",) if _has_subinterpreters() else ())
    + ("dask",)
)
DASK_EXTRA = "pip install 'workpool[dask]'"
# What a Pool runs on when the caller names nothing ("auto" is for one-shot calls).
POOL_BACKEND = "process"

START_METHODS: tuple[str, ...] = ("fork", "forkserver", "spawn")

# Where an option is given.
POOL = "pool"  # shapes a pool: Pool(...) and the one-shot functions
CALL = "call"  # one map/imap/starmap call: the one-shot functions and Pool's methods
EXECUTOR_MAP = "Executor.map"  # arguments of Executor.map itself: Pool.map only


class _Unset:
    """The default of a call option a ``Pool`` method leaves to the pool."""

    def __repr__(self) -> str:
        return "<the pool's default>"


UNSET: Any = _Unset()


# --- checks: (name, value) -> the value to use -------------------------------------------


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _positive_or_none(name: str, value: object) -> int | None:
    if value is None:
        return None
    number = _as_int(value)
    if number is None:
        raise TypeError(f"{name} must be a positive integer or None; got {_describe(value)}")
    if number < 1:
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    return number


def _count(name: str, value: object) -> int:
    number = _as_int(value)
    if number is None:
        raise TypeError(f"{name} must be an integer >= 0; got {_describe(value)}")
    if number < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return number


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {_describe(value)}")
    return value


def _number_of_seconds(name: str, value: object) -> float | None:
    """``value`` as seconds (a float), or None; a ``TypeError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None; got {_describe(value)}")
    return float(value)


def _seconds(name: str, value: object) -> float | None:
    seconds = _number_of_seconds(name, value)
    if seconds is not None and not seconds > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number of seconds or None; got {value!r}")
    return seconds


def _deadline(name: str, value: object) -> float | None:
    """``Executor.map``'s ``timeout``: 0 or less is a deadline already past, as there."""
    seconds = _number_of_seconds(name, value)
    if seconds is not None and seconds != seconds:  # NaN: no deadline can be counted from it
        raise ValueError(f"{name} must be a number of seconds or None; got {value!r}")
    return seconds


def _byte_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    count = _as_int(value)
    accepted = "a number of bytes (an integer >= 0) or None"
    if count is None:
        raise TypeError(f"{name} must be {accepted}; got {_describe(value)}")
    if count < 0:
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return min(count, sys.maxsize)  # no object is bigger: the same answer, in 64 bits


def _buffersize(name: str, value: object) -> int | None:
    # Worded as Executor.map words it on Python 3.14, whose tests match these phrases.
    if value is None:
        return None
    number = _as_int(value)
    if number is None:
        raise TypeError(f"{name} must be an integer or None; got {_describe(value)}")
    if number < 1:
        raise ValueError(f"{name} must be None or > 0; got {value!r}")
    return number


def _callable_or_none(name: str, value: object) -> Callable[..., object] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None; got {_describe(value)}")
    return value


def _arguments(name: str, value: object) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a tuple of arguments; got {_describe(value)}")
    return tuple(value)


def _backend(name: str, value: object) -> str:
    if isinstance(value, str) and value in BACKENDS:
        if value == "dask" and not _dask_installed():
            raise ImportError(f"backend='dask' needs Dask, which is not installed: {DASK_EXTRA}")
        return value
    if value == "interpreter":
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
    raise ValueError(f"{name} must be one of {_choices(BACKENDS)}; got {value!r}")


def _choices(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _named_backend(value: object) -> str:
    """A Pool's backend: one that runs work, not ``"auto"``, which chooses per function."""
    named = [b for b in BACKENDS if b != "auto"]
    if value == "auto":
        raise ValueError(
            "backend='auto' chooses an engine per function and is offered by "
            f"workpool.map/imap/starmap; a Pool needs a named backend: {_choices(named)}"
        )
    if value not in BACKENDS and value != "interpreter":
        raise ValueError(f"backend must be one of {_choices(named)}; got {value!r}")
    return _backend("backend", value)


def _dask_installed() -> bool:
    """Can ``distributed`` be imported? (Asked without importing it.)"""
    from importlib.util import find_spec

    try:
        return find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def _start_method(name: str, value: object) -> str | None:
    if value is None:
        return None
    import multiprocessing  # only here: the zygote's pools never need it

    available = multiprocessing.get_all_start_methods()
    if value not in START_METHODS or value not in available:
        choices = ", ".join(repr(m) for m in START_METHODS if m in available)
        raise ValueError(f"{name} must be None or one of {choices} on this platform; got {value!r}")
    return str(value)


def _address(name: str, value: object) -> object:
    # A scheduler address, or a distributed.Client (recognised without importing Dask).
    if value is None:
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(
                f"{name} must name a Dask scheduler (such as 'tcp://10.0.0.5:8786'); got ''"
            )
        return value.strip()
    kind = type(value)
    if kind.__name__ == "Client" and kind.__module__.split(".")[0] == "distributed":
        return value
    raise TypeError(
        f"{name} must be a scheduler address (a str), a distributed.Client or None; "
        f"got {_describe(value)}"
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


# --- the table ----------------------------------------------------------------------------


class Option:
    """One user option (a row of the table).

    ``check(name, value)`` returns the value to use or raises ``TypeError`` /
    ``ValueError``. ``where`` is ``POOL``, ``CALL`` or ``EXECUTOR_MAP``. ``backends``
    lists the only backends that understand the option (empty: every one); given with
    another named backend, it is a ``ValueError``. ``pool_wide`` marks a call option
    that ``Pool(...)`` also takes, as the default for every call on the pool.
    """

    __slots__ = ("backends", "check", "default", "name", "pool_wide", "where")

    def __init__(
        self,
        name: str,
        default: Any,
        check: Callable[[str, Any], Any],
        where: str,
        *,
        backends: tuple[str, ...] = (),
        pool_wide: bool = False,
    ) -> None:
        self.name = name
        self.default = default
        self.check = check
        self.where = where
        self.backends = backends
        self.pool_wide = pool_wide

    def __repr__(self) -> str:
        return f"Option({self.name!r}, where={self.where!r})"


OPTIONS: tuple[Option, ...] = (
    Option("backend", "auto", _backend, POOL),
    Option("workers", None, _positive_or_none, POOL),  # None: default_workers(backend)
    Option("initializer", None, _callable_or_none, POOL),
    Option("initargs", (), _arguments, POOL),
    Option("max_tasks_per_worker", None, _positive_or_none, POOL),
    Option("start_method", None, _start_method, POOL, backends=("process",)),
    Option("address", None, _address, POOL, backends=("dask",)),
    Option("chunksize", None, _positive_or_none, CALL),
    Option("ordered", True, _flag, CALL),
    Option("task_timeout", None, _seconds, CALL, pool_wide=True),
    Option("retries", 0, _count, CALL, pool_wide=True),
    Option("return_exceptions", False, _flag, CALL),
    Option("progress", False, _flag, CALL),
    Option("share_threshold", DEFAULT_SHARE_THRESHOLD, _byte_count, CALL, pool_wide=True),
    Option("checkpoint", None, _file_path, CALL),  # a journal of finished results
    Option("trace", None, _file_path, CALL),  # the call's timeline, as a Chrome trace
    Option("timeout", None, _deadline, EXECUTOR_MAP),  # the whole call's deadline
    Option("buffersize", None, _buffersize, EXECUTOR_MAP),  # tasks ahead of the consumer
)

# The names concurrent.futures' executors give to options of POOL's: ``Pool(...)``
# takes them too, so that code written for those executors runs unchanged.
EXECUTOR_ALIASES: dict[str, str] = {"max_workers": "workers"}

_POOL_OPTIONS = tuple(o for o in OPTIONS if o.where == POOL)
_RUN_OPTIONS = tuple(o for o in OPTIONS if o.where != POOL)


def refuses_unknown_options(
    where: str,
) -> Callable[[Callable[_Params, _Returned]], Callable[_Params, _Returned]]:
    """Make a public function's unexpected keyword say where it belongs, or what is near.

    Python's own ``TypeError`` names the keyword only. This one's message, of the same
    type, adds that ``workers`` shapes a pool and goes to ``Pool(...)``, say, or the
    closest accepted name and the list of them. ``where`` names the function as
    messages do (``"Pool.map()"``). The signature (and what type checkers see) is
    the function's own; the check is one set comparison per call.
    """

    def decorate(function: Callable[_Params, _Returned]) -> Callable[_Params, _Returned]:
        code = function.__code__
        accepted = frozenset(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])

        @functools.wraps(function)
        def checked(*args: _Params.args, **kwargs: _Params.kwargs) -> _Returned:
            if not accepted.issuperset(kwargs):
                raise TypeError(_unknown_option_message(where, kwargs, accepted))
            return function(*args, **kwargs)

        return checked

    return decorate


# What the other calls offer instead of each argument of Executor.map.
_EXECUTOR_MAP_HINTS = {
    "timeout": " (task_timeout= bounds each task)",
    "buffersize": " (imap reads its input lazily, a bounded window ahead of the results)",
}


def _unknown_option_message(where: str, given: Iterable[str], accepted: frozenset[str]) -> str:
    name = next(name for name in given if name not in accepted)
    message = f"{where} got an unexpected keyword argument {name!r}"
    option = next((o for o in OPTIONS if o.name == EXECUTOR_ALIASES.get(name, name)), None)
    if option is not None and option.where == POOL:
        return f"{message}: it shapes a pool; give it to Pool(...) or to workpool.map()"
    if option is not None and option.where == CALL:
        return (
            f"{message}: it is an option of each call; "
            "give it to the pool's map(), imap() or starmap()"
        )
    if option is not None:  # EXECUTOR_MAP
        return (
            f"{message}: it is an argument of Pool.map() only, as of Executor.map"
            + _EXECUTOR_MAP_HINTS[option.name]
        )
    import difflib  # only for this message

    options = sorted(accepted - {"self", "fn", "iterable", "iterables"})
    takes = f"{where} takes: {', '.join(options)}"
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}? ({takes})"
    return f"{message}; {takes}"


def option_names(*where: str, pool_wide: bool = False) -> tuple[str, ...]:
    """The names of the options given in ``where`` (plus the pool-wide ones, if asked)."""
    return tuple(o.name for o in OPTIONS if o.where in where or (pool_wide and o.pool_wide))


class PoolSpec(
    Record,
    defaults={o.name: o.default for o in _POOL_OPTIONS if o.name != "workers"},
):
    """What a pool is made of (the ``POOL`` rows), validated and resolved.

    Its fields are the table's rows; one left out takes the table's default, except
    ``workers``, which is always resolved (``pool_spec``).
    """

    __slots__ = option_names(POOL)
    backend: str
    workers: int
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    max_tasks_per_worker: int | None
    start_method: str | None
    address: Any


class RunOptions(Record, defaults={o.name: o.default for o in _RUN_OPTIONS}):
    """How one map/imap/starmap call runs (the other rows), validated."""

    __slots__ = option_names(CALL, EXECUTOR_MAP)
    chunksize: int | None
    ordered: bool
    task_timeout: float | None
    retries: int
    return_exceptions: bool
    progress: bool
    share_threshold: int | None  # NumPy arrays this big go by shared memory
    checkpoint: str | None  # the journal file of finished results (checkpoint=)
    trace: str | None  # where to write the call's timeline (trace=)
    timeout: float | None  # overall deadline of Pool.map (Executor semantics)
    buffersize: int | None  # Pool.map: at most this many items read ahead of the consumer


# Backends "auto" may choose (never a cluster): an option only one of them understands
# is kept for the case auto picks it.
_AUTO_CHOICES = frozenset({"serial", "thread", "process", "interpreter"})


def _check_fits(option: Option, value: object, backend: str) -> None:
    """Refuse an option given with a named backend that does not understand it."""
    if not option.backends or backend in option.backends:
        return
    if backend == "auto" and _AUTO_CHOICES.intersection(option.backends):
        return  # kept for when auto picks that backend
    which = " or ".join(f"backend={b!r}" for b in option.backends)
    raise ValueError(
        f"{option.name} applies to {which} only; got {option.name}={value!r} "
        f"with backend={backend!r}"
    )


def _checked(options: tuple[Option, ...], given: Mapping[str, Any], backend: str) -> dict[str, Any]:
    values = {}
    for option in options:
        value = given.get(option.name, option.default)
        if value is not option.default:  # defaults are valid: skip their checks
            value = option.check(option.name, value)
            if value != option.default:
                _check_fits(option, value, backend)
        values[option.name] = value
    return values


def check_function(fn: object) -> None:
    """Raise ``TypeError`` unless ``fn`` can be called and its call does the work.

    An ``async def`` function's call only makes a coroutine (or an async generator),
    which no worker runs: the results would be those objects, never run (on threads),
    or a pickling error (on processes).
    """
    if not callable(fn):
        raise TypeError(f"the function to run must be callable; got {_describe(fn)}")
    flags = _async_flags(fn)
    if flags & _CO_COROUTINE:
        raise TypeError(
            f"the function to run is an async function ({fn!r}): calling it only makes a "
            "coroutine, for an event loop to run, and workers call plain functions; give "
            "one that runs it, such as: def run(x): return asyncio.run(the_function(x))"
        )
    if flags & _CO_ASYNC_GENERATOR:
        raise TypeError(
            f"the function to run is an async generator function ({fn!r}): calling it only "
            "makes an async generator, for an event loop to run, and workers call plain "
            "functions; give one that runs it to its end in an event loop (asyncio.run)"
        )


# inspect's CO_COROUTINE and CO_ASYNC_GENERATOR (inspect itself takes 10 ms to import).
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


def _async_flags(fn: object) -> int:
    """The code flags of ``fn``, or of the function it binds or wraps; 0 if it has none."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    flags = getattr(getattr(getattr(fn, "__func__", fn), "__code__", None), "co_flags", 0)
    return flags if isinstance(flags, int) else 0


def default_workers(backend: str) -> int:
    """Workers used when the caller names none: CPUs for processes, more for threads.

    With Dask it is 0: the cluster's size decides (see backends/dask).
    """
    if backend == "dask":
        return 0
    cpus = usable_cpus()
    if backend == "thread":
        return min(32, cpus + 4)
    return cpus


def _unaliased(given: Mapping[str, Any]) -> Mapping[str, Any]:
    """``given`` with an option given by its ``EXECUTOR_ALIASES`` name under its own."""
    for alias, name in EXECUTOR_ALIASES.items():
        value = given.get(alias)
        if value is None:
            continue
        if given.get(name) is not None:
            raise TypeError(
                f"{name} and {alias} are one option ({alias} is its name in "
                f"concurrent.futures); give one, not {name}={given[name]!r} and "
                f"{alias}={value!r}"
            )
        option = next(o for o in OPTIONS if o.name == name)
        given = {**given, name: option.check(alias, value)}
    return given


def pool_spec(given: Mapping[str, Any], *, named_backend: bool = False) -> PoolSpec:
    """Validate the ``POOL`` options in ``given`` (other names are ignored).

    An option may be given by its ``EXECUTOR_ALIASES`` name instead (never both).
    ``named_backend``: ``"auto"`` is refused (a Pool's backend runs work itself).
    """
    given = _unaliased(given)
    chosen = given.get("backend", "auto")
    backend = _named_backend(chosen) if named_backend else _backend("backend", chosen)
    values = _checked(_POOL_OPTIONS, given, backend)
    if values["workers"] is None:
        values["workers"] = default_workers(backend)
    return PoolSpec(**values)


def run_options(
    given: Mapping[str, Any], *, backend: str, defaults: RunOptions | None = None
) -> RunOptions:
    """Validate the call options in ``given`` (other names are ignored).

    A name missing from ``given``, or given as ``UNSET``, takes its value from
    ``defaults`` (a pool's), else from the table.
    """
    if defaults is not None:
        given = {
            name: getattr(defaults, name) if given.get(name, UNSET) is UNSET else given[name]
            for name in RunOptions.__slots__
        }
    values = _checked(_RUN_OPTIONS, given, backend)
    checkpoint, trace = values["checkpoint"], values["trace"]
    if (
        checkpoint is not None
        and trace is not None
        and os.path.realpath(checkpoint) == os.path.realpath(trace)
    ):
        raise ValueError(
            f"checkpoint= and trace= name one file ({checkpoint!r}): the timeline "
            "would replace the checkpoint when the call ends; give them two files"
        )
    return RunOptions(**values)


def resolve_auto(spec: PoolSpec, backend: str, workers: int) -> PoolSpec:
    """The spec of a pool that ``backend="auto"`` resolved to ``backend``.

    Options kept for a backend that was not chosen go back to their defaults.
    """
    kept_apart = {
        option.name: option.default
        for option in _POOL_OPTIONS
        if option.backends and backend not in option.backends
    }
    return spec.replace(backend=backend, workers=workers, **kept_apart)
