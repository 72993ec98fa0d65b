"""The timeline's own parts on recordings made by hand: recorder, writer, summary, plot, CLI.

The calls that write traces are tested in test_trace_calls.py; here every timestamp
is chosen by the test, so what the writer and the summary make of it is known exactly.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import png_size, run_cli_without_matplotlib
from trace_checks import assert_spans_nest, assert_well_formed, read_trace, spans, track_names
from workpool.cli import main
from workpool.clock import clock_offset
from workpool.timeline import Recorder, finish
from workpool.timeline.reading import TraceFileError, Track, load
from workpool.timeline.summary import explain, summarize

MS = 1_000_000  # nanoseconds


def recorder_with_workers(
    path: Path, *, workers: int = 2, startup_ms: int = 10
) -> tuple[Recorder, list[int]]:
    recorder = Recorder(path, backend="process", workers=workers)
    t0 = recorder.begun_ns
    tracks = []
    for i in range(workers):
        track = recorder.track(("process", 100 + i), f"worker {i}", "worker processes")
        recorder.span(track, "worker start", "startup", t0, t0 + startup_ms * MS)
        tracks.append(track)
    return recorder, tracks


def steady_chunks(
    recorder: Recorder, tracks: list[int], *, chunks: int, chunk_ms: int, ship_ms: int = 0
) -> int:
    """Chunks of 10 items back to back on each worker, from 10 ms on; returns the end (ns)."""
    t0 = recorder.begun_ns
    position, end = 0, t0
    for k in range(chunks):
        for track in tracks:
            begin = t0 + (10 + k * chunk_ms) * MS
            end = begin + chunk_ms * MS
            times = (begin, begin + ship_ms * MS, end - ship_ms * MS, end)
            recorder.chunk(track, position, 10, 0, "ok", times)
            position += 10
    return end


# --- the recorder and the writer --------------------------------------------------


def test_importing_workpool_does_not_import_tracing() -> None:
    code = (
        "import sys, workpool\n"
        "assert 'workpool.timeline' not in sys.modules\n"
        "assert 'json' not in sys.modules, 'json is imported by workpool'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_chunk_is_a_span_holding_receive_run_and_return(tmp_path: Path) -> None:
    recorder, (worker, _) = recorder_with_workers(tmp_path / "t.json")
    t = recorder.begun_ns + 20 * MS
    recorder.chunk(worker, 40, 8, 1, "error", (t, t + 1 * MS, t + 5 * MS, t + 7 * MS), errors=2)
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    (chunk,) = spans(data, "chunk")
    assert chunk["name"] == "chunk"
    assert chunk["args"] == {"start": 40, "count": 8, "attempt": 1, "outcome": "error", "errors": 2}
    assert chunk["dur"] == 7000  # microseconds
    inside = [e for e in spans(data) if e["tid"] == chunk["tid"] and e["cat"] != "startup"]
    phases = {e["name"]: (e["ts"] - chunk["ts"], e["dur"]) for e in inside if e is not chunk}
    assert phases == {"receive": (0, 1000), "run": (1000, 4000), "return": (5000, 2000)}
    assert_well_formed(data)


def test_every_track_and_group_is_named(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json")
    caller = recorder.track(("caller", "input"), "caller: input", recorder.caller_group)
    t = recorder.begun_ns
    recorder.span(caller, "feed", "caller", t + MS, t + 2 * MS)
    recorder.instant(workers[1], "crash", "fault", t + 3 * MS, {"position": 7, "reason": "SIGKILL"})
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    assert_well_formed(data)
    names = set(track_names(data).values())
    assert {"worker 0", "worker 1", "caller: input", "call"} <= names
    (crash,) = [e for e in data["traceEvents"] if e["ph"] == "i"]
    assert crash["name"] == "crash" and crash["args"] == {"position": 7, "reason": "SIGKILL"}
    assert track_names(data)[(crash["pid"], crash["tid"])] == "worker 1"
    # Workers of one group share a pid; the caller's tracks have another.
    pids = {name: pid for (pid, _), name in track_names(data).items()}
    assert pids["worker 0"] == pids["worker 1"] != pids["caller: input"] == pids["call"]


def test_phases_out_of_order_or_outside_their_chunk_are_clamped(tmp_path: Path) -> None:
    recorder, (worker, _) = recorder_with_workers(tmp_path / "t.json")
    t = recorder.begun_ns + 20 * MS
    # Running "began" before receiving and "ended" after returning: clocks read apart.
    recorder.chunk(worker, 0, 5, 0, "ok", (t, t - 2 * MS, t + 9 * MS, t + 6 * MS))
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    assert_spans_nest(data)
    (chunk,) = spans(data, "chunk")
    (run,) = [e for e in spans(data) if e["name"] == "run"]
    assert (run["ts"], run["dur"]) == (chunk["ts"], chunk["dur"])


def test_overlapping_spans_go_to_a_named_extra_lane(tmp_path: Path) -> None:
    recorder, (worker, _) = recorder_with_workers(tmp_path / "t.json")
    caller = recorder.track(("caller", "results"), "caller: results", recorder.caller_group)
    t = recorder.begun_ns + 20 * MS
    # Two chunks seen overlapping on one worker, and two caller spans that cross.
    recorder.chunk(worker, 0, 5, 0, "ok", (t, t + MS, t + 4 * MS, t + 5 * MS))
    recorder.chunk(worker, 5, 5, 0, "ok", (t + 3 * MS, t + 4 * MS, t + 7 * MS, t + 8 * MS))
    recorder.span(caller, "deliver", "caller", t, t + 4 * MS)
    recorder.span(caller, "deliver", "caller", t + 2 * MS, t + 6 * MS)
    # A span inside another is nested, not moved.
    recorder.span(caller, "deliver", "caller", t + MS, t + 2 * MS)
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    assert_well_formed(data)
    names = track_names(data)
    chunk_tracks = sorted(names[(e["pid"], e["tid"])] for e in spans(data, "chunk"))
    assert chunk_tracks == ["worker 0", "worker 0 (overlapping 1)"]
    deliver_tracks = sorted(
        names[(e["pid"], e["tid"])] for e in spans(data) if e["name"] == "deliver"
    )
    assert deliver_tracks == [
        "caller: results",
        "caller: results",
        "caller: results (overlapping 1)",
    ]
    # Read back, the lanes are one track again.
    worker_track = next(t for t in load(tmp_path / "t.json").tracks if t.name == "worker 0")
    assert len(worker_track.chunks()) == 2


def test_identical_and_touching_spans_stay_on_one_lane(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "t.json")
    track = recorder.track("t", "caller: input", recorder.caller_group)
    t = recorder.begun_ns
    for k in range(50):  # back to back: each ends where the next begins
        recorder.span(track, "feed", "caller", t + k * MS, t + (k + 1) * MS)
    recorder.span(track, "feed", "caller", t, t + MS)  # the same as the first
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    assert_spans_nest(data)
    assert set(track_names(data).values()) == {"caller: input", "call"}


def test_clock_offset_is_zero_for_a_shared_clock_and_the_midpoint_otherwise() -> None:
    assert clock_offset(1000, 1500, 2000) == 0  # the reading fits the round trip
    assert clock_offset(1000, 1000, 1000) == 0
    assert clock_offset(1000, 500, 2000) == 1000  # worker's clock 1000 ns behind
    assert clock_offset(1000, 9_000, 2000) == -7_500


def test_the_call_span_covers_the_call_and_carries_its_facts(tmp_path: Path) -> None:
    recorder, _ = recorder_with_workers(tmp_path / "t.json", startup_ms=0)
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    (call,) = spans(data, "call")
    assert call["args"] == {"backend": "process", "workers": 2}
    assert call["ts"] == 0
    assert abs(call["dur"] - data["otherData"]["wall_seconds"] * 1e6) <= 1
    assert data["otherData"]["call"] == {"backend": "process", "workers": 2}
    assert data["otherData"]["partial"] is False
    assert data["otherData"]["generator"].startswith("workpool ")


def test_a_partial_trace_says_so_and_why(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json")
    steady_chunks(recorder, workers, chunks=2, chunk_ms=2)
    finish(recorder, partial=True, reason="interrupted (KeyboardInterrupt)")
    other = read_trace(tmp_path / "t.json")["otherData"]
    assert other["partial"] is True
    assert other["reason"] == "interrupted (KeyboardInterrupt)"


def test_any_text_and_value_survives_the_round_trip(tmp_path: Path) -> None:
    odd = 'quote " backslash \\ newline \n tab \t bell \x07 é 漢 \U0001f600'
    recorder = Recorder(tmp_path / "t.json", function=odd, size=2**70, ratio=0.1, gone=None)
    recorder.facts.update(flags=[True, False], bad=float("nan"), nested={"k": (1, "two")})
    track = recorder.track("t", odd, odd)
    recorder.span(track, odd, odd, recorder.begun_ns, recorder.begun_ns + MS, {odd: odd})
    recorder.instant(track, "crash", "fault", recorder.begun_ns, {"reason": odd})
    finish(recorder)
    data = read_trace(tmp_path / "t.json")
    assert data["otherData"]["call"] == {
        "function": odd,
        "size": 2**70,
        "ratio": 0.1,
        "gone": None,
        "flags": [True, False],
        "bad": None,
        "nested": {"k": [1, "two"]},
    }
    (span,) = [e for e in spans(data) if e["cat"] == odd]
    assert span["name"] == odd and span["args"] == {odd: odd}
    assert odd in track_names(data).values()


def test_finish_writes_once(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "t.json")
    finish(recorder, partial=True, reason="first")
    finish(recorder)
    assert read_trace(tmp_path / "t.json")["otherData"]["reason"] == "first"


def test_writing_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("an older trace")
    recorder, workers = recorder_with_workers(path)
    steady_chunks(recorder, workers, chunks=2, chunk_ms=2)
    finish(recorder)
    read_trace(path)
    assert os.listdir(tmp_path) == ["t.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("cannot describe this")

    path = tmp_path / "t.json"
    path.write_text("an older trace")
    recorder, workers = recorder_with_workers(path)
    steady_chunks(recorder, workers, chunks=2, chunk_ms=2)
    recorder.facts["odd"] = Unprintable()  # fails the writer after it has begun
    with pytest.raises(RuntimeError, match="cannot describe this"):
        finish(recorder)
    assert path.read_text() == "an older trace"
    assert os.listdir(tmp_path) == ["t.json"]


def test_a_trace_path_that_cannot_be_written_fails_before_the_work(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Recorder(tmp_path / "missing" / "t.json")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        Recorder(tmp_path)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(NotADirectoryError, match=r"notes\.txt' is not a directory"):
        Recorder(tmp_path / "notes.txt" / "t.json")


def test_a_chunk_costs_a_few_hundred_bytes(tmp_path: Path) -> None:
    # With its caller's spans; the 20 MB budget for a 200 k-item map is spent per chunk.
    recorder, workers = recorder_with_workers(tmp_path / "t.json")
    caller = recorder.track("input", "caller: input", recorder.caller_group)
    t = recorder.begun_ns
    for k in range(5000):
        recorder.span(caller, "feed", "caller", t + k * 10_000, t + k * 10_000 + 5000)
    steady_chunks(recorder, workers, chunks=2500, chunk_ms=1, ship_ms=0)
    finish(recorder)
    assert (tmp_path / "t.json").stat().st_size < 5000 * 500


# --- the summary ----------------------------------------------------------------


def summary_of(recorder: Recorder) -> Any:
    finish(recorder)
    return summarize(load(Path(recorder.path)))


def test_summary_shares_per_worker(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=10)
    # From 10 ms: worker 0 busy 40 ms, worker 1 busy 20 ms then idle; call lasts 50 ms.
    t0 = recorder.begun_ns
    for k in range(4):
        begin = t0 + (10 + 10 * k) * MS
        recorder.chunk(
            workers[0], k * 10, 10, 0, "ok", (begin, begin + MS, begin + 9 * MS, begin + 10 * MS)
        )
    for k in range(2):
        begin = t0 + (10 + 10 * k) * MS
        recorder.chunk(
            workers[1],
            40 + k * 10,
            10,
            0,
            "ok",
            (begin, begin + MS, begin + 9 * MS, begin + 10 * MS),
        )
    summary = summary_of(recorder)
    assert summary.wall == pytest.approx(0.050, abs=2e-3)  # from the first start to the last end
    wall = summary.wall
    shares = {w.name: (w.chunks, w.items, w.startup, w.busy, w.idle) for w in summary.workers}
    assert shares["worker 0"] == (
        4,
        40,
        pytest.approx(0.010),
        pytest.approx(0.040),
        pytest.approx(wall - 0.050, abs=1e-6),
    )
    assert shares["worker 1"] == (
        2,
        20,
        pytest.approx(0.010),
        pytest.approx(0.020),
        pytest.approx(wall - 0.030, abs=1e-6),
    )
    assert summary.run == pytest.approx(6 * 0.008)
    assert summary.receive == pytest.approx(6 * 0.001)
    assert summary.returning == pytest.approx(6 * 0.001)


def test_summary_names_a_straggler(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=1)
    t0 = recorder.begun_ns
    for k in range(10):
        begin = t0 + (10 + 2 * k) * MS
        recorder.chunk(
            workers[0], k * 10, 10, 0, "ok", (begin, begin, begin + 2 * MS, begin + 2 * MS)
        )
    begin = t0 + 10 * MS  # worker 1's one chunk takes 100 ms, 50 times the others' pace
    recorder.chunk(workers[1], 100, 10, 0, "ok", (begin, begin, begin + 100 * MS, begin + 100 * MS))
    summary = summary_of(recorder)
    slowest = summary.stragglers[0]
    assert (slowest.worker, slowest.start, slowest.items) == ("worker 1", 100, 10)
    assert slowest.per_item_ratio == pytest.approx(50, rel=0.01)
    assert "waiting for the slowest chunks" in explain(summary)
    assert "50x the median" in explain(summary)
    assert "a smaller chunksize spreads it better" in explain(summary)  # 10 items in it


@pytest.mark.parametrize("ordered", [True, False])
def test_summary_names_a_worker_left_idle_behind_a_straggler(tmp_path: Path, ordered: bool) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=1)
    recorder.facts["ordered"] = ordered
    t0 = recorder.begun_ns
    begin = t0 + 2 * MS  # worker 0: one slow item, 100 ms
    recorder.chunk(workers[0], 10, 1, 0, "ok", (begin, begin, begin + 100 * MS, begin + 100 * MS))
    for k in range(20):  # worker 1: ten items of 2 ms, nothing for 80 ms, then ten more
        begin = t0 + (2 + 2 * k + (80 if k >= 10 else 0)) * MS
        position = k if k < 10 else k + 1
        recorder.chunk(
            workers[1], position, 1, 0, "ok", (begin, begin, begin + 2 * MS, begin + 2 * MS)
        )
    text = explain(summary_of(recorder))
    assert "The slowest chunk (positions 10-10, on worker 0)" in text
    assert "Worker 1 was idle" in text
    assert ("ordered=False keeps the other workers fed" in text) is ordered


def test_summary_blames_start_up_when_it_dominates(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=80)
    t0 = recorder.begun_ns
    for track in workers:
        recorder.chunk(
            track, 0, 1, 0, "ok", (t0 + 80 * MS, t0 + 80 * MS, t0 + 81 * MS, t0 + 81 * MS)
        )
    assert "Starting the workers was the largest loss" in explain(summary_of(recorder))


def test_summary_counts_the_pools_start_as_start_up(tmp_path: Path) -> None:
    # A one-shot call starts its pool first (processes forked, a Dask cluster started):
    # no worker can run a chunk before it is done, so that time is no worker's idleness.
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=0)
    t0 = recorder.begun_ns
    recorder.span(recorder.caller_track("pool"), "pool start", "startup", t0, t0 + 80 * MS)
    for track in workers:
        recorder.span(track, "worker start", "startup", t0 + 80 * MS, t0 + 81 * MS)
        recorder.chunk(
            track, 0, 1, 0, "ok", (t0 + 81 * MS, t0 + 81 * MS, t0 + 82 * MS, t0 + 82 * MS)
        )
    summary = summary_of(recorder)
    assert all(worker.startup >= 0.080 for worker in summary.workers), summary.workers
    assert "Starting the workers was the largest loss" in explain(summary)


def test_summary_blames_shipping_when_it_dominates_busy_workers(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=1)
    steady_chunks(recorder, workers, chunks=50, chunk_ms=10, ship_ms=3)
    assert "went to receiving inputs and returning results" in explain(summary_of(recorder))


def test_summary_of_one_chunk_per_worker_does_not_ask_for_larger_chunks(tmp_path: Path) -> None:
    # A call of one item each, mostly idle: there was no wait between chunks to shorten.
    recorder, workers = recorder_with_workers(tmp_path / "t.json", startup_ms=0)
    t0 = recorder.begun_ns
    for track in workers:
        recorder.chunk(track, 0, 1, 0, "ok", (t0 + 5 * MS, t0 + 5 * MS, t0 + 6 * MS, t0 + 6 * MS))
    recorder.span(recorder.caller_track("output"), "deliver", "caller", t0, t0 + 30 * MS)
    text = explain(summary_of(recorder))
    assert "too small for a pool" in text
    assert "chunksize" not in text


def test_summary_of_workers_that_ran_no_chunk_gives_no_advice(tmp_path: Path) -> None:
    recorder, _ = recorder_with_workers(tmp_path / "t.json", startup_ms=5)  # an empty map
    assert explain(summary_of(recorder)).startswith("No worker ran a chunk")


def test_summary_counts_faults_and_notes_a_partial_trace(tmp_path: Path) -> None:
    recorder, workers = recorder_with_workers(tmp_path / "t.json")
    steady_chunks(recorder, workers, chunks=2, chunk_ms=2)
    t = recorder.begun_ns + 12 * MS
    recorder.instant(workers[0], "crash", "fault", t, {"position": 3, "reason": "SIGKILL"})
    recorder.instant(workers[1], "timeout", "fault", t, {"position": 4, "reason": "1 s"})
    recorder.instant(workers[1], "retry", "fault", t, {"position": 3, "reason": "crash"})
    finish(recorder, partial=True, reason="interrupted (KeyboardInterrupt)")
    text = explain(summarize(load(tmp_path / "t.json")))
    assert "1 crash, 1 timeout, 1 retry are marked" in text
    assert "ended early (interrupted (KeyboardInterrupt))" in text


# --- the command line -----------------------------------------------------------


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    recorder, workers = recorder_with_workers(tmp_path / "run.json")
    caller = recorder.track("input", "caller: input", recorder.caller_group)
    t = recorder.begun_ns
    recorder.span(caller, "feed", "caller", t + 9 * MS, t + 10 * MS)
    recorder.span(caller, "pickle", "serialize", t + 9 * MS, t + 9 * MS + 500_000)
    steady_chunks(recorder, workers, chunks=20, chunk_ms=3, ship_ms=1)
    recorder.instant(workers[0], "crash", "fault", t + 20 * MS, {"position": 3, "reason": "x"})
    finish(recorder)
    return tmp_path / "run.json"


def test_cli_summary_prints_the_shares_and_what_they_mean(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "summary", str(trace_file)]) == 0
    out = capsys.readouterr().out
    for expected in ("worker 0", "worker 1", "start-up", "busy", "idle", "slowest chunks"):
        assert expected in out
    assert "pickling" in out and "1 crash is marked" in out
    assert "The 2 workers spent" in out


def test_the_summary_tells_pickling_the_input_from_unpickling_the_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both are the caller's "serialize" spans: counted together, a call returning large
    # results printed "feeding the input 13.8 ms (pickling 546.5 ms)", pickling that was
    # mostly the results' unpickling, as a part of feeding forty times its size.
    recorder, workers = recorder_with_workers(tmp_path / "run.json")
    feeding = recorder.track("input", "caller: input", recorder.caller_group)
    supervisor = recorder.caller_track("supervisor")
    t = recorder.begun_ns
    recorder.span(feeding, "feed", "caller", t + 9 * MS, t + 11 * MS)
    recorder.span(feeding, "pickle", "serialize", t + 9 * MS, t + 10 * MS)
    steady_chunks(recorder, workers, chunks=4, chunk_ms=3)
    recorder.span(supervisor, "unpickle", "serialize", t + 20 * MS, t + 50 * MS)
    finish(recorder)
    summary = summarize(load(tmp_path / "run.json"))
    assert summary.pickle == pytest.approx(0.001)
    assert summary.unpickle == pytest.approx(0.030)
    assert main(["trace", "summary", str(tmp_path / "run.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "feeding the input 2.0 ms (pickling 1000 µs), unpickling results 30.0 ms" in out


def test_cli_plot_draws_a_png(trace_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run.png"
    assert main(["trace", "plot", str(trace_file), "-o", str(out)]) == 0
    width, height = png_size(out)
    assert width >= 800 and height >= 200
    assert out.stat().st_size > 10_000


def test_plot_reads_each_tracks_kind_once_not_once_per_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's supervisor track holds a pickling span for every chunk; telling a
    # worker's track from a caller's scans a track's spans, and doing that for each of
    # its spans made the plot of a 50,000-chunk process trace run for minutes.
    pytest.importorskip("matplotlib")
    path = tmp_path / "run.json"
    recorder, tracks = recorder_with_workers(path)
    steady_chunks(recorder, tracks, chunks=5, chunk_ms=10)
    supervisor = recorder.caller_track("supervisor")
    t0 = recorder.begun_ns
    for k in range(400):
        begin = t0 + 10 * MS + k * MS // 10
        recorder.span(supervisor, "pickle", "serialize", begin, begin + MS // 20)
    finish(recorder)
    looked: list[Track] = []
    kind = Track.is_worker.fget
    assert kind is not None
    monkeypatch.setattr(Track, "is_worker", property(lambda t: looked.append(t) or kind(t)))
    out = tmp_path / "run.png"
    assert main(["trace", "plot", str(path), "-o", str(out)]) == 0
    assert out.exists()
    tracks_drawn = len(load(path).tracks)
    assert len(looked) <= 4 * tracks_drawn


def test_cli_plot_without_matplotlib_names_the_extra(trace_file: Path, tmp_path: Path) -> None:
    args = ["trace", "plot", str(trace_file), "-o", str(tmp_path / "x.png")]
    result = run_cli_without_matplotlib(args)
    assert result.returncode == 2
    assert "pip install 'workpool[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("run.txt", "give a file name ending in .png"),
        ("folder", "that is a directory"),
        ("missing/run.png", "there is no directory"),
        ("notes.txt/run.png", "notes.txt is a file, not a directory"),
        ("-", "-o -: give a file name; the drawing is written to a file"),
    ],
)
def test_cli_plot_refuses_an_output_it_cannot_write(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("")
    before = sorted(tmp_path.iterdir())
    output = name if name == "-" else str(tmp_path / name)
    assert main(["trace", "plot", str(trace_file), "-o", output]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before  # nothing drawn anywhere


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ('{"traceEvents": [{"ph": "X", "ts": 1', "is not valid JSON"),
        ('{"events": []}', "not a Chrome trace"),
        ('{"traceEvents": [{"ph": "X", "ts": "soon", "dur": 1}]}', "event 0 is not a valid"),
        ('{"traceEvents": []}', "holds no spans"),
        # Other tools' Chrome traces: complete events, or begin/end pairs.
        (
            '{"traceEvents": [{"name": "Layout", "ph": "X", "ts": 0, "dur": 9, "pid": 1, '
            '"tid": 1}]}',
            "not a timeline workpool wrote",
        ),
        (
            '[{"name": "f", "ph": "B", "ts": 0, "pid": 1, "tid": 1}, '
            '{"name": "f", "ph": "E", "ts": 5, "pid": 1, "tid": 1}]',
            "not a timeline workpool wrote",
        ),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": 1, "tid": {}}]}', "'tid' is {}"),
        (b"\xff\xfe not text", "not UTF-8"),
        ("[" * 100_000, "nested too deeply"),
        (gzip.compress(b'{"traceEvents": []}')[:12], "gzip-compressed but cannot be"),
    ],
)
@pytest.mark.parametrize("action", ["summary", "plot"])
def test_cli_names_a_missing_or_broken_file_without_a_traceback(
    tmp_path: Path, content: str | bytes | None, message: str, action: str
) -> None:
    path = tmp_path / "broken.json"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    extra = ["-o", str(tmp_path / "x.png")] if action == "plot" else []
    result = subprocess.run(
        [sys.executable, "-m", "workpool.cli", "trace", action, str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("action", ["summary", "plot"])
def test_cli_reads_chunk_spans_whose_args_are_not_numbers(
    tmp_path: Path, action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trace edited by hand or written by another tool: the chunks' args hold
    # anything; what they do not say is shown as unknown, not raised.
    path = tmp_path / "foreign.json"
    chunk = {"ph": "X", "cat": "chunk", "name": "chunk", "pid": 1, "tid": 1}
    path.write_text(
        '{"traceEvents": ['
        + ", ".join(
            [
                '{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "w"}}',
                *(
                    json.dumps(chunk | {"ts": ts, "dur": dur, "args": args})
                    for ts, dur, args in [
                        (0, 1_000, {"start": "x", "count": None, "outcome": 5}),
                        (1_000, 1_000, {"start": 1.5, "count": True}),
                        (2_000, 90_000, {"start": [], "count": "many"}),
                    ]
                ),
            ]
        )
        + "]}"
    )
    extra = ["-o", str(tmp_path / "x.png")] if action == "plot" else []
    if action == "plot":
        pytest.importorskip("matplotlib")
    assert main(["trace", action, str(path), *extra]) == 0
    out = capsys.readouterr().out
    if action == "summary":
        assert "positions ?" in out


def test_load_rejects_what_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("[1, 2]")
    with pytest.raises(TraceFileError, match="event 0 is not a valid trace event"):
        load(path)
