"""``workpool trace summary``: where the time of a traced call went, in numbers and words.

From a loaded ``Timeline``: each worker's share of the call spent starting, busy with
chunks and idle; how the workers' busy time divides into receiving, running and
returning, and what the caller spent feeding (and pickling) the input, unpickling the
results and delivering them; the slowest
chunks; the crashes, timeouts and retries; the results a resumed call read from its
checkpoint instead of running them. ``explain`` turns the numbers into a few
sentences naming the largest loss and what usually helps against it.
"""

from __future__ import annotations

import itertools
import statistics
from typing import NamedTuple

from rich.console import Console
from rich.table import Table

from workpool.timeline.reading import Span, Timeline, Track
from workpool.timeline.snapshots import RUNNING

__all__ = [
    "Straggler",
    "Summary",
    "WorkerShare",
    "explain",
    "print_summary",
    "seconds_text",
    "summarize",
]

BUSY = 0.8  # workers busy this much of the call are kept busy
SHIPPING = 0.3  # receiving + returning this much of the busy time is the main cost
UNEVEN = 3.0  # a chunk this many times slower (per item) than the median is a straggler
TAIL = 0.25  # the call's end spent waiting for the last chunks, as a share of the call
STRAGGLER = 0.05  # a straggler worth naming takes at least this share of the call
IMBALANCE = 0.15  # workers whose idle shares differ this much were used unevenly


class WorkerShare(NamedTuple):
    name: str
    chunks: int
    items: int
    startup: float
    busy: float
    idle: float
    longest_gap: float  # seconds between two of its chunks: waiting for work mid-call


class Straggler(NamedTuple):
    worker: str
    start: int  # -1: the trace does not say
    items: int
    seconds: float
    outcome: str
    per_item_ratio: float  # its time per item over the median chunk's time per item

    @property
    def positions(self) -> str:
        """Its input positions as ``first-last`` ("?" when the trace does not say)."""
        if self.start < 0 or self.items < 1:
            return "?"
        return f"{self.start}-{self.start + self.items - 1}"


class Summary(NamedTuple):
    wall: float
    workers: list[WorkerShare]
    receive: float  # worker seconds, all workers together
    run: float
    returning: float
    feed: float  # caller seconds
    pickle: float  # the input's, part of feeding it
    deliver: float
    tail: float  # seconds from the first worker's last chunk to the end of the call
    stragglers: list[Straggler]
    crashes: int
    timeouts: int
    retries: int
    partial: bool
    reason: str
    ordered: bool | None  # as the call was made (None: the trace does not say)
    restored: int = 0  # items whose results came from the call's checkpoint
    restoring: float = 0.0  # caller seconds reading them
    unpickle: float = 0.0  # the results' (before they are delivered)


def _union(spans: list[Span]) -> float:
    """Seconds covered by ``spans`` (overlaps counted once)."""
    covered, reach = 0.0, float("-inf")
    for span in sorted(spans, key=lambda s: s.begin):
        if span.end > reach:
            covered += span.end - max(span.begin, reach)
            reach = span.end
    return covered


def _whole(span: Span, key: str, default: int) -> int:
    """The span's ``args[key]`` if it is a whole number, else ``default``.

    workpool writes whole numbers there; a trace from elsewhere, or edited, may not.
    """
    value = span.args.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _per_item(span: Span) -> float:
    count = _whole(span, "count", 0)
    return span.seconds / count if count > 0 else span.seconds


def _share(track: Track, wall: float, pool_start: list[Span]) -> WorkerShare:
    """What ``track``'s worker did with the call's time; ``pool_start``: the caller's.

    The pool's start (processes forked, a Dask cluster started) comes before any worker
    can run a chunk: it is each worker's start-up, not its idleness.
    """
    chunks = track.chunks()
    startup = _union([s for s in track.spans if s.name == "worker start"] + pool_start)
    busy = _union(chunks)
    items = sum(_whole(c, "count", 0) for c in chunks)
    gaps = [b.begin - a.end for a, b in itertools.pairwise(chunks)]
    return WorkerShare(
        track.name,
        len(chunks),
        items,
        startup,
        busy,
        max(0.0, wall - startup - busy),
        max(gaps, default=0.0),
    )


