"""A traced call on a cluster: what a node records about a chunk, and how it joins the trace.

On the node, a traced chunk runs in the local pool with a ``NodeRecorder`` as its
recorder: the process engine times the chunk there as it does on one machine
(receive, run, return, per local worker process), and reports crashes, timeouts and
its own pickling into it. What it holds goes back with the chunk's results::

    node (Dask worker)                           caller
    ------------------                           ------
    NodeRecorder: faults, the local pool's       NodeClocks: this node's offset, measured
    pickling, the Dask task itself               once by a round trip of its own
    Piece.times: each piece's four readings  --> every reading + the offset, on the call's
                                                 Recorder; tracks "worker process <pid>
                                                 on Dask worker <address>", one group
                                                 per Dask worker

Clocks: a node's readings are its ``now_ns()``, which is the caller's clock when both
run on one machine but unrelated to it on another. The offset is measured the first
time a node's chunk comes back, by asking that worker for its clock (``client.run``)
and bracketing the question with the caller's clock (``clock.clock_offset``):
a reading within the round trip means a shared clock (offset 0); otherwise the error
is at most half that round trip, a few milliseconds. Readings carried by the chunk
itself would not do: the task waits in the scheduler and in the worker's queue for an
unknown part of the trip out, so the two legs are far from symmetric.

This module is imported only by traced calls (and by nodes running their chunks).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from workpool.clock import clock_offset, now_ns
from workpool.timeline.recorder import ChunkRecord, InstantRecord, Recorder, SpanRecord

__all__ = ["NodeClocks", "NodeRecorder", "NodeRecords", "node_clock", "node_group", "put_on"]

# What a node sends back: its tracks as (name, group), and its records on them.
NodeRecords = tuple[list[tuple[str, str]], list[SpanRecord], list[ChunkRecord], list[InstantRecord]]


def node_group(address: str) -> str:
    """The group of tracks of one Dask worker and the local processes it runs."""
    return f"Dask worker {address}"


def node_clock() -> int:
    """Run on a Dask worker: its clock now."""
    return now_ns()


class NodeRecorder(Recorder):
    """A recorder for one chunk on a node, never written: it travels back to the caller."""

    def __init__(self) -> None:
        super().__init__(os.devnull)  # no file of its own

    @staticmethod
    def _checked_path(path: str | os.PathLike[str]) -> str:
        return os.fspath(path)  # never written: nothing to check

    def records(self) -> NodeRecords:
        tracks = [(info.name, info.group) for info in self.tracks]
        return tracks, self.spans, self.chunks, self.instants


class NodeClocks:
    """Each Dask worker's clock offset to the caller's, measured once per worker."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()

    def offset(self, address: str) -> int:
        """What to add to ``address``'s readings to put them on this process's clock."""
        known = self._offsets.get(address)
        if known is not None:
            return known
        with self._lock:
            if address not in self._offsets:
                self._measure(address)
            return self._offsets[address]

    def _measure(self, address: str) -> None:
        """Ask the worker for its clock (it has just answered us: it is there)."""
        readings: dict[str, int] = {}
        sent = now_ns()
        with contextlib.suppress(Exception):  # gone since: its readings stay as they are
            readings = self._client.run(node_clock, workers=[address], on_error="ignore")
        received = now_ns()
        reading = readings.get(address)
        offset = clock_offset(sent, reading, received) if isinstance(reading, int) else 0
        self._offsets[address] = offset


def put_on(recorder: Recorder, records: NodeRecords, address: str, offset: int) -> None:
    """Add what a node recorded to the call's ``recorder``, on the caller's clock.

    The node's worker tracks become "<name> on Dask worker <address>" (the name each
    piece's results carry), its own tracks "Dask worker: <activity>"; all go in the
    node's group.
    """
    names, spans, chunks, instants = records
    group = node_group(address)
    tracks = []
    for name, node_side_group in names:
        if node_side_group.startswith("caller"):  # the Dask worker process itself
            activity = name.removeprefix("caller: ")
            key = ("dask worker", address, activity)
            tracks.append(recorder.track(key, f"Dask worker: {activity}", group))
        else:
            tracks.append(recorder.worker_track(f"{name} on {group}", group))
    for track, name, category, begin, end, args in spans:
        recorder.span(tracks[track], name, category, begin + offset, end + offset, args)
    for track, start, count, attempt, outcome, errors, *times, retried in chunks:
        received, run, ran, returned = (t + offset for t in times)
        recorder.chunk(
            tracks[track],
            start,
            count,
            attempt,
            outcome,
            (received, run, ran, returned),
            errors,
            retried,
        )
    for track, name, category, at, args in instants:
        recorder.instant(tracks[track], name, category, at + offset, args)
