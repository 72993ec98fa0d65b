"""Writing a recorded timeline as Chrome Trace Event JSON (Perfetto, chrome://tracing).

The file is the JSON object format (compressed with gzip when its name ends in
``.gz``, which Perfetto and chrome://tracing open as they are): ``traceEvents`` (the
events below) and ``otherData`` (workpool's version, the call's facts, whether the
call ended early).

- every group of tracks becomes a trace "process" (``pid``), every track a "thread"
  (``tid``) of it; ``process_name`` and ``thread_name`` metadata events name them all;
- a span is a complete event (``"ph": "X"``); a chunk is one, with ``"cat": "chunk"``
  and its position, size, attempt and outcome in ``args`` (with ``errors``, the items
  that raised, and ``retried``, the offsets of those tried again, when there are
  any), holding up to three sub-spans: ``receive``, ``run``, ``return``;
- crashes, timeouts and retries are thread-scoped instant events (``"ph": "i"``).

Viewers refuse spans on one track that overlap without nesting, so the writer makes
every track nest properly: a chunk's sub-spans are clamped into the chunk and into
order, and a span that overlaps another without fitting inside it goes to an extra
lane of the same track (named after it) instead of being bent to fit. Times are whole
microseconds from the earliest event; rounding is monotonic, so nesting computed in
nanoseconds survives it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

from workpool._version import __version__
from workpool.clock import now_ns
from workpool.timeline.recorder import ChunkRecord, Recorder, SpanRecord

__all__ = ["is_gzip_name", "trace_lines", "write_trace"]

# The phases of a chunk are sub-spans: "receive" and "return" (category "serialize")
# and "run" (category "run"); _Lines.node writes them.

# JSON is written by the few lines below rather than the json package: importing that
# costs about as much as everything else a short traced call adds. Values are what
# the recorder holds: str, int, float, bool, None, dicts and sequences of those;
# anything else is written as its repr().
_ESCAPES = {code: f"\\u{code:04x}" for code in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"})


def is_gzip_name(path: str) -> bool:
    """Whether a trace written to ``path`` is compressed: its name ends in ``.gz``."""
    return path.lower().endswith(".gz")


def _string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _dumps(value: Any) -> str:
    """``value`` as compact JSON."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_dumps, value)) + "]"
    return _string(repr(value))


class _Node:
    """A span about to be written: its interval, and how to write it."""

    __slots__ = ("begin", "chunk", "end", "span")

    def __init__(
        self,
        begin: int,
        end: int,
        span: tuple[str, str, dict[str, Any] | None] | None,
        chunk: ChunkRecord | None,
    ) -> None:
        self.begin = begin
        self.end = max(begin, end)
        self.span = span  # (name, category, args) of a plain span
        self.chunk = chunk  # or the record of a chunk, which holds its phases


def _lanes(nodes: list[_Node]) -> list[list[_Node]]:
    """Split one track's spans into lanes on which every two spans nest or are disjoint.

    Lane 0 is the track itself; a span goes to the first lane where it either starts
    after the open spans end or fits inside the innermost open one (a chunk, whose
    inside is its own sub-spans, holds nothing else).
    """
    nodes.sort(key=lambda n: (n.begin, -n.end))
    lanes: list[list[_Node]] = []
    open_spans: list[list[_Node]] = []  # per lane: the spans still open, outermost first
    for node in nodes:
        for lane, stack in zip(lanes, open_spans):
            while stack and stack[-1].end <= node.begin:
                stack.pop()
            if not stack or (node.end <= stack[-1].end and stack[-1].chunk is None):
                lane.append(node)
                stack.append(node)
                break
        else:
            lanes.append([node])
            open_spans.append([node])
    return lanes