def summarize(timeline: Timeline, stragglers: int = 5) -> Summary:
    """The numbers of the summary (see the module docstring)."""
    workers, callers = timeline.workers(), timeline.callers()
    wall = timeline.wall
    chunks = [(track, c) for track in workers for c in track.chunks()]
    median = statistics.median(_per_item(c) for _, c in chunks) if chunks else 0.0
    slowest = sorted(chunks, key=lambda pair: pair[1].seconds, reverse=True)[:stragglers]
    last_ends = [max(c.end for c in track.chunks()) for track in workers if track.chunks()]
    instants = [i.name for track in timeline.tracks for i in track.instants]
    restored = [s for t in callers for s in t.spans if s.category == "checkpoint"]
    pool_start = [s for t in callers for s in t.spans if s.name == "pool start"]
    return Summary(
        wall=wall,
        workers=[_share(track, wall, pool_start) for track in workers],
        receive=sum(t.total("receive") for t in workers),
        run=sum(t.total("run") for t in workers),
        returning=sum(t.total("return") for t in workers),
        feed=sum(_union([s for s in t.spans if s.name == "feed"]) for t in callers),
        pickle=_caller_seconds(callers, "pickle"),
        deliver=sum(_union([s for s in t.spans if s.name == "deliver"]) for t in callers),
        tail=timeline.end - min(last_ends) if last_ends else 0.0,
        stragglers=[
            Straggler(
                track.name,
                _whole(c, "start", -1),
                _whole(c, "count", 0),
                c.seconds,
                str(c.args.get("outcome", "")),
                _per_item(c) / median if median > 0 else 1.0,
            )
            for track, c in slowest
        ],
        crashes=instants.count("crash"),
        timeouts=instants.count("timeout"),
        retries=instants.count("retry"),
        partial=timeline.partial,
        reason=timeline.reason,
        ordered=_ordered(timeline),
        restored=sum(_whole(s, "count", 0) for s in restored),
        restoring=_union(restored),
        unpickle=_caller_seconds(callers, "unpickle"),
    )


def _caller_seconds(callers: list[Track], name: str) -> float:
    """Seconds the caller's tracks spent in their ``serialize`` spans named ``name``."""
    return sum(
        _union([s for s in t.spans if s.category == "serialize" and s.name == name])
        for t in callers
    )


def _ordered(timeline: Timeline) -> bool | None:
    call = timeline.other.get("call")
    ordered = call.get("ordered") if isinstance(call, dict) else None
    return ordered if isinstance(ordered, bool) else None


