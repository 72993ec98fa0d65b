"""Bad arguments fail at once, before any work starts, saying what was given and what fits."""

from __future__ import annotations

import functools
import inspect
import math
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import live_worker_processes, live_workpool_threads
from faults import fail_first_try
from helpers import square
from workpool import _options

ONE_SHOT = [workpool.map, workpool.imap]


@pytest.mark.parametrize("call", ONE_SHOT)
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"workers": 0}, ValueError, r"workers must be a positive integer or None; got 0"),
        ({"workers": -3}, ValueError, r"workers .* got -3"),
        ({"workers": "4"}, TypeError, r"workers .* got '4' \(str\)"),
        ({"workers": 2.5}, TypeError, r"workers .* got 2.5 \(float\)"),
        ({"chunksize": 0}, ValueError, r"chunksize must be a positive integer or None; got 0"),
        ({"task_timeout": -1}, ValueError, r"task_timeout must be a positive number"),
        ({"task_timeout": 0}, ValueError, r"task_timeout .* got 0"),
        ({"task_timeout": "5s"}, TypeError, r"task_timeout must be a number of seconds"),
        ({"retries": -1}, ValueError, r"retries must be an integer >= 0; got -1"),
        ({"retries": 1.5}, TypeError, r"retries must be an integer"),
        (
            {"backend": "gpu"},
            ValueError,
            r"backend must be one of 'auto', 'serial', 'thread', 'process'.*got 'gpu'",
        ),
        ({"ordered": "yes"}, TypeError, r"ordered must be True or False; got 'yes'"),
        ({"return_exceptions": 1}, TypeError, r"return_exceptions must be True or False"),
        ({"progress": None}, TypeError, r"progress must be True or False"),
        ({"initializer": 42}, TypeError, r"initializer must be callable or None; got 42"),
        ({"share_threshold": -1}, ValueError, r"share_threshold must be a number of bytes"),
        ({"share_threshold": "1MB"}, TypeError, r"share_threshold must be a number of bytes .*str"),
        ({"initargs": 5}, TypeError, r"initargs must be a tuple"),
        ({"max_tasks_per_worker": 0}, ValueError, r"max_tasks_per_worker must be a positive"),
        (
            {"start_method": "teleport"},
            ValueError,
            r"start_method must be None or one of .*'spawn'",
        ),
        (
            {"backend": "thread", "start_method": "spawn"},
            ValueError,
            r"start_method applies to backend='process' only",
        ),
    ],
)
def test_bad_option_raises_at_once(
    call: Any, options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        call(square, range(10), **options)
    assert live_worker_processes() == []
    assert live_workpool_threads() == []


@pytest.mark.parametrize("call", [workpool.map, workpool.imap, workpool.starmap])
def test_non_callable_function(call: Any) -> None:
    with pytest.raises(TypeError, match="must be callable; got 3 \\(int\\)"):
        call(3, [(1,)])


async def _async_square(x: int) -> int:
    return x * x


async def _async_squares(x: int) -> Any:
    yield x * x


class _AsyncMethods:
    async def square(self, x: int) -> int:
        return x * x


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (_async_square, "an async function"),
        (_AsyncMethods().square, "an async function"),
        (functools.partial(_async_square), "an async function"),
        (_async_squares, "an async generator function"),
    ],
    ids=["function", "method", "partial", "generator"],
)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_an_async_function_is_refused_at_once_and_told_what_to_give(
    fn: Any, kind: str, backend: str
) -> None:
    # Calling one only makes a coroutine: threads handed those back, never run, and
    # processes failed to pickle them, after starting a pool.
    refusal = f"the function to run is {kind} .*asyncio.run"
    with pytest.raises(TypeError, match=refusal):
        workpool.map(fn, [1, 2], backend=backend)
    with pytest.raises(TypeError, match=refusal):
        workpool.imap(fn, [1, 2], backend=backend)
    with workpool.Pool(1, backend=backend) as pool:
        with pytest.raises(TypeError, match=refusal):
            pool.submit(fn, 1)
        with pytest.raises(TypeError, match=refusal):
            pool.map(fn, [1, 2])
    assert live_worker_processes() == []


def test_non_iterable_input() -> None:
    with pytest.raises(TypeError, match="inputs must be iterable; got int"):
        workpool.map(square, 5)
    with pytest.raises(TypeError, match="inputs must be iterable"):
        workpool.imap(square, None)


def test_missing_input() -> None:
    with pytest.raises(TypeError, match="at least one iterable"):
        workpool.map(square)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'worker'"):
        workpool.map(square, [1], worker=2)  # type: ignore[call-arg]


def _pool_map(**options: Any) -> object:
    with workpool.Pool(1, backend="thread") as pool:
        return pool.map(square, [1], **options)


def _pool_imap(**options: Any) -> object:
    with workpool.Pool(1, backend="thread") as pool:
        return pool.imap(square, [1], **options)


def test_buffersize_given_to_imap_says_what_imap_does_instead() -> None:
    with pytest.raises(TypeError, match=r"argument of Pool.map\(\)") as raised:
        workpool.imap(square, [1], buffersize=4)  # type: ignore[call-arg]
    message = str(raised.value)
    assert "lazily" in message
    assert "task_timeout" not in message  # the hint for timeout= alone