class _Lines:
    """Formats events as JSON lines; times in whole microseconds since ``origin``."""

    def __init__(self, origin: int) -> None:
        self.origin = origin
        self._quoted: dict[str, str] = {}

    def quote(self, text: str) -> str:
        quoted = self._quoted.get(text)
        if quoted is None:
            quoted = self._quoted[text] = _string(text)
        return quoted

    def micros(self, ns: int) -> int:
        """Rounded half up: monotonic in ``ns``, so what nests in ns nests in µs."""
        return (ns - self.origin + 500) // 1000

    def metadata(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> str:
        return f'{{"ph":"M","name":"{name}","pid":{pid},"tid":{tid},"args":{_dumps(args)}}}'

    def complete(
        self, name: str, category: str, begin: int, end: int, where: str, args: str = ""
    ) -> str:
        ts = self.micros(begin)
        return (
            f'{{"ph":"X","name":{self.quote(name)},"cat":{self.quote(category)},"ts":{ts},'
            f'"dur":{self.micros(end) - ts},{where}{args}}}'
        )

    def instant(self, name: str, category: str, at: int, where: str, args: dict[str, Any]) -> str:
        return (
            f'{{"ph":"i","s":"t","name":{self.quote(name)},"cat":{self.quote(category)},'
            f'"ts":{self.micros(at)},{where},"args":{_dumps(args)}}}'
        )

    def node(self, node: _Node, where: str) -> Iterator[str]:
        if node.span is not None:
            name, category, args = node.span
            extra = f',"args":{_dumps(args)}' if args else ""
            yield self.complete(name, category, node.begin, node.end, where, extra)
            return
        assert node.chunk is not None
        _, start, count, attempt, outcome, errors, _, run, ran, _, retried = node.chunk
        begin, end = node.begin, node.end
        # Each phase boundary clamped into the chunk and after the one before; then
        # all four in µs at once (the same rounding as micros()).
        run = min(max(run, begin), end)
        ran = min(max(ran, run), end)
        shift = 500 - self.origin
        begin, run, ran, end = (
            (begin + shift) // 1000,
            (run + shift) // 1000,
            (ran + shift) // 1000,
            (end + shift) // 1000,
        )
        failed = f',"errors":{errors}' if errors else ""
        if retried:
            failed += f',"retried":[{",".join(map(str, retried))}]'
        yield (
            f'{{"ph":"X","name":"chunk","cat":"chunk","ts":{begin},"dur":{end - begin},'
            f'{where},"args":{{"start":{start},"count":{count},"attempt":{attempt},'
            f'"outcome":{self.quote(outcome)}{failed}}}}}'
        )
        # The phases, each only if it lasted a microsecond or more (else invisible).
        phase = '{{"ph":"X","name":"{}","cat":"{}","ts":{},"dur":{},{}}}'
        if run > begin:
            yield phase.format("receive", "serialize", begin, run - begin, where)
        if ran > run:
            yield phase.format("run", "run", run, ran - run, where)
        if end > ran:
            yield phase.format("return", "serialize", ran, end - ran, where)


def trace_lines(recorder: Recorder, more_spans: Sequence[SpanRecord] = ()) -> Iterator[str]:
    """The recorder's events (and ``more_spans``), one JSON object per string, nesting
    enforced per track."""
    # Copies: an engine's thread may still report (a worker's end) while this runs.
    # Tracks are copied last, so that each record copied has its track.
    spans, chunks, reported = recorder.spans[:], recorder.chunks[:], recorder.instants[:]
    spans += more_spans
    tracks = recorder.tracks[:]
    by_track: list[list[_Node]] = [[] for _ in tracks]
    for track, name, category, begin, end, args in spans:
        by_track[track].append(_Node(begin, end, (name, category, args), None))
    for record in chunks:
        by_track[record[0]].append(_Node(record[6], record[9], None, record))
    instants: list[list[tuple[str, str, int, dict[str, Any]]]] = [[] for _ in tracks]
    for track, name, category, at, args in reported:
        instants[track].append((name, category, at, args))
    origin = min(
        [recorder.begun_ns]
        + [node.begin for nodes in by_track for node in nodes]
        + [at for events in instants for _, _, at, _ in events]
    )
    lines = _Lines(origin)
    groups: dict[str, int] = {}
    tid = 0
    for number, info in enumerate(tracks):
        pid = groups.get(info.group)
        if pid is None:
            pid = groups[info.group] = len(groups) + 1
            yield lines.metadata("process_name", pid, 0, {"name": info.group})
            yield lines.metadata("process_sort_index", pid, 0, {"sort_index": pid})
        for lane_number, lane in enumerate(_lanes(by_track[number]) or [[]]):
            tid += 1
            name = info.name if lane_number == 0 else f"{info.name} (overlapping {lane_number})"
            yield lines.metadata("thread_name", pid, tid, {"name": name})
            yield lines.metadata("thread_sort_index", pid, tid, {"sort_index": tid})
            where = f'"pid":{pid},"tid":{tid}'
            if lane_number == 0:
                for name, category, at, args in instants[number]:
                    yield lines.instant(name, category, at, where, args)
            for node in lane:
                yield from lines.node(node, where)


def write_trace(recorder: Recorder, *, partial: bool, reason: str, running: bool = False) -> None:
    """Write ``recorder``'s timeline to its path, atomically (temporary name, rename).

    Adds the ``call`` span, from the recorder's creation to now. Raises ``OSError`` if
    the file cannot be written; a half-written temporary file is removed, and whatever
    file was at the path before stays as it was. ``running``: a rewrite while the call
    goes on (``snapshots.py``), which leaves the recorder as it was, and is not made
    once the final write has been claimed.
    """
    with recorder.file_lock:
        if running and recorder.written:
            return
        _write(recorder, partial, reason, running)


def _write(recorder: Recorder, partial: bool, reason: str, running: bool) -> None:
    ended = now_ns()
    call_track = recorder.track(("caller", "call"), "call", recorder.caller_group)
    call: SpanRecord = (call_track, "call", "call", recorder.begun_ns, ended, dict(recorder.facts))
    if not running:
        recorder.spans.append(call)
    other = {
        "generator": f"workpool {__version__}",
        "partial": partial,
        "reason": reason,
        "clock": "time.perf_counter_ns",
        "wall_seconds": (ended - recorder.begun_ns) / 1e9,
        "call": recorder.facts,
    }
    # backslashreplace: a lone surrogate (from an undecodable file name, say) is
    # written as the JSON escape \udcXX instead of failing the whole file.
    data = (
        '{"traceEvents":[\n'
        + ",\n".join(trace_lines(recorder, [call] if running else ()))
        + f'\n],\n"displayTimeUnit":"ms",\n"otherData":{_dumps(other)}}}\n'
    ).encode("utf-8", "backslashreplace")
    if is_gzip_name(recorder.path):
        import gzip  # only for a trace named *.gz

        data = gzip.compress(data, mtime=0)
    directory, base = os.path.split(os.path.abspath(recorder.path))
    temporary = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # O_EXCL: never write through someone else's file; 0o666 lets the umask decide.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, recorder.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
