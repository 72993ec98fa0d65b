"""``workpool trace plot``: a traced call as a Gantt chart, one row per track.

Workers come first: their start-up in grey, each chunk as a bar whose dark part is
the function running and whose light ends are receiving and returning; chunks that
raised, crashed or timed out have their own colours, and crashes, timeouts and retries
are marked where they happened. The caller's rows below show it feeding the input,
pickling, delivering results and reading those a checkpoint held. matplotlib (the
``plot`` extra) is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workpool.timeline.reading import Timeline, Track

__all__ = ["PlotUnavailable", "write_plot"]

# What gets a colour, and what the legend calls it.
_COLOURS = {
    "worker start": ("#bbbbbb", "worker start-up"),
    "pool start": ("#bbbbbb", None),
    "pool shutdown": ("#dddddd", "pool shutdown"),
    "run": ("#1f77b4", "running the function"),
    "ship": ("#aec7e8", "receiving / returning"),
    "error": ("#ff7f0e", "chunk with an error"),
    "crashed": ("#222222", "crashed"),
    "timeout": ("#9467bd", "timed out"),
    "feed": ("#2ca02c", "caller: feeding input"),
    "serialize": ("#98df8a", "caller: pickling input, unpickling results"),
    "deliver": ("#17becf", "caller: delivering results"),
    "checkpoint": ("#e377c2", "caller: results read from the checkpoint"),
}
_MARKERS = {"crash": ("X", "#d62728"), "timeout": ("v", "#9467bd"), "retry": ("o", "#ff7f0e")}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _bars(track: Track, origin: float) -> dict[str, list[tuple[float, float]]]:
    """The track's spans as (start, width) bars, by colour key."""
    bars: dict[str, list[tuple[float, float]]] = {}
    # Looked up once: it scans the track's spans, and a caller's track of a call of
    # many chunks holds a pickling span for each of them.
    worker = track.is_worker

    def add(key: str, begin: float, end: float) -> None:
        bars.setdefault(key, []).append((begin - origin, end - begin))

    for span in track.spans:
        if span.category == "chunk":
            outcome = span.args.get("outcome")
            add(
                outcome if outcome in ("error", "crashed", "timeout") else "ship",
                span.begin,
                span.end,
            )
        elif span.name == "run":
            add("run", span.begin, span.end)
        elif span.name in ("worker start", "pool start", "pool shutdown", "feed", "deliver"):
            add(span.name, span.begin, span.end)
        elif span.category == "serialize" and not worker:
            add("serialize", span.begin, span.end)
        elif span.category == "checkpoint":
            add("checkpoint", span.begin, span.end)
    return bars


def write_plot(timeline: Timeline, path: Path) -> None:
    """Write the chart as a PNG; raises PlotUnavailable without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise PlotUnavailable(
            "trace plot needs matplotlib: pip install 'workpool[plot]' (or pip install matplotlib)"
        ) from exc

    tracks = timeline.workers() + [t for t in timeline.callers() if t.name != "call"]
    height = max(2.5, 0.8 + 0.4 * len(tracks))
    figure, ax = plt.subplots(figsize=(12, height))
    used: set[str] = set()
    markers_used: set[str] = set()
    for row, track in enumerate(tracks):
        y = len(tracks) - 1 - row  # the first track on top
        bars = _bars(track, timeline.begin)
        # Chunks first, then their running part drawn over them.
        for key in sorted(bars, key=lambda k: k == "run"):
            colour = _COLOURS[key][0]
            ax.broken_barh(bars[key], (y - 0.35, 0.7), facecolors=colour, linewidth=0)
            used.add(key)
        for instant in track.instants:
            if instant.name in _MARKERS:
                marker, colour = _MARKERS[instant.name]
                ax.plot(instant.at - timeline.begin, y, marker=marker, color=colour, markersize=9)
                markers_used.add(instant.name)
    ax.set_yticks(range(len(tracks)), [t.name for t in reversed(tracks)])
    ax.set_ylim(-0.6, len(tracks) - 0.4)
    ax.set_xlim(0, max(timeline.wall, 1e-6))
    ax.set_xlabel("seconds since the call began")
    ax.grid(True, axis="x", alpha=0.3)
    handles: list[Any] = [
        Patch(facecolor=colour, label=label)
        for key, (colour, label) in _COLOURS.items()
        if key in used and label is not None
    ]
    handles += [
        Line2D([], [], linestyle="", marker=_MARKERS[name][0], color=_MARKERS[name][1], label=name)
        for name in sorted(markers_used)
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    from workpool.timeline.summary import seconds_text

    title = (
        f"{timeline.path.name}: {seconds_text(timeline.wall)}, {len(timeline.workers())} workers"
    )
    if timeline.partial:
        title += " (partial: the call ended early)"
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