@pytest.mark.parametrize(
    ("call", "options", "message"),
    [
        # An option given where it does not belong: where it does.
        (
            _pool_map,
            {"workers": 2},
            r"Pool.map\(\) .* 'workers': it shapes a pool; give it to Pool",
        ),
        (_pool_imap, {"max_workers": 2}, r"'max_workers': it shapes a pool"),
        (workpool.Pool, {"chunksize": 4}, r"Pool\(\) .* 'chunksize': it is an option of each call"),
        (functools.partial(workpool.map, square, [1]), {"timeout": 3}, r"argument of Pool.map\(\)"),
        # A name of no option: the closest one, and every one it takes.
        (
            functools.partial(workpool.map, square, [1]),
            {"chunksiz": 3},
            r"did you mean 'chunksize'\?",
        ),
        (functools.partial(workpool.imap, square, [1]), {"bogus": 1}, r"imap\(\) takes: address, "),
    ],
)
def test_a_misplaced_or_misspelled_option_says_where_it_belongs(
    call: Callable[..., object], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        call(**options)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be a positive integer"),
        ({"backend": "cluster"}, ValueError, "backend must be one of"),
        ({"backend": "auto"}, ValueError, "a Pool needs a named backend"),
        ({"max_tasks_per_worker": -1}, ValueError, "max_tasks_per_worker"),
        ({"task_timeout": 0}, ValueError, "task_timeout"),
        ({"retries": -2}, ValueError, "retries"),
        ({"initializer": "setup"}, TypeError, "initializer must be callable"),
        ({"max_workers": 0}, ValueError, "max_workers must be a positive integer"),
        ({"max_workers": 2, "workers": 2}, TypeError, "workers and max_workers are one option"),
    ],
)
def test_bad_pool_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        workpool.Pool(**kwargs)
    assert live_worker_processes() == []


@pytest.mark.parametrize("backend", ["threads", 3, None])
def test_a_pool_offers_only_the_backends_it_takes(backend: object) -> None:
    # A Pool refuses "auto", so naming it among the choices would send the user to it.
    with pytest.raises(ValueError, match="backend must be one of") as caught:
        workpool.Pool(backend=backend)  # type: ignore[arg-type]
    assert "'process'" in str(caught.value)
    assert "'auto'" not in str(caught.value)


@pytest.mark.parametrize("workers", [10**9, 10**30])
def test_more_worker_processes_than_the_system_allows_are_refused_at_once(workers: int) -> None:
    # Not an OverflowError from deep inside, nor minutes sizing a billion slots.
    with pytest.raises(ValueError, match=f"workers={workers} is more worker processes"):
        workpool.Pool(workers, backend="process")
    with pytest.raises(ValueError, match="than this system can run: it allows"):
        workpool.map(square, [1], backend="process", workers=workers)
    assert live_worker_processes() == []
    with workpool.Pool(workers, backend="thread") as pool:  # threads start as needed
        assert list(pool.map(square, [3])) == [9]


