"""Checks every trace file must pass, whoever wrote it: what Perfetto needs to show it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def read_trace(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data["traceEvents"], list)
    return data  # type: ignore[no-any-return]


def spans(data: dict[str, Any], category: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in data["traceEvents"]
        if e["ph"] == "X" and (category is None or e["cat"] == category)
    ]


def track_names(data: dict[str, Any]) -> dict[tuple[int, int], str]:
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def assert_every_track_named(data: dict[str, Any]) -> None:
    """Every track with an event has a thread_name, every group a process_name."""
    threads = track_names(data)
    processes = {
        e["pid"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name" and e["args"]["name"]
    }
    for event in data["traceEvents"]:
        if event["ph"] in ("X", "i"):
            assert threads.get((event["pid"], event["tid"])), f"unnamed track: {event}"
            assert event["pid"] in processes, f"unnamed group: {event}"


def assert_spans_nest(data: dict[str, Any]) -> None:
    """On each track, any two spans are disjoint or one holds the other."""
    by_track: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for event in spans(data):
        assert isinstance(event["ts"], int) and isinstance(event["dur"], int), event
        assert event["dur"] >= 0, event
        by_track[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
    for track, intervals in by_track.items():
        open_ends: list[int] = []
        for begin, end in sorted(intervals, key=lambda i: (i[0], -i[1])):
            while open_ends and open_ends[-1] <= begin:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], (
                f"span [{begin}, {end}) overlaps its neighbour on track {track} "
                f"({track_names(data).get(track)})"
            )
            open_ends.append(end)


def assert_well_formed(data: dict[str, Any]) -> None:
    assert_every_track_named(data)
    assert_spans_nest(data)


def result_positions(data: dict[str, Any]) -> Counter[int]:
    """How many ok/error chunk spans hold each position (retried positions excluded)."""
    counts: Counter[int] = Counter()
    for span in spans(data, "chunk"):
        args = span["args"]
        if args["outcome"] not in ("ok", "error"):
            continue
        retried = set(args.get("retried", ()))
        for offset in range(args["count"]):
            if offset not in retried:
                counts[args["start"] + offset] += 1
    return counts


def assert_each_position_once(
    data: dict[str, Any], total: int, *, except_: frozenset[int] = frozenset()
) -> None:
    counts = result_positions(data)
    expected = {p: 1 for p in range(total) if p not in except_}
    assert {p: counts[p] for p in counts if p not in except_} == expected
    assert not any(counts[p] for p in except_)


def worker_tracks(data: dict[str, Any]) -> set[str]:
    names = track_names(data)
    return {names[(s["pid"], s["tid"])] for s in spans(data, "chunk")}


def instants(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in data["traceEvents"] if e["ph"] == "i" and e["name"] == name]
