"""Reading a trace file back into tracks of spans, for ``workpool trace summary``/``plot``.

A track is a *worker*'s if it holds what workpool writes there: chunk spans (``"cat":
"chunk"``) or a ``worker start`` span. A Chrome trace in the JSON object or array
format loads if workpool wrote it (its ``otherData.generator`` says so) or it has a
worker's track; another tool's trace has neither, and is refused rather than
summarized as a call that ran no chunk. The lanes the writer adds when spans overlap
("... (overlapping 1)") are folded back into their track. Every problem with the file
is a ``TraceFileError`` whose message names the file and says what is wrong with it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Instant", "Span", "Timeline", "TraceFileError", "Track", "load"]

_GZIP_MAGIC = b"\x1f\x8b"
_LANE = re.compile(r"^(?P<name>.*) \(overlapping \d+\)$")


class TraceFileError(Exception):
    """The file cannot be read as a trace; the message names it and says why."""


class Span(NamedTuple):
    """A complete event: ``begin`` and ``end`` in seconds from the trace's start."""

    name: str
    category: str
    begin: float
    end: float
    args: dict[str, Any]

    @property
    def seconds(self) -> float:
        return self.end - self.begin


def _is_worker_span(span: Span) -> bool:
    """Whether workpool writes ``span`` on a worker's track only."""
    return span.category == "chunk" or span.name == "worker start"


class Instant(NamedTuple):
    name: str
    category: str
    at: float
    args: dict[str, Any]


class Track:
    """One row of the trace: its name, its group's name, and what happened on it."""

    def __init__(self, name: str, group: str) -> None:
        self.name = name
        self.group = group
        self.spans: list[Span] = []
        self.instants: list[Instant] = []

    def __repr__(self) -> str:
        return f"<Track {self.name!r} spans={len(self.spans)}>"

    @property
    def is_worker(self) -> bool:
        return any(_is_worker_span(s) for s in self.spans)

    def chunks(self) -> list[Span]:
        return [s for s in self.spans if s.category == "chunk"]

    def total(self, name: str) -> float:
        """Seconds spent in spans called ``name`` (sub-spans never overlap one another)."""
        return sum(s.seconds for s in self.spans if s.name == name)


class Timeline:
    """A loaded trace: its tracks in file order and the writer's metadata."""

    def __init__(self, path: Path, tracks: list[Track], other: dict[str, Any]) -> None:
        self.path = path
        self.tracks = tracks
        self.other = other
        times = [t for track in tracks for s in track.spans for t in (s.begin, s.end)]
        times += [i.at for track in tracks for i in track.instants]
        self.begin = min(times, default=0.0)
        self.end = max(times, default=0.0)

    @property
    def wall(self) -> float:
        return self.end - self.begin

    @property
    def partial(self) -> bool:
        return bool(self.other.get("partial"))

    @property
    def reason(self) -> str:
        return str(self.other.get("reason") or "")

    def workers(self) -> list[Track]:
        return [t for t in self.tracks if t.is_worker]

    def callers(self) -> list[Track]:
        return [t for t in self.tracks if not t.is_worker]


def _number(event: dict[str, Any], key: str) -> float:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key!r} is {value!r}, not a number")
    return float(value)


def _identifier(event: dict[str, Any], key: str) -> Any:
    """A process's or thread's id: a number or a name (absent is allowed too)."""
    value = event.get(key)
    if isinstance(value, (list, dict)):
        raise ValueError(f"{key!r} is {value!r}, not a number or a name")
    return value


