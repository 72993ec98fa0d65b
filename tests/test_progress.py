"""progress=True draws a bar on stderr: done/total, rate, ETA and failures; False is silent."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

import workpool
from conftest import wait_for
from helpers import fail_on, square


def test_progress_shows_done_total_rate_and_failures(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = workpool.map(
        fail_on(3), range(10), backend=backend, progress=True, return_exceptions=True
    )
    assert isinstance(result[3], ValueError)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "10/10" in captured.err
    assert "items/s" in captured.err
    assert "1 failed" in captured.err
    assert "ETA" in captured.err


def test_progress_of_unknown_length_counts_what_is_done(capsys: pytest.CaptureFixture[str]) -> None:
    list(workpool.imap(square, (x for x in range(25)), backend="thread", progress=True))
    err = capsys.readouterr().err
    assert "25 done" in err
    assert "0 failed" in err


def test_no_progress_by_default(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    workpool.map(square, range(10), backend=backend)
    with workpool.Pool(1, backend=backend) as pool:
        list(pool.imap(square, range(10)))
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


@pytest.mark.parametrize("backend_name", ["auto", "serial", "thread", "process"])
def test_an_empty_input_draws_an_empty_bar_on_every_path(
    backend_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def bar_of(call: Callable[[], object]) -> str:
        call()
        return capsys.readouterr().err

    assert "0/0" in bar_of(lambda: workpool.map(square, [], backend=backend_name, progress=True))
    nothing = iter([])
    assert "0 done" in bar_of(
        lambda: list(workpool.imap(square, nothing, backend=backend_name, progress=True))
    )
    if backend_name != "auto":  # a Pool names its backend
        with workpool.Pool(2, backend=backend_name) as pool:
            assert "0/0" in bar_of(lambda: list(pool.map(square, [], progress=True)))


def test_pool_calls_take_progress(capsys: pytest.CaptureFixture[str]) -> None:
    with workpool.Pool(2, backend="thread") as pool:
        assert pool.starmap(pow, [(2, 2)] * 5, progress=True) == [4] * 5
    assert "5/5" in capsys.readouterr().err


def test_a_bar_closed_early_stops_drawing_even_while_auto_measures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fresh(x: int) -> int:  # a new function: auto measures it on the first items
        return x + 1

    before = set(threading.enumerate())
    results = workpool.imap(fresh, range(10_000), progress=True)
    assert next(results) == 1  # yielded by auto's measuring phase, before any pool
    results.close()

    def bar_stopped() -> bool:  # rich redraws a live bar from a thread of its own
        return not [t for t in threading.enumerate() if t not in before and t.is_alive()]

    assert wait_for(bar_stopped, timeout=10), threading.enumerate()
    assert "fresh" in capsys.readouterr().err


@pytest.mark.parametrize("call", ["map", "imap"])
def test_a_failure_that_ends_the_call_is_counted_on_the_bar(
    backend: str, call: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bar's last line is left above the traceback: "0 failed" there would say the
    # opposite of the error under it.
    run = workpool.map if call == "map" else workpool.imap
    with pytest.raises(ValueError, match="bad input 3"):
        list(run(fail_on(3), range(10), backend=backend, progress=True))
    assert "1 failed" in capsys.readouterr().err


def test_the_bar_fits_one_line_of_80_columns_whatever_the_name_and_numbers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal's usual width: the counts, the rate and the failures must stay whole,
    # on one line; the function's name and the bar give way.
    monkeypatch.setenv("COLUMNS", "80")

    def check_every_record_of_the_input_file_twice(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    items = 100_000
    workpool.map(
        check_every_record_of_the_input_file_twice,
        range(items),
        backend="serial",
        progress=True,
        return_exceptions=True,
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{items}/{items}" in lines[0]
    assert re.search(r"[\dM] items/s", lines[0]), lines
    assert "ETA" in lines[0]
    assert lines[0].rstrip().endswith("1 failed"), lines


@pytest.mark.parametrize("call", ["map", "imap"])
def test_a_failure_while_auto_measures_is_counted_on_the_bar(
    call: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The failure ends the call while auto still times the first items inline: the
    # bar's last line said "0/100 ... 0 failed" above a map's traceback.
    run = workpool.map if call == "map" else workpool.imap
    with pytest.raises(ValueError, match="bad input 3"):
        list(run(fail_on(3), range(100), progress=True))  # a new function: measured
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 failed" in last and "0/100" not in last, last
