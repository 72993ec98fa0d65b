"""Bad arguments fail at once, before any work starts, saying what was given and what fits."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

import workpool
from conftest import live_worker_processes, live_workpool_threads
from helpers import square

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
    ],
)
def test_bad_pool_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        workpool.Pool(**kwargs)
    assert live_worker_processes() == []


def test_bad_call_options_on_a_pool(backend: str) -> None:
    with workpool.Pool(1, backend=backend) as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap(square, [1], chunksize=-1)
        with pytest.raises(TypeError, match="must be callable"):
            pool.submit(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            pool.map(square, [1], timeout=-1)
        with pytest.raises(TypeError, match="ordered"):
            pool.starmap(pow, [(1, 2)], ordered=None)  # type: ignore[arg-type]


def test_unavailable_start_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(ValueError, match="one of 'spawn' on this platform; got 'fork'"):
        workpool.map(square, [1], backend="process", start_method="fork")
