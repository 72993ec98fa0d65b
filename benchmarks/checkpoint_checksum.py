"""What checking each journaled chunk's CRC-32 costs when a finished map is resumed.

Run from the repository root::

    .venv/bin/python -m benchmarks.checkpoint_checksum            # 11 repetitions
    .venv/bin/python -m benchmarks.checkpoint_checksum --reps 21 --items 100000

For each kind of result (a small int, and 1 KiB of bytes: 100,000 of them are 100 MB,
most of it in side files), it makes the journal of a finished ``workpool.map`` over
``--items`` items on processes, then reads every chunk's results back as a resume does
(``JournalStore.load``), twice per repetition in alternating order: with the rows as
stored, and with their checksums left out (read as a format-1 file's rows are). The
table gives the median CPU time of each and the difference per MB of results. Reading
is CPU work in this process, so CPU time, not wall time, is what is compared; the
rest of a resume (starting Python, importing sqlite3, building the result list) does
not change with the check.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import workpool
from workpool.checkpoint.store import JournalStore, Row


def small_int(x: int) -> int:
    return x * x


def kibibyte(x: int) -> bytes:
    return x.to_bytes(8, "little") * 128


def read_back(store: JournalStore, rows: list[Row], reps: int) -> dict[str, float]:
    unchecked = [row._replace(checksum=None) for row in rows]
    seconds: dict[str, list[float]] = {"checked": [], "unchecked": []}
    for rep in range(reps):
        order = ["checked", "unchecked"] if rep % 2 else ["unchecked", "checked"]
        for name in order:
            store._unchecked_rows = name == "unchecked"  # let rows without a sum be read
            begun = time.process_time()
            for row in rows if name == "checked" else unchecked:
                store.load(row)
            seconds[name].append(time.process_time() - begun)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=11)
    args = parser.parse_args()
    print(f"{'results':<10} {'rows':>5} {'MB':>7} {'checked':>10} {'unchecked':>10} {'ms/MB':>7}")
    with tempfile.TemporaryDirectory() as directory:
        for name, fn in (("int", small_int), ("1 KiB", kibibyte)):
            path = str(Path(directory) / f"{fn.__name__}.ckpt")
            workpool.map(fn, range(args.items), backend="process", checkpoint=path)
            store = JournalStore.open(path, readonly=True)
            try:
                rows = store.rows_from(0, args.items)
                megabytes = store.bytes_on_disk() / 1e6
                median = read_back(store, rows, args.reps)
            finally:
                store.close()
            extra = (median["checked"] - median["unchecked"]) * 1e3 / megabytes
            print(
                f"{name:<10} {len(rows):>5} {megabytes:>7.1f} "
                f"{median['checked'] * 1e3:>8.1f}ms {median['unchecked'] * 1e3:>8.1f}ms "
                f"{extra:>7.2f}"
            )


if __name__ == "__main__":
    main()
