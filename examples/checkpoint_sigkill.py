"""A long map killed with SIGKILL half-way, then run again: it continues where it stopped.

The program starts a job in a child process: ``workpool.map`` over 400 items of about
5 ms each on process workers, with ``checkpoint=`` naming a file. Once 150 items have
finished, it kills the job with SIGKILL: no ``finally`` block, no atexit handler, no
chance to save anything. Then it shows what the checkpoint file holds (``workpool
checkpoint info``), runs the same call again in this process, and checks that the
results are exactly those of a run that was never interrupted, and that only the
items the killed job had not journaled ran again.

Each call of the function leaves a mark (an empty file) so that the program can count
how often each item ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import workpool

ITEMS = 400
KILL_AFTER = 150  # finished items


def slow_square(item: tuple[int, str]) -> int:
    """``x * x``, after 5 ms of pretend work; leaves a mark in the directory ``marks``."""
    x, marks = item
    time.sleep(0.005)
    Path(marks, f"{x}.{uuid.uuid4().hex}").touch()
    return x * x


def job(path: str, marks: str) -> list[int]:
    items = [(x, marks) for x in range(ITEMS)]
    return workpool.map(slow_square, items, backend="process", workers=2, checkpoint=path)


def runs_per_item(marks: str) -> Counter[int]:
    return Counter(int(name.split(".")[0]) for name in os.listdir(marks))


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "squares.ckpt")
        marks = os.path.join(directory, "marks")
        os.mkdir(marks)

        child = subprocess.Popen([sys.executable, __file__, "--job", path, marks])
        deadline = time.monotonic() + 60
        while len(os.listdir(marks)) < KILL_AFTER and child.poll() is None:
            if time.monotonic() > deadline:
                child.kill()
                raise SystemExit("the job made no progress within a minute")
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        ran_before = len(runs_per_item(marks))
        print(f"killed the job with SIGKILL after {ran_before} of {ITEMS} items had run")

        print("what the checkpoint holds (workpool checkpoint info):")
        subprocess.run([sys.executable, "-m", "workpool.cli", "checkpoint", "info", path])

        results = job(path, marks)  # the same call again
        runs = runs_per_item(marks)
        again = sum(1 for count in runs.values() if count > 1)
        print(f"ran again: {len(runs) - ran_before} new items, {again} items a second time")
        print(f"every item ran: {sorted(runs) == list(range(ITEMS))}")
        same = results == [x * x for x in range(ITEMS)]
        print(f"results identical to an uninterrupted run: {same}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--job":
        job(sys.argv[2], sys.argv[3])
    else:
        main()
