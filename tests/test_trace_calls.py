"""trace= on real calls: what the file holds on every backend, with faults, on Ctrl+C.

Every trace is parsed and checked the way Perfetto needs it (every track named, spans
nested per track) and the way a reader relies on it: each input position is in exactly
one chunk span whose outcome is "ok" or "error" (positions a span lists as ``retried``
are decided by a later attempt), unless its own task crashed or timed out.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import workpool
from conftest import left_to_the_cycle_collector, wait_for
from faults import crash_on, fail_first_try, hang_on, sleep_then_pid
from helpers import add, fail_on, square, where
from trace_checks import (
    assert_each_position_once,
    assert_well_formed,
    instants,
    read_trace,
    spans,
    track_names,
    worker_tracks,
)
from workpool.checkpoint import summary as checkpoint_summary
from workpool.cli import main
from workpool.oneshot import INLINE

TESTS = Path(__file__).resolve().parent


# --- every way of calling, every backend ---------------------------------------------


def call_map(fn: Callable[..., Any], n: int, **options: Any) -> list[Any]:
    return workpool.map(fn, range(n), **options)


def call_imap(fn: Callable[..., Any], n: int, **options: Any) -> list[Any]:
    return list(workpool.imap(fn, range(n), **options))


def call_starmap(fn: Callable[..., Any], n: int, **options: Any) -> list[Any]:
    return workpool.starmap(add, [(i, i * i - i) for i in range(n)], **options)


def pool_call(method: str) -> Callable[..., list[Any]]:
    def call(fn: Callable[..., Any], n: int, *, backend: str, **options: Any) -> list[Any]:
        with workpool.Pool(2, backend=backend) as pool:
            if method == "starmap":
                return list(pool.starmap(add, [(i, i * i - i) for i in range(n)], **options))
            if method == "imap":
                return list(pool.imap(fn, range(n), **options))
            return list(pool.map(fn, range(n), **options))

    return call


CALLS = {
    "map": call_map,
    "imap": call_imap,
    "starmap": call_starmap,
    "Pool.map": pool_call("map"),
    "Pool.imap": pool_call("imap"),
    "Pool.starmap": pool_call("starmap"),
}


@pytest.mark.parametrize("how", list(CALLS))
def test_every_position_is_in_exactly_one_result_span(
    backend: str, how: str, tmp_path: Path
) -> None:
    path = tmp_path / "run.json"
    n = 3000
    results = CALLS[how](square, n, backend=backend, trace=path)
    assert results == [i * i for i in range(n)]
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, n)
    assert worker_tracks(data)
    assert data["otherData"]["partial"] is False
    for chunk in spans(data, "chunk"):
        assert chunk["args"]["attempt"] == 0
        assert chunk["args"]["outcome"] == "ok"


def test_worker_tracks_have_their_phases_and_the_caller_its_own(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    workpool.map(square, range(5000), backend="process", workers=2, trace=path)
    data = read_trace(path)
    names = set(track_names(data).values())
    assert sum(name.startswith("worker process") for name in names) >= 2
    assert {"caller: input", "caller: results", "call"} <= names
    span_names = {s["name"] for s in spans(data)}
    assert {"chunk", "run", "feed", "deliver", "pool start", "worker start"} <= span_names
    assert "pickle" in span_names  # the process engine pickles in the caller


def worker_starts(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans(data, "startup") if s["name"] == "worker start"]


def test_a_pool_started_earlier_is_said_so_at_the_call_start(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with workpool.Pool(2, backend="process") as pool:

        def both_up() -> bool:
            return len({pid for pid, _ in pool.map(where, range(20), chunksize=1)}) == 2

        assert wait_for(both_up)
        list(pool.map(square, range(100), trace=path))
    data = read_trace(path)
    assert_well_formed(data)
    (before,) = instants(data, "pool started before the call")
    assert before["ts"] == min(e["ts"] for e in data["traceEvents"] if "ts" in e)
    assert track_names(data)[(before["pid"], before["tid"])] == "caller: pool"
    args = before["args"]
    assert args["backend"] == "process" and args["workers"] == 2
    assert args["started_ms_before"] >= args["last_worker_ready_ms_before"] > 0
    assert not worker_starts(data)  # they all started before the call


def test_workers_starting_during_a_pool_call_are_on_its_timeline(tmp_path: Path) -> None:
    first, replaced = tmp_path / "first.json", tmp_path / "replaced.json"
    with workpool.Pool(2, backend="thread") as pool:  # threads start at their first chunk
        list(pool.map(square, range(100), trace=first))
    with workpool.Pool(1, backend="process", max_tasks_per_worker=2) as pool:
        list(pool.map(square, range(8), chunksize=1, trace=replaced))  # a new worker every 2
    started: dict[Path, set[str]] = {}
    for path in (first, replaced):
        data = read_trace(path)
        assert_well_formed(data)
        assert instants(data, "pool started before the call")
        starts = worker_starts(data)
        assert starts, path.name
        names = track_names(data)
        started[path] = {names[(s["pid"], s["tid"])] for s in starts}
    assert started[first] <= worker_tracks(read_trace(first))  # each at its first chunk
    # Workers 2, 3 and 4 each ran two of the call's chunks, on the tracks they started
    # on. The 5th, replacing the 4th as the call ends, may start in time to be on its
    # timeline, with nothing of it to run.
    assert len(started[replaced] & worker_tracks(read_trace(replaced))) >= 3


def test_auto_traces_the_items_it_measured_inline(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    n = 20_000
    assert workpool.map(square, range(n), trace=path) == [i * i for i in range(n)]
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, n)


def test_auto_traces_its_inline_retries_like_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    marks = tmp_path / "marks"
    marks.mkdir()
    n = 2000
    results = workpool.map(fail_first_try(marks), range(n), retries=1, trace=path)
    assert results == [i * i for i in range(n)]
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, n)
    assert sorted(r["args"]["position"] for r in instants(data, "retry")) == list(range(n))
    inline = [s for s in spans(data, "chunk") if track_names(data)[(s["pid"], s["tid"])] == INLINE]
    assert inline and inline[0]["args"]["start"] == 0  # the items auto measured come first


def test_an_error_is_an_error_span(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    results = workpool.map(
        fail_on(7), range(50), backend=backend, trace=path, return_exceptions=True
    )
    assert isinstance(results[7], ValueError)
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, 50)
    (failed,) = [s for s in spans(data, "chunk") if s["args"]["outcome"] == "error"]
    assert failed["args"]["start"] <= 7 < failed["args"]["start"] + failed["args"]["count"]


def test_a_retry_is_marked_and_the_retried_position_counted_once(
    backend: str, tmp_path: Path
) -> None:
    path = tmp_path / "run.json"
    marks = tmp_path / "marks"
    marks.mkdir()
    n = 20
    results = workpool.map(
        fail_first_try(marks), range(n), backend=backend, retries=1, chunksize=5, trace=path
    )
    assert results == [i * i for i in range(n)]
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, n)
    retries = instants(data, "retry")
    assert sorted(r["args"]["position"] for r in retries) == list(range(n))
    assert all("ConnectionError" in r["args"]["reason"] for r in retries)
    assert {s["args"]["attempt"] for s in spans(data, "chunk")} == {0, 1}


def test_a_crash_is_marked_and_its_position_in_no_result_span(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    n = 40
    results = workpool.map(
        crash_on(13),
        range(n),
        backend="process",
        workers=2,
        chunksize=4,
        trace=path,
        return_exceptions=True,
    )
    assert isinstance(results[13], workpool.WorkerCrashed)
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, n, except_=frozenset({13}))
    # The chunk of four crashed first with no item known to be running; its items then
    # ran one at a time, and the crash of the culprit alone names it.
    crashes = instants(data, "crash")
    assert {c["args"]["position"] for c in crashes} <= {None, 13}
    (culprit,) = [c for c in crashes if c["args"]["position"] == 13]
    assert "exited with code 7" in culprit["args"]["reason"]
    crashed = [s for s in spans(data, "chunk") if s["args"]["outcome"] == "crashed"]
    assert crashed and crashed[0]["args"]["start"] <= 13
    # The crash is on the dead worker's track, which a fresh worker's track follows.
    assert sum(name.startswith("worker process") for name in worker_tracks(data)) >= 2


def test_a_timeout_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    results = workpool.map(
        hang_on(2, 60),
        range(6),
        backend="process",
        workers=2,
        task_timeout=0.5,
        trace=path,
        return_exceptions=True,
    )
    assert isinstance(results[2], workpool.TaskTimeout)
    data = read_trace(path)
    assert_well_formed(data)
    assert_each_position_once(data, 6, except_=frozenset({2}))
    (timeout,) = instants(data, "timeout")
    assert timeout["args"]["position"] == 2
    assert "task_timeout=0.5" in timeout["args"]["reason"]
    assert any(s["args"]["outcome"] == "timeout" for s in spans(data, "chunk"))


def test_the_trace_is_written_when_the_call_fails(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(ValueError, match="bad input 5"):
        workpool.map(fail_on(5), range(100), backend=backend, chunksize=10, trace=path)
    data = read_trace(path)
    assert_well_formed(data)
    assert data["otherData"]["partial"] is True
    assert "ValueError" in data["otherData"]["reason"]
    assert any(s["args"]["outcome"] == "error" for s in spans(data, "chunk"))


def test_the_trace_is_written_when_imap_is_abandoned(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    results = workpool.imap(square, range(100_000), backend="thread", trace=path)
    assert next(results) == 0
    results.close()
    data = read_trace(path)
    assert data["otherData"]["partial"] is True
    assert "stopped" in data["otherData"]["reason"]


def test_the_trace_is_written_on_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    marker = tmp_path / "started"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal, sys
            sys.path.insert(0, {str(TESTS)!r})
            signal.signal(signal.SIGINT, signal.default_int_handler)
            import workpool
            from faults import announce_then_sleep
            workpool.map(announce_then_sleep, [{str(marker)!r}] * 20, [30] * 20,
                         backend="process", workers=2, chunksize=1, trace={str(path)!r})
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(marker.exists, timeout=30)
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=20)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.communicate()
    assert "KeyboardInterrupt" in err
    data = read_trace(path)
    assert_well_formed(data)
    assert data["otherData"]["partial"] is True
    assert "KeyboardInterrupt" in data["otherData"]["reason"]
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_a_call_killed_outright_leaves_its_timeline_so_far(tmp_path: Path) -> None:
    # SIGKILL runs no code: only a file written while the call ran can survive it.
    path = tmp_path / "run.json"
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            import workpool

            def nap(x):
                time.sleep(0.02)
                return x

            if __name__ == "__main__":
                workpool.map(nap, range(100_000), backend="process", workers=2, chunksize=1,
                             trace={str(path)!r})
            """
        )
    )
    program = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        assert wait_for(path.exists, timeout=30)  # rewritten after the call's first second
        os.killpg(program.pid, signal.SIGKILL)
    finally:
        if program.poll() is None:
            os.killpg(program.pid, signal.SIGKILL)
        program.wait()
    data = read_trace(path)
    assert_well_formed(data)
    assert data["otherData"]["partial"] is True
    assert "still running" in data["otherData"]["reason"]
    assert len(spans(data, "chunk")) >= 10  # a second of 20 ms tasks on 2 workers
    summary = subprocess.run(
        [sys.executable, "-m", "workpool", "trace", "summary", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert summary.returncode == 0, summary.stderr
    assert "written while the call still ran" in " ".join(summary.stdout.split())


def test_a_long_call_ends_with_its_whole_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rewritten while it ran, the file must end as the final write left it.
    from workpool.timeline import recorder, snapshots

    monkeypatch.setattr(recorder, "FIRST_AFTER", 0.1)  # rewritten at 0.1, 0.2, 0.4, 0.8 s
    monkeypatch.setattr(snapshots, "FIRST_AFTER", 0.1)
    path = tmp_path / "run.json"
    results = workpool.map(sleep_then_pid, [0.03] * 60, backend="thread", workers=2, trace=path)
    assert results == [os.getpid()] * 60  # 0.9 s
    data = read_trace(path)
    assert_well_formed(data)
    assert data["otherData"]["partial"] is False
    assert_each_position_once(data, 60)
    assert [p for p in os.listdir(tmp_path) if p != "run.json"] == []


def test_a_200k_tiny_map_trace_is_small(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    workpool.map(square, range(200_000), backend="process", trace=path)
    assert path.stat().st_size < 20_000_000
    assert_each_position_once(read_trace(path), 200_000)


def test_a_bad_trace_argument_fails_before_any_work(tmp_path: Path) -> None:
    calls: list[int] = []
    with pytest.raises(TypeError, match="trace"):
        workpool.map(calls.append, range(3), backend="serial", trace=42)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        workpool.map(calls.append, range(3), backend="serial", trace=tmp_path / "no" / "t.json")
    assert calls == []


def test_a_trace_never_replaces_a_checkpoint(tmp_path: Path) -> None:
    # trace= and checkpoint= swapped on a later run: the timeline written at the end
    # would have replaced a journal of results. Any SQLite file is refused, untouched.
    journal = tmp_path / "run.ckpt"
    workpool.map(square, range(50), backend="thread", checkpoint=str(journal))
    before = journal.read_bytes()
    calls: list[int] = []
    with pytest.raises(ValueError, match="SQLite") as info:
        workpool.map(calls.append, range(3), backend="serial", trace=journal)
    assert str(journal) in str(info.value)
    assert calls == []
    assert journal.read_bytes() == before


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory no file can be created in, whoever runs the test (root too)."""
    directory = tmp_path / "locked"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available to make a directory unwritable for root")
    try:
        yield directory
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def test_a_trace_that_cannot_be_written_fails_before_any_work(
    unwritable_directory: Path, tmp_path: Path
) -> None:
    calls: list[int] = []
    with pytest.raises(PermissionError, match="cannot be written"):
        workpool.map(
            calls.append, range(3), backend="serial", trace=unwritable_directory / "t.json"
        )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        workpool.map(calls.append, range(3), backend="serial", trace=fifo)
    assert calls == []
    assert fifo.is_fifo()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("how", ["map", "imap", "Pool.map"])
def test_a_directory_whose_bits_allow_writing_but_takes_no_file_fails_before_any_work(
    how: str,
) -> None:
    # /proc takes no new file, and as root its permission bits seem to allow one: only
    # making a file tells, and the timeline must not be lost after all the work.
    calls: list[int] = []
    with pytest.raises(OSError, match=r"trace='/proc/t\.json': the directory '/proc' cannot"):
        if how == "map":
            workpool.map(calls.append, range(3), backend="serial", trace="/proc/t.json")
        elif how == "imap":
            workpool.imap(calls.append, range(3), backend="serial", trace="/proc/t.json")
        else:
            with workpool.Pool(1, backend="serial") as pool:
                pool.map(calls.append, range(3), trace="/proc/t.json")
    assert calls == []


def restored_positions(data: dict[str, Any]) -> Counter[int]:
    """How many "checkpoint" spans hold each position (results read from the journal)."""
    counts: Counter[int] = Counter()
    for span in spans(data, "checkpoint"):
        counts.update(range(span["args"]["start"], span["args"]["start"] + span["args"]["count"]))
    return counts


@pytest.mark.parametrize("how", ["map", "Pool.imap"])
def test_a_resumed_call_shows_what_came_from_the_checkpoint(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Positions whose results the checkpoint held ran in no chunk of this call: the
    # trace must still account for them, else a resumed call's trace looks like one
    # that lost items, and a fully resumed one like a call that did nothing.
    checkpoint = str(tmp_path / "run.ckpt")
    options = {"backend": "thread", "checkpoint": checkpoint, "chunksize": 10}
    workpool.map(square, range(120), **options)  # a longer input continues from here
    done = {
        position
        for low, high in checkpoint_summary(checkpoint).ranges
        for position in range(low, high + 1)
    }
    assert done == set(range(120))
    for trace in (tmp_path / "resumed.json", tmp_path / "finished.json"):
        assert CALLS[how](square, 200, trace=trace, **options) == [x * x for x in range(200)]
        data = read_trace(trace)
        assert_well_formed(data)
        assert restored_positions(data) == Counter(done)
        assert_each_position_once(data, 200, except_=frozenset(done))
        assert main(["trace", "summary", str(trace)]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"The results of {len(done)} items came from the checkpoint" in out
        done = set(range(200))  # the second call finds every result in the journal


def test_summary_and_plot_read_a_real_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    workpool.map(square, range(20_000), backend="process", workers=2, trace=path)
    assert main(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "worker process" in out and "The 2 workers spent" in out
    pytest.importorskip("matplotlib")
    png = tmp_path / "run.png"
    assert main(["trace", "plot", str(path), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_a_trace_named_gz_is_compressed_and_read_back(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json.GZ"
    assert workpool.map(square, range(300), backend=backend, workers=2, trace=path) == [
        x * x for x in range(300)
    ]
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert_well_formed(data)
    assert_each_position_once(data, 300)
    assert main(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"The [12] workers? spent", " ".join(out.split()))
    plain = tmp_path / "renamed.json"  # a gzip file read by its content, not its name
    path.rename(plain)
    assert main(["trace", "summary", str(plain)]) == 0


def test_a_traced_call_leaves_its_spans_to_no_collection_of_cycles(tmp_path: Path) -> None:
    # The recorder held the writer that rewrites the file while the call runs, and the
    # writer the recorder: every traced call's spans waited for a collection of cycles.
    path = str(tmp_path / "run.json")

    def traced_call() -> None:
        workpool.map(square, range(50), backend="process", workers=2, trace=path)

    traced_call()  # imports done, the zygote started
    assert left_to_the_cycle_collector(traced_call) == []
