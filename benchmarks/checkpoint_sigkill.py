"""SIGKILL a checkpointed map at random moments; check every resume, count what ran twice.

Run from the repository root::

    .venv/bin/python -m benchmarks.checkpoint_sigkill            # 30 trials
    .venv/bin/python -m benchmarks.checkpoint_sigkill --trials 5 --items 200

Each trial starts a fresh Python process running ``workpool.map`` over ``--items`` items
of ``--ms`` milliseconds on 2 process workers (chunks of 2, so at most
``(2 x 2 + 2) x 2 = 12`` items in flight) with ``checkpoint=`` a new file, and sends it
SIGKILL at a moment drawn uniformly over the run's expected length, counted from the
first finished item. Then it checks:

- the workers of the killed process are gone within 10 s (they watch their parent);
- the file passes ``PRAGMA integrity_check``;
- the same call, made again here, returns exactly the uninterrupted results;
- no journaled position runs again; the positions that ran twice (finished in the
  killed run but not journaled) are counted, with the two bounds the journal promises:
  the in-flight window, plus what finishes within one commit interval (0.2 s) at this
  work's pace, ``2 workers x 200 ms / item time``.

Each call leaves a mark (an empty file), which is how runs are counted. The table
lists every trial; the last line says whether all held. Nothing here is a timed
assertion: the only times are the kill moments, drawn by a seeded random generator.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

WORKERS = 2
CHUNKSIZE = 2
WINDOW = (2 * WORKERS + 2) * CHUNKSIZE
COMMIT_INTERVAL = 0.2

JOB = """
import sys
sys.path.insert(0, {root!r})
import workpool
from benchmarks.checkpoint_sigkill import marked_nap

if __name__ == "__main__":
    path, marks, items, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    workpool.map(marked_nap, [(x, marks, seconds) for x in range(items)], backend="process",
                 workers={workers}, chunksize={chunksize}, checkpoint=path)
"""


def marked_nap(item: tuple[int, str, float]) -> int:
    """Sleep, leave a mark named after ``x`` in ``marks``, return ``x * x``."""
    x, marks, seconds = item
    time.sleep(seconds)
    Path(marks, f"{x}.{os.getpid()}.{time.monotonic_ns()}").touch()
    return x * x


def runs(marks: Path) -> Counter[int]:
    return Counter(int(name.split(".")[0]) for name in os.listdir(marks))


def pids(marks: Path) -> set[int]:
    return {int(name.split(".")[1]) for name in os.listdir(marks)}


def journaled(path: str) -> set[int]:
    from workpool.checkpoint import summary

    return {p for first, last in summary(path).ranges for p in range(first, last + 1)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def trial(root: Path, rng: random.Random, items: int, seconds: float) -> dict[str, object]:
    import workpool

    # The function by its importable name, as the job knows it (not __main__'s copy).
    from benchmarks.checkpoint_sigkill import marked_nap

    with tempfile.TemporaryDirectory(prefix="workpool-sigkill-") as directory:
        path = os.path.join(directory, "run.ckpt")
        marks = Path(directory, "marks")
        marks.mkdir()
        script = Path(directory, "job.py")
        script.write_text(JOB.format(root=str(root), workers=WORKERS, chunksize=CHUNKSIZE))
        expected_length = items * seconds / WORKERS
        moment = rng.uniform(0, expected_length)
        job = subprocess.Popen(
            [sys.executable, str(script), path, str(marks), str(items), str(seconds)]
        )
        deadline = time.monotonic() + 60
        while not any(marks.iterdir()) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # until the first item has finished: the work has begun
        started = time.monotonic()
        while time.monotonic() - started < moment and job.poll() is None:
            time.sleep(0.005)  # the kill's moment, not a wait for anything
        job.send_signal(signal.SIGKILL)
        job.wait()
        workers = pids(marks) if marks.exists() else set()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        orphans = sum(alive(pid) for pid in workers)

        sound = True
        done: set[int] = set()
        if os.path.exists(path):
            db = sqlite3.connect(path)
            sound = db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            db.close()
            try:
                done = journaled(path)
            except ValueError:  # killed while the file was being created: empty
                done = set()
        finished_before = set(runs(marks))

        items_list = [(x, str(marks), seconds) for x in range(items)]
        results = workpool.map(
            marked_nap,
            items_list,
            backend="process",
            workers=WORKERS,
            chunksize=CHUNKSIZE,
            checkpoint=path,
        )
        counts = runs(marks)
        twice = {x for x, n in counts.items() if n > 1}
        return {
            "moment": moment,
            "finished": len(finished_before),
            "journaled": len(done),
            "twice": len(twice),
            "journaled_ran_twice": len(twice & done),
            "exact": results == [x * x for x in range(items)] and set(counts) == set(range(items)),
            "sound": sound,
            "orphans": orphans,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--ms", type=float, default=5.0, help="milliseconds per item")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    rng = random.Random(args.seed)
    seconds = args.ms / 1000
    pace_bound = int(WORKERS * COMMIT_INTERVAL / seconds)
    print(
        f"{args.trials} trials: {args.items} items of {args.ms:g} ms on {WORKERS} process "
        f"workers, chunks of {CHUNKSIZE}; in-flight window {WINDOW} items, one commit "
        f"interval at this pace about {pace_bound} items"
    )
    print(
        f"{'trial':>5} {'kill at s':>9} {'finished':>8} {'journaled':>9} {'ran twice':>9} "
        f"{'exact':>5} {'sound':>5} {'orphans':>7}"
    )
    rows = []
    for number in range(1, args.trials + 1):
        row = trial(root, rng, args.items, seconds)
        rows.append(row)
        print(
            f"{number:>5} {row['moment']:>9.3f} {row['finished']:>8} {row['journaled']:>9} "
            f"{row['twice']:>9} {row['exact']!s:>5} {row['sound']!s:>5} {row['orphans']:>7}"
        )
    twice = [int(str(r["twice"])) for r in rows]
    held = all(
        r["exact"] and r["sound"] and not r["orphans"] and not r["journaled_ran_twice"]
        for r in rows
    )
    within = sum(t <= WINDOW + pace_bound for t in twice)
    print(
        f"ran twice per trial: median {statistics.median(twice):g}, max {max(twice)}; "
        f"{within}/{len(rows)} trials within window + one commit interval "
        f"({WINDOW} + {pace_bound})"
    )
    print(f"every resume exact, every file sound, no orphan, no journaled item rerun: {held}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