def _events(path: Path) -> tuple[list[Any], dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraceFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise TraceFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == _GZIP_MAGIC:  # a trace written as *.gz, whatever it is called now
        data = _gunzipped(path, data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFileError(f"{path} is not a trace: not UTF-8 text ({exc.reason})") from None
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        # json's own wording ends some messages with "at" ("Unterminated string
        # starting at"): the place follows a colon, as in json's str() of the error.
        raise TraceFileError(
            f"{path} is not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno});"
            " was it cut short or edited?"
        ) from None
    except RecursionError:  # arrays or objects nested thousands deep: no trace is
        raise TraceFileError(f"{path} is not a trace: its JSON is nested too deeply") from None
    if isinstance(loaded, list):
        return loaded, {}
    if isinstance(loaded, dict) and isinstance(loaded.get("traceEvents"), list):
        other = loaded.get("otherData")
        return loaded["traceEvents"], other if isinstance(other, dict) else {}
    raise TraceFileError(f"{path} is JSON but not a Chrome trace: it has no list of traceEvents")


def _gunzipped(path: Path, data: bytes) -> bytes:
    import gzip
    import zlib

    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceFileError(
            f"{path} is gzip-compressed but cannot be decompressed ({exc}); was it cut short?"
        ) from None


def load(path: Path) -> Timeline:
    """Read the trace at ``path``; raise ``TraceFileError`` if it is not one."""
    events, other = _events(path)
    group_names: dict[Any, str] = {}
    thread_names: dict[tuple[Any, Any], str] = {}
    spans: list[tuple[tuple[Any, Any], Span]] = []
    instants: list[tuple[tuple[Any, Any], Instant]] = []
    for number, event in enumerate(events):
        try:
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
            phase = event.get("ph")
            key = (_identifier(event, "pid"), _identifier(event, "tid"))
            args = event.get("args")
            args = args if isinstance(args, dict) else {}
            if phase == "M":
                if event.get("name") == "process_name":
                    group_names[key[0]] = str(args.get("name", ""))
                elif event.get("name") == "thread_name":
                    thread_names[key] = str(args.get("name", ""))
            elif phase == "X":
                begin = _number(event, "ts") / 1e6
                end = begin + max(0.0, _number(event, "dur")) / 1e6
                name, category = str(event.get("name", "")), str(event.get("cat", ""))
                spans.append((key, Span(name, category, begin, end, args)))
            elif phase in ("i", "I"):
                at = _number(event, "ts") / 1e6
                name, category = str(event.get("name", "")), str(event.get("cat", ""))
                instants.append((key, Instant(name, category, at, args)))
        except ValueError as exc:
            raise TraceFileError(
                f"{path}: event {number} is not a valid trace event: {exc}"
            ) from None
    written_by_workpool = str(other.get("generator", "")).startswith("workpool")
    if events and not written_by_workpool and not any(_is_worker_span(s) for _, s in spans):
        # Another tool's trace (Chrome's, a profiler's): a summary of it would be a table
        # of nothing, as if a call had run no chunk.
        raise TraceFileError(
            f"{path} is a trace, but not a timeline workpool wrote: none of its "
            f'{len(events):,} events is a chunk span ("cat": "chunk") or a worker start; '
            "write one with workpool.map(..., trace=FILE)"
        )
    if not spans:
        raise TraceFileError(f"{path} holds no spans: nothing to summarize or draw")

    tracks: dict[tuple[Any, str], Track] = {}
    by_key: dict[tuple[Any, Any], Track] = {}

    def track_of(key: tuple[Any, Any]) -> Track:
        found = by_key.get(key)
        if found is None:
            name = thread_names.get(key) or f"thread {key[1]}"
            lane = _LANE.match(name)
            if lane:
                name = lane["name"]
            group = group_names.get(key[0]) or f"process {key[0]}"
            found = tracks.get((key[0], name))
            if found is None:
                found = tracks[(key[0], name)] = Track(name, group)
            by_key[key] = found
        return found

    for key in thread_names:  # named tracks first, in the order the file names them
        track_of(key)
    for key, span in spans:
        track_of(key).spans.append(span)
    for key, instant in instants:
        track_of(key).instants.append(instant)
    for track in tracks.values():
        track.spans.sort(key=lambda s: (s.begin, -s.end))
    used = [t for t in tracks.values() if t.spans or t.instants]
    return Timeline(path, used, other)