def seconds_text(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _plural(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def explain(summary: Summary) -> str:
    """A few sentences: how busy the workers were, the largest loss, and what helps."""
    said = _restored(summary)
    if not any(worker.chunks for worker in summary.workers) or summary.wall <= 0:
        return " ".join(
            [*said, "No worker ran a chunk, so there is nothing to say about the workers' time."]
        )
    wall, count = summary.wall, len(summary.workers)
    startup = sum(w.startup for w in summary.workers) / count / wall
    busy = sum(w.busy for w in summary.workers) / count / wall
    idle = sum(w.idle for w in summary.workers) / count / wall
    working = summary.receive + summary.run + summary.returning
    shipping = (summary.receive + summary.returning) / working if working > 0 else 0.0
    worst = max((s.per_item_ratio for s in summary.stragglers), default=1.0)
    at_the_end = summary.tail / wall >= TAIL and worst >= UNEVEN
    uneven = _unevenness(summary, name_straggler=not at_the_end)
    sentences = [
        *said,
        f"The {_plural(count, 'worker')} spent {busy:.0%} of the {seconds_text(wall)} call on "
        f"chunks on average, {startup:.0%} starting and {idle:.0%} idle.",
    ]
    if busy >= BUSY:
        if shipping >= SHIPPING:
            sentences.append(
                f"They were kept busy, but {shipping:.0%} of that went to receiving inputs "
                "and returning results rather than running the function: send less per "
                "item (share() large arrays, return smaller results), or use threads if "
                "the function releases the GIL."
            )
        elif uneven:
            sentences.append("They were busy on average, but not all of them all the time.")
        else:
            sentences.append(
                "They were kept busy, mostly running the function: more speed needs more "
                "workers or faster items, not different settings."
            )
    elif startup >= idle:
        sentences.append(
            "Starting the workers was the largest loss: the call is short for a pool this "
            "size. Reuse one Pool across calls, use fewer workers, or threads."
        )
    elif at_the_end:
        one_task = summary.stragglers[0].items == 1
        sentences.append(
            f"Most of the idle time came at the end, waiting for the slowest chunks (the "
            f"slowest took {worst:.0f}x the median time per item): the work is uneven, "
            + (
                "and that chunk was a single task: only its own speed shortens the call."
                if one_task
                else "and a smaller chunksize spreads it better."
            )
        )
    elif uneven:
        sentences.append("Some workers waited while others worked.")
    elif summary.feed / wall >= 0.5:
        pickling = f", {summary.pickle / summary.feed:.0%} of it pickling" if summary.pickle else ""
        sentences.append(
            f"The caller spent {summary.feed / wall:.0%} of the call reading the input and "
            f"sending it{pickling}, so the workers waited for work: produce the inputs "
            "faster or send less per item."
        )
    elif all(worker.chunks <= 1 for worker in summary.workers):
        sentences.append(
            "No worker ran more than one chunk, so none waited between chunks: the call is "
            "too small for a pool, whose fixed costs (handing the work over, collecting "
            "the results) were most of it. A plain loop, or one Pool for many such calls, "
            "suits it better."
        )
    else:
        sentences.append(
            f"The workers waited between chunks for the next one to reach them (the caller "
            f"spent {summary.feed / wall:.0%} of the call feeding and "
            f"{summary.deliver / wall:.0%} delivering): each chunk's trip costs about as "
            "much as running it, so a larger chunksize (or fewer workers) keeps them busier."
        )
    sentences += uneven
    faults = [
        _plural(n, word, plural)
        for n, word, plural in (
            (summary.crashes, "crash", "crashes"),
            (summary.timeouts, "timeout", ""),
            (summary.retries, "retry", "retries"),
        )
        if n
    ]
    if faults:
        verb = "is" if summary.crashes + summary.timeouts + summary.retries == 1 else "are"
        sentences.append(f"{', '.join(faults)} {verb} marked on the workers' tracks.")
    if summary.partial and summary.reason == RUNNING:
        sentences.append(
            "This trace was written while the call still ran, and the program ended before "
            "the call did (killed, say): it covers what ran before it was written."
        )
    elif summary.partial:
        how = f" ({summary.reason})" if summary.reason else ""
        sentences.append(f"The call ended early{how}: the trace covers what ran before that.")
    return " ".join(sentences)


def _restored(summary: Summary) -> list[str]:
    """A sentence on the results the call's checkpoint held, if it held any."""
    if not summary.restored:
        return []
    return [
        f"The results of {_plural(summary.restored, 'item')} came from the checkpoint "
        f"(read in {seconds_text(summary.restoring)}): they ran in an earlier call, not in "
        "this one."
    ]


def _unevenness(summary: Summary, *, name_straggler: bool) -> list[str]:
    """Sentences on a straggler and on workers left idle while others worked, if any."""
    wall = summary.wall
    said: list[str] = []
    slowest = summary.stragglers[0] if summary.stragglers else None
    straggled = (
        slowest is not None
        and slowest.per_item_ratio >= UNEVEN
        and slowest.seconds >= STRAGGLER * wall
    )
    if straggled and slowest is not None and name_straggler:
        said.append(
            f"The slowest chunk (positions {slowest.positions}, "
            f"on {slowest.worker}) took {seconds_text(slowest.seconds)}, "
            f"{slowest.per_item_ratio:.0f}x the median time per item."
        )
    idle = sorted(summary.workers, key=lambda w: w.idle)
    if len(idle) > 1 and (idle[-1].idle - idle[0].idle) / wall >= IMBALANCE:
        name = idle[-1].name
        said.append(
            f"{name[:1].upper()}{name[1:]} was idle {idle[-1].idle / wall:.0%} of the call, "
            f"{idle[0].name} {idle[0].idle / wall:.0%}."
        )
        if straggled and summary.ordered and idle[-1].longest_gap >= IMBALANCE * wall:
            said.append(
                "With ordered results, the chunks after a slow one wait for it; once four "
                "windows of chunks (4 x (2 x workers + 2)) are read ahead of the results "
                "yielded, no new work goes out until it ends: ordered=False keeps the other "
                "workers fed."
            )
    return said


def print_summary(summary: Summary, title: str, console: Console) -> None:
    """Print the summary's tables and explanation."""
    wall = summary.wall or 1.0
    workers = len(summary.workers)
    table = Table(
        title=f"{title}: {seconds_text(summary.wall)}, {workers} worker{'s' * (workers != 1)}"
    )
    for column in ("worker", "chunks", "items", "start-up", "busy", "idle"):
        table.add_column(column, justify="left" if column == "worker" else "right")
    for worker in summary.workers:
        table.add_row(
            worker.name,
            str(worker.chunks),
            str(worker.items),
            f"{worker.startup / wall:.0%}",
            f"{worker.busy / wall:.0%} ({seconds_text(worker.busy)})",
            f"{worker.idle / wall:.0%}",
        )
    console.print(table)
    working = summary.receive + summary.run + summary.returning
    if working > 0:
        console.print(
            f"Workers' busy time: running {summary.run / working:.0%} "
            f"({seconds_text(summary.run)}), receiving {summary.receive / working:.0%} "
            f"({seconds_text(summary.receive)}), returning {summary.returning / working:.0%} "
            f"({seconds_text(summary.returning)})."
        )
    console.print(
        f"Caller: feeding the input {seconds_text(summary.feed)} (pickling "
        f"{seconds_text(summary.pickle)}), "
        + (f"unpickling results {seconds_text(summary.unpickle)}, " if summary.unpickle else "")
        + f"delivering results {seconds_text(summary.deliver)}."
    )
    if summary.stragglers:
        slow = Table(title="slowest chunks")
        for column in ("worker", "positions", "time", "per item vs median", "outcome"):
            slow.add_column(column, justify="left" if column == "worker" else "right")
        for s in summary.stragglers:
            slow.add_row(
                s.worker,
                s.positions,
                seconds_text(s.seconds),
                f"{s.per_item_ratio:.1f}x",
                s.outcome,
            )
        console.print(slow)
    console.print(explain(summary))