def test_bad_call_options_on_a_pool(backend: str) -> None:
    with workpool.Pool(1, backend=backend) as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap(square, [1], chunksize=-1)
        with pytest.raises(TypeError, match="must be callable"):
            pool.submit(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            pool.map(square, [1], timeout=math.nan)
        with pytest.raises(TypeError, match="ordered"):
            pool.starmap(pow, [(1, 2)], ordered=None)  # type: ignore[arg-type]


def test_unavailable_start_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(ValueError, match="one of 'spawn' on this platform; got 'fork'"):
        workpool.map(square, [1], backend="process", start_method="fork")


# --- the table of options and the public signatures agree -------------------------------

SIGNATURES = [
    # (function, where its options come from, whether pool-wide options default to the pool)
    (workpool.map, (_options.POOL, _options.CALL), False),
    (workpool.imap, (_options.POOL, _options.CALL), False),
    (workpool.starmap, (_options.POOL, _options.CALL), False),
    (workpool.Pool.map, (_options.CALL, _options.EXECUTOR_MAP), True),
    (workpool.Pool.imap, (_options.CALL,), True),
    (workpool.Pool.starmap, (_options.CALL,), True),
]


@pytest.mark.parametrize(("function", "where", "pool_defaults"), SIGNATURES)
def test_every_signature_names_exactly_its_options(
    function: Any, where: tuple[str, ...], pool_defaults: bool
) -> None:
    parameters = inspect.signature(function).parameters
    named = {
        name: p.default
        for name, p in parameters.items()
        if p.kind is not p.VAR_POSITIONAL and name not in ("self", "fn", "iterable")
    }
    expected = _options.option_names(*where)
    assert sorted(named) == sorted(expected)
    for option in _options.OPTIONS:
        if option.name in named:
            default = _options.UNSET if pool_defaults and option.pool_wide else option.default
            assert named[option.name] is default or named[option.name] == default, option.name


def test_pool_takes_the_pool_options_and_the_pool_wide_call_options() -> None:
    parameters = inspect.signature(workpool.Pool).parameters
    assert sorted(parameters) == sorted(
        _options.option_names(_options.POOL, pool_wide=True) + tuple(_options.EXECUTOR_ALIASES)
    )
    for option in _options.OPTIONS:
        if option.name in parameters:
            default = parameters[option.name].default
            expected = _options.POOL_BACKEND if option.name == "backend" else option.default
            assert default == expected, option.name


@pytest.mark.parametrize("record", [_options.PoolSpec, _options.RunOptions])
def test_the_specs_declare_a_type_for_every_option_of_their_kind(record: type) -> None:
    # The table decides what a spec holds; its annotations are what type checkers see.
    assert tuple(record.__annotations__) == record.__slots__
    assert record.__slots__ == (
        _options.option_names(_options.POOL)
        if record is _options.PoolSpec
        else _options.option_names(_options.CALL, _options.EXECUTOR_MAP)
    )


def test_a_spec_is_a_value_that_cannot_change_in_place() -> None:
    spec = _options.pool_spec({"backend": "process", "workers": 2})
    assert spec == _options.PoolSpec(backend="process", workers=2)
    assert spec != spec.replace(workers=3)
    assert spec.replace(workers=3).workers == 3 and spec.workers == 2
    assert "workers=2" in repr(spec)
    with pytest.raises(AttributeError, match="read-only"):
        spec.workers = 5
    with pytest.raises(TypeError, match="no field 'wrokers'"):
        _options.PoolSpec(backend="process", wrokers=2)


@pytest.mark.parametrize("backend", ["serial", "thread", "process", "auto"])
def test_an_option_of_another_backend_is_refused(backend: str) -> None:
    with pytest.raises(ValueError, match=r"address applies to backend='dask' only"):
        workpool.map(square, [1], backend=backend, address="tcp://127.0.0.1:8786")
    if backend != "auto":
        with pytest.raises(ValueError, match=r"address applies to backend='dask' only"):
            workpool.Pool(backend=backend, address="tcp://127.0.0.1:8786")


def test_start_method_with_auto_is_kept_for_processes() -> None:
    # "auto" may pick processes: the start method is for that case, and dropped otherwise.
    assert workpool.map(square, range(5), start_method="spawn") == [0, 1, 4, 9, 16]


def test_a_pools_call_defaults_hold_until_a_call_overrides_them(
    backend: str, tmp_path: Path
) -> None:
    with workpool.Pool(1, backend=backend, retries=1) as pool:
        assert list(pool.imap(fail_first_try(tmp_path), [2, 3])) == [4, 9]
        with pytest.raises(ConnectionError, match="flaky 5"):
            list(pool.imap(fail_first_try(tmp_path), [5], retries=0))


# Every entry point, called without iterating what it returns: the lazy ones too.
ENTRY_POINTS = {
    "map": lambda pool, items, **kw: workpool.map(square, items, backend="thread", **kw),
    "imap": lambda pool, items, **kw: workpool.imap(square, items, backend="thread", **kw),
    "starmap": lambda pool, items, **kw: workpool.starmap(
        square, [(i,) for i in items], backend="thread", **kw
    ),
    "Pool.map": lambda pool, items, **kw: pool.map(square, items, **kw),
    "Pool.imap": lambda pool, items, **kw: pool.imap(square, items, **kw),
    "Pool.starmap": lambda pool, items, **kw: pool.starmap(square, [(i,) for i in items], **kw),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("option", "where", "error", "message"),
    [
        ("checkpoint", ".", IsADirectoryError, r"is a directory"),
        ("checkpoint", "missing/run.ckpt", FileNotFoundError, r"does not exist"),
        ("checkpoint", "notes.txt", ValueError, r"not a workpool checkpoint"),
        ("trace", ".", IsADirectoryError, r"is a directory"),
        ("trace", "missing/run.json", FileNotFoundError, r"does not exist"),
    ],
)
def test_a_file_option_that_cannot_be_used_raises_at_the_call_of_every_entry_point(
    entry: str, option: str, where: str, error: type, message: str, tmp_path: Path
) -> None:
    # As any other bad argument: at the call, before the first next() of a lazy one.
    (tmp_path / "notes.txt").write_text("my notes, not a checkpoint\n")
    with workpool.Pool(2, backend="thread") as pool, pytest.raises(error, match=message):
        ENTRY_POINTS[entry](pool, range(5), **{option: str(tmp_path / where)})
    assert (tmp_path / "notes.txt").read_text() == "my notes, not a checkpoint\n"
    assert live_workpool_threads() == []


@pytest.mark.parametrize("entry", ["map", "imap", "Pool.map", "Pool.imap"])
def test_a_checkpoint_of_a_set_of_strings_is_refused_at_the_call(
    entry: str, tmp_path: Path
) -> None:
    pool = workpool.Pool(2, backend="thread")
    with pool, pytest.raises(ValueError, match="the input is a set"):
        ENTRY_POINTS[entry](pool, {"a", "b"}, checkpoint=str(tmp_path / "run.ckpt"))
