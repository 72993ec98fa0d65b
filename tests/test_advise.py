"""workpool.advise and backend="auto": the choice follows what is measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import workpool
from faults import RaiseWhenUnpickled
from helpers import run_while_imported
from workpool._cpus import usable_cpus
from workpool._options import BACKENDS, PoolSpec
from workpool.advise import Advice, Measurement, decide, measure, remembered
from workpool.inputs import InputSource
from workpool.tasks import CallMode

try:
    import numpy
except ImportError:  # the NumPy case is skipped without it
    numpy = None

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


def tiny(x: int) -> int:
    return x * x


def waits(x: int) -> int:
    time.sleep(0.005)
    return x


def spins(x: int) -> int:
    total = 0
    for i in range(40_000):
        total += i % 7
    return total + x


def numpy_sorts(seed: int) -> float:
    values = numpy.random.default_rng(seed).random(500_000)
    values.sort(kind="heapsort")
    return float(values[0])


def test_advice_has_the_contract_fields() -> None:
    advice = workpool.advise(tiny, range(1, 11))
    assert isinstance(advice, workpool.Advice)
    assert advice.backend in {"serial", "thread", "process"}
    assert advice.workers >= 1
    assert advice.chunksize >= 1
    assert isinstance(advice.reason, str)
    assert "µs" in advice.reason or "ms" in advice.reason  # the numbers behind it
    assert advice.measurements["items_measured_inline"] >= 1
    assert "seconds_per_item" in advice.measurements


def test_tiny_work_stays_serial() -> None:
    # The notebook's squares of 1..10: no pool pays for itself.
    advice = workpool.advise(tiny, range(1, 11))
    assert advice.backend == "serial"
    assert "serially" in advice.reason
    assert workpool.advise(tiny, range(50_000)).backend == "serial"


def test_waiting_work_goes_to_threads_with_more_threads_than_cpus() -> None:
    advice = workpool.advise(waits, range(400))
    assert advice.backend == "thread"
    assert advice.workers > usable_cpus()
    assert "threads run it in parallel" in advice.reason


def test_pure_python_cpu_work_goes_to_processes_unless_there_is_no_gil() -> None:
    if not FREE_THREADED:
        advice = workpool.advise(spins, range(60), total=3000)
        assert advice.backend == "process", advice.reason
        assert "GIL" in advice.reason
        return
    # Without a GIL, two threads beat one only when two CPUs are free while advise
    # measures them; it reports what it saw, so judge the attempts where they did.
    if usable_cpus() < 2:
        pytest.skip("needs two usable CPUs")
    for _ in range(6):
        advice = workpool.advise(spins, range(60), total=3000)
        seen = advice.measurements
        if (seen["two_thread_cpu_parallelism"] or 0) >= 1.6 and (
            seen["two_thread_speedup"] or 0
        ) >= 1.3:
            assert advice.backend == "thread", advice.reason
            assert "free-threaded" in advice.reason
            return
    pytest.skip("two CPUs were never free at once while measuring")


@pytest.mark.skipif(numpy is None, reason="needs NumPy")
def test_gil_releasing_numpy_work_goes_to_threads() -> None:
    # Two threads can only show parallelism when two CPUs are free while they run; the
    # measurement says whether they were (CPU time per wall second, and the speedup).
    # On a shared machine, judge the attempts where they were: the advice must then
    # prefer threads to processes, which would gain no more and pay for shipping.
    if usable_cpus() < 2:
        pytest.skip("needs two usable CPUs")
    for _ in range(6):
        found, *_ = measure(numpy_sorts, CallMode.ONE, InputSource(range(40)))
        if (found.thread_parallelism or 0) >= 1.6 and (found.thread_speedup or 0) >= 1.3:
            advice = decide(found, 400)
            assert advice.backend == "thread", advice.reason
            return
    pytest.skip("two CPUs were never free at once while measuring")


def eighth_of(array: Any, part: int) -> Any:
    return array[part::8].copy()


@pytest.mark.skipif(numpy is None, reason="needs NumPy")
def test_large_arrays_count_as_shared_once_not_as_pickled_for_every_item() -> None:
    # A process pool sends them through shared memory, once per call. Measured as
    # pickled bytes, the same 100 MB array given to every item cost 0.4 s per item
    # sampled (for each of auto's three measurements), and made processes look dear.
    big = numpy.ones(1 << 20)  # 8 MiB: shared, and so is each result (1 MiB)
    advice = workpool.advise(eighth_of, [(big, part) for part in range(8)], star=True)
    assert advice.measurements["ship_bytes_per_item"] < 1024, advice.reason
    small = numpy.ones(1 << 10)  # 8 KiB: pickled, into every message
    advice = workpool.advise(eighth_of, [(small, part) for part in range(8)], star=True)
    assert advice.measurements["ship_bytes_per_item"] > 8 << 10, advice.reason


def sum_of_part(array: Any, part: int) -> float:
    return float(array[part::8].sum())


@pytest.mark.skipif(numpy is None, reason="needs NumPy")
def test_a_read_only_memmap_counts_as_its_file_not_as_a_copy(tmp_path: Path) -> None:
    # A process pool maps its file in the workers; a copy of one larger than memory
    # could not even be made.
    import tracemalloc

    path = tmp_path / "data.f8"
    numpy.ones(2 << 20).tofile(path)  # 16 MiB
    mapped = numpy.memmap(path, dtype=numpy.float64, mode="r")
    tracemalloc.start()  # NumPy reports its allocations here
    try:
        advice = workpool.advise(sum_of_part, [(mapped, part) for part in range(8)], star=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert advice.measurements["ship_bytes_per_item"] < 1024, advice.reason
    assert peak < 8 << 20, f"{peak:,} bytes allocated while measuring"
    del mapped


def measured(**fields: float | None) -> Measurement:
    base: dict[str, float | None] = {
        "items": 20,
        "seconds_per_item": 0.01,
        "cpu_fraction": 1.0,
        "thread_items": 20,
        "thread_speedup": 1.0,
        "thread_parallelism": 1.0,
        "ship_seconds_per_item": 5e-6,
        "ship_bytes_per_item": 30,
    }
    base.update(fields)
    return Measurement(gil_enabled=True, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "remaining", "expected"),
    [
        # Waiting work: two threads twice as fast, little CPU.
        ({"cpu_fraction": 0.01, "thread_speedup": 1.95, "thread_parallelism": 0.02}, 400, "thread"),
        # GIL-bound CPU work: two threads no faster, the process used one CPU.
        ({}, 3000, "process"),
        # GIL-releasing CPU work (NumPy): two CPUs busy at once, twice as fast.
        ({"thread_speedup": 1.85, "thread_parallelism": 1.9}, 400, "thread"),
        # GIL-releasing work limited by memory: two CPUs busy, only 1.3x faster. Processes
        # would gain no more and pay for shipping.
        ({"thread_speedup": 1.3, "thread_parallelism": 1.9}, 400, "thread"),
        # Two CPUs busy and no faster at all: nothing parallel pays.
        ({"thread_speedup": 1.0, "thread_parallelism": 1.9}, 400, "serial"),
        # A speedup the CPU time does not back up (a busy machine's fluke): not threads.
        ({"thread_speedup": 1.8, "thread_parallelism": 1.05}, 3000, "process"),
        # Tiny items: shipping costs more than the work.
        (
            {"seconds_per_item": 2e-7, "thread_speedup": None, "thread_parallelism": None},
            10**5,
            "serial",
        ),
        # Few items of moderate work: no pool pays for its start-up.
        ({"seconds_per_item": 1e-4}, 10, "serial"),
    ],
)
def test_decide_follows_the_measurements(
    fields: dict[str, float | None], remaining: int, expected: str
) -> None:
    if usable_cpus() < 2 and expected != "serial":
        pytest.skip("needs two usable CPUs")
    advice = decide(measured(**fields), remaining)
    assert advice.backend == expected, advice.reason


def test_advise_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="callable"):
        workpool.advise(42, [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        workpool.advise(tiny, [])
    with pytest.raises(TypeError, match="iterable"):
        workpool.advise(tiny, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget"):
        workpool.advise(tiny, [1], budget=0)
    # A value of the wrong kind is a TypeError naming the argument, as for every option.
    with pytest.raises(TypeError, match=r"budget must be a number of seconds; got '1' \(str\)"):
        workpool.advise(tiny, [1], budget="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"total must be an integer >= 0 or None; got 2.0"):
        workpool.advise(tiny, [1], total=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"total must be an integer >= 0 or None; got -1"):
        workpool.advise(tiny, [1], total=-1)
    with pytest.raises(TypeError, match=r"star must be True or False; got 'yes'"):
        workpool.advise(tiny, [1], star="yes")  # type: ignore[arg-type]


def test_advise_on_a_sample_that_only_fails_says_so_instead_of_advising() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ValueError, match=r"every one of the .* raised") as info:
        workpool.advise(add, [(1, 2)] * 50)  # each item is one argument: star=True forgotten
    assert isinstance(info.value.__cause__, TypeError)
    assert "star=True" in str(info.value)
    assert workpool.advise(add, [(1, 2)] * 50, star=True).backend in BACKENDS


def test_advise_suggests_star_only_where_it_would_help() -> None:
    def invert(x: int) -> float:
        return 1 / x

    with pytest.raises(ValueError, match=r"every one of the .* raised") as info:
        workpool.advise(invert, [0] * 5)
    assert "ZeroDivisionError" in str(info.value)
    assert "star=True" not in str(info.value)  # the items are no argument tuples


def test_the_reason_names_no_engine_that_cannot_run_the_items() -> None:
    import threading

    advice = workpool.advise(id, [threading.Lock()] * 50)  # a lock cannot be pickled
    assert advice.backend == "serial"
    assert "cannot be pickled" in advice.reason
    assert " inf " not in advice.reason  # 'and process inf s' named an engine that cannot
    assert "No engine that can run it would be faster" in advice.reason


@pytest.mark.parametrize(
    ("items", "failing"),
    [
        (3, False),  # the third is too few to time on two threads: it ran, uncounted
        (200, True),  # every other item fails: on 3.14, those on subinterpreters ran twice
    ],
)
def test_advise_runs_each_item_at_most_once_and_counts_every_run(
    tmp_path: Path, items: int, failing: bool
) -> None:
    from interp_tasks import marked_fails_every_tenth

    def marked(x: int) -> int:  # 2 ms of CPU work (23 ms if few); every other may fail
        if failing and x % 2:
            marked_fails_every_tenth((9, str(tmp_path / "failed")))  # raises ValueError
        if items < 10:
            burns_21ms(x)
        return marked_fails_every_tenth((x * 10, str(tmp_path / "ok")))

    (tmp_path / "ok").mkdir()
    (tmp_path / "failed").mkdir()
    advice = workpool.advise(marked, range(items))
    runs = len(list((tmp_path / "ok").iterdir())) + len(list((tmp_path / "failed").iterdir()))
    seen = advice.measurements
    counted = (
        seen["items_measured_inline"]
        + seen["items_measured_on_two_threads"]
        + seen["items_measured_on_two_interpreters"]
    )
    assert runs == counted <= items, seen


def test_auto_runs_every_item_exactly_once(tmp_path: Path) -> None:
    def once(x: int) -> int:
        mark = tmp_path / str(x)
        if mark.exists():
            raise AssertionError(f"item {x} ran twice")
        mark.touch()
        return spins(x)

    results = workpool.map(once, range(120))
    assert results == [spins(x) for x in range(120)]
    assert len(list(tmp_path.iterdir())) == 120


def test_auto_remembers_the_measurement_per_function() -> None:
    def fresh(x: int) -> int:
        return x + 1

    assert remembered(fresh) is None
    assert workpool.map(fresh, range(100)) == list(range(1, 101))
    first = remembered(fresh)
    assert first is not None
    assert workpool.map(fresh, range(10)) == list(range(1, 11))
    assert remembered(fresh) is first  # not measured again


def test_auto_remembers_no_measurement_of_nothing() -> None:
    # A first call on an empty input (or on items that all failed) timed nothing, and
    # was remembered as work of 0 s an item: every later call of the function ran
    # serially, however slow its items.
    def fresh(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return spins(x)

    assert workpool.map(fresh, []) == []
    assert list(workpool.imap(fresh, iter([]))) == []
    assert remembered(fresh) is None
    results = workpool.map(fresh, [-1, -2], return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert remembered(fresh) is None
    assert workpool.map(fresh, range(3)) == [spins(x) for x in range(3)]
    found = remembered(fresh)
    assert found is not None and found.seconds_per_item > 0


def test_auto_keeps_error_semantics() -> None:
    def bad(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    assert workpool.map(bad, range(6), return_exceptions=True)[3].args == ("three",)
    with pytest.raises(ValueError, match="three") as info:
        workpool.map(bad, range(6))
    assert "input position 3" in "\n".join(info.value.__notes__)
    seen = []
    with pytest.raises(ValueError, match="three"):
        for value in workpool.imap(bad, range(6)):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_auto_with_a_generator_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    results = workpool.map(tiny, (x for x in range(500)), progress=True)
    assert results == [x * x for x in range(500)]
    assert "500 done" in capsys.readouterr().err


def test_auto_with_task_timeout_uses_processes() -> None:
    def sleepy(x: int) -> int:
        if x == 1:
            time.sleep(30)
        return x

    begin = time.monotonic()
    results = workpool.map(sleepy, range(4), task_timeout=0.5, return_exceptions=True)
    assert time.monotonic() - begin < 10
    assert isinstance(results[1], workpool.TaskTimeout)
    assert [results[0], results[2], results[3]] == [0, 2, 3]


def test_auto_decides_while_another_thread_imports_the_process_engine(tmp_path: Path) -> None:
    # Several threads calling map(backend="auto") at once: one started processes, and
    # another's decision read the zygote's module half-imported: AttributeError.
    done = run_while_imported(
        "workpool.backends.process.zygote",
        'print(workpool.map(abs, range(-3, 0), backend="auto"))',
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[3, 2, 1]"


@pytest.mark.skipif(
    not os.path.exists("/proc/self/schedstat"), reason="needs Linux's per-thread schedstat"
)
def test_cpu_work_on_a_busy_machine_is_not_taken_for_waiting() -> None:
    # Other programs hold every CPU, so the work gets a fraction of one; the time it
    # spent ready to run but queued is not time spent waiting on I/O.
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * max(2, usable_cpus()))
    ]
    try:
        found, *_ = measure(spins, CallMode.ONE, InputSource(range(60)))
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
    assert found.cpu_fraction >= 0.5, found


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds a test appends here are reported to ``advise`` as queued for a CPU."""
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    real = advise._seconds_queued
    stalls: list[float] = []
    monkeypatch.setattr(advise, "_seconds_queued", lambda: real() + sum(stalls))
    return stalls


class _SlowFirstPickle:
    """An item whose first pickling is held up 0.5 ms, as by a preemption or a collection."""

    pickled = 0

    def __reduce__(self) -> tuple[type, tuple[()]]:
        type(self).pickled += 1
        if type(self).pickled == 1:
            until = time.perf_counter() + 0.0005
            while time.perf_counter() < until:
                pass
        return _SlowFirstPickle, ()


def test_a_hiccup_in_timing_a_tiny_items_shipping_is_not_its_cost() -> None:
    # auto stops timing items far cheaper than shipping the first one, which it timed
    # once, over microseconds: one hiccup there made tiny squares look far cheaper.
    advise = sys.modules["workpool.advise"]
    advise._shipping_cost([{"warm": "up"}], [1], {})  # what its first use imports
    seconds, size = advise._shipping_cost(
        [_SlowFirstPickle()], [1], {}, advise.SHIPPING_RETIMED_WITHIN
    )
    assert _SlowFirstPickle.pickled > 1
    assert seconds < 0.0003, seconds
    assert 0 < size < 100


def test_tiny_work_queued_for_a_cpu_while_timed_stays_serial(stalled: list[float]) -> None:
    # Timing tiny items takes a millisecond: on a loaded machine one stretch in the run
    # queue can last longer. The suite saw auto then run 50,000 squares on processes.
    # Here item 100, among those timed, waits 20 ms, reported queued for a CPU.

    def tiny_but_preempted_once(x: int) -> int:
        if x == 100:
            # Reported as long as it really took: a sleep can overrun by milliseconds,
            # which, unreported, would look like 5 µs more for each tiny item timed.
            began = time.perf_counter()
            time.sleep(0.02)
            stalled.append(time.perf_counter() - began)
        return x * x

    found, items, *_ = measure(tiny_but_preempted_once, CallMode.ONE, InputSource(range(50_000)))
    assert stalled and len(items) > 100  # item 100 was among those timed
    # and the timing went on after it: 128 items timed (the group of items 64-127 ended
    # it), each with its share of the error in 20 ms, once made 5 µs squares, and
    # processes worth it (CI, on 3.10). How many more are timed depends on the load:
    # 512 at 5.8 µs a square on a busy CI machine, 1,024-8,192 on a quiet one.
    assert len(items) > 128, found
    assert found.seconds_per_item < 10e-6, found
    assert decide(found, 50_000 - len(items)).backend == "serial", found


def test_slow_cpu_items_reported_queued_all_along_are_still_timed_once(
    stalled: list[float],
) -> None:
    # On a loaded machine a thread can be queued for a CPU about as long as it runs: the
    # work timed (wall time less queued) stayed near zero, and slow CPU items went on
    # being timed inline, one after another, instead of one (here every item is
    # reported queued for all of its wall time).
    def burns_21ms_queued(x: int) -> int:
        began = time.perf_counter()
        burns_21ms(x)
        stalled.append(time.perf_counter() - began)
        return x

    found, *_ = measure(burns_21ms_queued, CallMode.ONE, InputSource(range(40)))
    assert found.items == 2, found  # the warm-up, then one timed item, as unloaded
    assert found.seconds_per_item >= 0.02, found


def test_a_wait_for_a_cpu_after_the_one_timed_item_is_not_taken_off_its_time(
    monkeypatch: pytest.MonkeyPatch, stalled: list[float]
) -> None:
    # An item that mostly waits (5 ms asleep) is timed alone. On 3.14t at a load of 10
    # the thread then waited for a CPU as it recorded the item: that wait, outside
    # the item's 5 ms, was taken off them, the item looked 1.6 ms long, two threads
    # looked slower than one, and waiting work was advised onto processes.
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    add = advise.Sample.add

    def preempted_while_recording(self: Any, *args: Any) -> None:
        stalled.append(0.02)  # 20 ms queued for a CPU, after the item ran
        add(self, *args)

    monkeypatch.setattr(advise.Sample, "add", preempted_while_recording)
    found, *_ = measure(waits, CallMode.ONE, InputSource(range(400)))
    assert found.seconds_per_item >= 0.005, found
    assert found.cpu_fraction < 0.5, found


def test_threads_that_hold_the_gil_on_a_busy_machine_do_not_look_parallel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a loaded machine a thread is often queued for a CPU, the one waiting for the
    # GIL too, as it wakes to ask for it: the suite saw two threads of pure-Python work on
    # 3.14 with the GIL "ran 1.45x as fast as one ... so threads run it in parallel".
    # Here two such threads used one CPU second per wall second, each queued half the
    # time: one CPU's worth of work, whatever the run queues say.
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    real = advise._run_on_two_threads

    def one_cpu_queued_half_the_time(*args: Any) -> tuple[Any, ...]:
        values, errors, *_ = real(*args)
        return values, errors, 0.1, 0.1, 0.05  # wall, CPU, queued (seconds)

    monkeypatch.setattr(advise, "_run_on_two_threads", one_cpu_queued_half_the_time)
    found, *_ = measure(spins, CallMode.ONE, InputSource(range(60)))
    assert found.thread_parallelism == pytest.approx(1.0), found
    assert decide(found, 3000).backend != "thread"


def naps_3ms(x: int) -> int:
    time.sleep(0.003)
    return x


def test_two_threads_are_timed_by_themselves_not_by_the_thread_that_waits_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On 3.14t at a load of 10, two threads of sleeps ran "1.47x as fast as one":
    # their wall time was read by the thread joining them, which on a loaded machine
    # may wait for a CPU after they are done. Here it is half a second late, far
    # longer than the pair's own run (6 items of 3 ms each).
    import threading

    join = threading.Thread.join

    def join_late(thread: threading.Thread, timeout: float | None = None) -> None:
        if thread.name.startswith("workpool-advise-"):
            time.sleep(0.5)
        join(thread, timeout)

    monkeypatch.setattr(threading.Thread, "join", join_late)
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    values, errors, wall, cpu, _ = advise._run_on_two_threads(
        naps_3ms, CallMode.ONE, list(range(12))
    )
    assert values == list(range(12)) and not errors
    assert 0.018 <= wall < 0.5
    assert cpu < wall


# --- how much is measured -------------------------------------------------------------


def naps_10ms(x: int) -> int:
    time.sleep(0.01)
    return x


def burns_21ms(x: int) -> int:
    started = time.thread_time()
    while time.thread_time() - started < 0.021:
        pass
    return x


def test_a_slow_item_that_waits_is_its_own_sample_and_goes_to_threads() -> None:
    found, items, values, errors = measure(naps_10ms, CallMode.ONE, InputSource(range(400)))
    assert (found.items, found.thread_items) == (1, 0)  # one item said it all
    assert list(items) == values == [0] and not errors
    assert found.cpu_fraction < 0.5
    assert decide(found, 399).backend == "thread"


def test_slow_cpu_items_are_timed_once_per_thread() -> None:
    found, items, values, _ = measure(burns_21ms, CallMode.ONE, InputSource(range(40)))
    assert found.thread_items == 2
    assert found.items == 2  # the warm-up, then one timed item: the goal is filled
    assert values == list(items) == [0, 1, 2, 3]


def test_tiny_items_far_cheaper_than_shipping_are_timed_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each item "takes" 0.1 µs by the clock call_items reports; shipping the first costs
    # 1 µs (FAR_CHEAPER = 8 times more would be 0.8) or 0.1 µs. Timing stops once
    # SHORT_GOAL of work is timed in the first case, at the usual goal in the second.
    advise = sys.modules["workpool.advise"]  # workpool.advise is also the function

    def fake_call_items(fn, mode, batch):  # type: ignore[no-untyped-def]
        return [fn(x) for x in batch], {}, len(batch) * 1e-7

    monkeypatch.setattr(advise, "call_items", fake_call_items)
    # The clock is fake, so is the machine's load: time queued for a CPU (real, on a
    # busy machine) would come off the fake 0.1 µs and leave the timing running on.
    monkeypatch.setattr(advise, "_seconds_queued", lambda: 0.0)
    counts = {}
    for ship in (1e-6, 1e-7):
        monkeypatch.setattr(advise, "_shipping_cost", lambda *_, ship=ship: (ship, 16.0))
        found, *_ = measure(tiny, CallMode.ONE, InputSource(range(10**6)))
        counts[ship] = found.items
    assert advise.SHORT_GOAL / 1e-7 <= counts[1e-6] < 2 * advise.SHORT_GOAL / 1e-7 + 4096
    assert counts[1e-7] >= 0.02 / 1e-7


def test_waits_for_a_cpu_while_the_input_is_read_are_not_taken_off_the_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A generator over a cheap function: reading an item costs more than the call. On a
    # loaded machine the thread waits for a CPU mostly while it reads, and those waits
    # were taken off the calls' time, which then never grew: auto ran (and read) 0.45 s
    # worth of a lazy imap's input before its first result. Here each item read is
    # reported as 1 µs queued for a CPU, each call as taking 0.1 µs.
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    real = advise._seconds_queued
    read_queued = [0.0]
    monkeypatch.setattr(advise, "_seconds_queued", lambda: real() + read_queued[0])

    def fake_call_items(fn, mode, batch):  # type: ignore[no-untyped-def]
        return [fn(x) for x in batch], {}, len(batch) * 1e-7

    monkeypatch.setattr(advise, "call_items", fake_call_items)

    def queued_while_read() -> Any:
        for x in range(10**7):
            read_queued[0] += 1e-6
            yield x

    found, *_ = measure(tiny, CallMode.ONE, InputSource(queued_while_read()))
    # As without the waits (test_tiny_items_far_cheaper_than_shipping_are_timed_briefly).
    assert found.items < 2 * advise.SHORT_GOAL / 1e-7 + 4096, found
    assert found.seconds_per_item == pytest.approx(1e-7, rel=0.5), found


# --- subinterpreters (Python 3.14+, with the GIL) ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "started", "expected"),
    [
        # Two subinterpreters kept two CPUs busy and ran it twice as fast; their pool is
        # still up: processes can gain no more, and must start first.
        ({"interpreter_speedup": 2.0, "interpreter_parallelism": 1.95}, True, "interpreter"),
        # 1.6x as fast: processes, estimated at 2x, are worth their start-up.
        ({"interpreter_speedup": 1.6, "interpreter_parallelism": 1.95}, True, "process"),
        # The same, but starting them again would cost half a second: processes.
        (
            {
                "interpreter_speedup": 2.0,
                "interpreter_parallelism": 1.95,
                "interpreter_start_seconds": 0.5,
            },
            False,
            "process",
        ),
        # A speedup that the CPU time does not back up: not subinterpreters.
        ({"interpreter_speedup": 2.0, "interpreter_parallelism": 1.0}, True, "process"),
        # Not timed on subinterpreters (another Python, or the work failed there).
        ({}, False, "process"),
    ],
)
def test_decide_picks_subinterpreters_only_when_they_ran_in_parallel_and_win(
    fields: dict[str, float | None], started: bool, expected: str
) -> None:
    if usable_cpus() < 2:
        pytest.skip("needs two usable CPUs")
    # measured(): pure-Python CPU work of 10 ms an item, that two threads did not run
    # in parallel (the GIL).
    advice = decide(measured(interpreter_items=20, **fields), 3000, interpreters_started=started)
    assert advice.backend == expected, advice.reason


def spins_21ms(x: int) -> int:
    started = time.thread_time()
    total = 0
    while time.thread_time() - started < 0.021:
        total += 1
    return x


@pytest.mark.skipif(
    "interpreter" not in BACKENDS or FREE_THREADED,
    reason="subinterpreters with a GIL: Python 3.14+ built with the GIL",
)
def test_work_holding_the_gil_is_timed_on_two_subinterpreters_once_each() -> None:
    found, items, values, errors = measure(
        spins_21ms,
        CallMode.ONE,
        InputSource(range(40)),
        interpreters=PoolSpec(backend="interpreter", workers=2),
    )
    assert found.interpreter_items >= 4
    assert found.interpreter_speedup is not None and found.interpreter_start_seconds >= 0
    assert values == list(items) == list(range(len(values))) and not errors  # each ran once
    # auto may go on with the pool it timed, or stop it: either way every item once.
    assert workpool.map(spins_21ms, range(12), workers=2) == list(range(12))


@pytest.mark.skipif(
    "interpreter" not in BACKENDS or FREE_THREADED,
    reason="subinterpreters with a GIL: Python 3.14+ built with the GIL",
)
def test_the_subinterpreter_trial_keeps_every_item_when_some_cannot_cross() -> None:
    # A chunk whose items a subinterpreter cannot rebuild (NumPy arrays, for one) comes
    # back as one batch per item: every item must still be kept once, in its place.
    from workpool.interpreter_trial import time_interpreters

    items: list[Any] = list(range(8))
    items[3] = RaiseWhenUnpickled()
    items[6] = RaiseWhenUnpickled()
    trial, values, errors = time_interpreters(
        spins_21ms, CallMode.ONE, items, 0.021, PoolSpec(backend="interpreter", workers=2)
    )
    assert values == items and not errors  # the two ran again here
    assert trial.speedup is None  # what failed there is not offered


@pytest.mark.skipif(
    "interpreter" not in BACKENDS or FREE_THREADED,
    reason="subinterpreters with a GIL: Python 3.14+ built with the GIL",
)
def test_retries_count_the_tries_on_the_subinterpreters_timed(tmp_path: Path) -> None:
    # An item that failed on the two subinterpreters auto timed ran again in the calling
    # thread, and then was retried as often as retries allows: retries=2 ran it 4 times.
    from interp_tasks import marked_fails_every_tenth

    items = [(x, str(tmp_path)) for x in range(200)]
    results = workpool.map(marked_fails_every_tenth, items, retries=2, return_exceptions=True)
    found = remembered(marked_fails_every_tenth)
    assert found is not None and found.interpreter_items > 0  # the case was exercised
    assert [r.args[0] for r in results if isinstance(r, ValueError)] == list(range(9, 200, 10))
    runs: dict[int, int] = {}
    for mark in tmp_path.iterdir():
        x = int(mark.name.split(".")[0])
        runs[x] = runs.get(x, 0) + 1
    assert runs == {x: 3 if x % 10 == 9 else 1 for x in range(200)}


def slow_spins(x: int) -> int:
    """About 10 ms of pure-Python CPU work: slow enough to start processes early for."""
    deadline = time.thread_time() + 0.01
    total = 0
    while time.thread_time() < deadline:
        total += 1
    return x


def _count_pools(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backends the calls started, in order (``oneshot.create_backend`` recorded)."""
    from workpool import oneshot

    started: list[str] = []
    create = oneshot.create_backend

    def recorded(spec: PoolSpec, *args: object) -> object:
        backend = create(spec, *args)  # type: ignore[arg-type]
        started.append(spec.backend)
        return backend

    monkeypatch.setattr(oneshot, "create_backend", recorded)
    return started


def _processes_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every decision ``"process"``: for tests of what happens once processes are
    chosen. On a loaded machine the timings can tip a real decision the other way
    (threads measured faster than one CPU can be), and those tests would test nothing."""
    advise = sys.modules["workpool.advise"]  # the module, not the function it exports
    decide = advise.decide

    def processes(found: Measurement, remaining: int | None, **options: bool) -> Advice:
        advice = decide(found, remaining, **options)
        return advice.replace(backend="process", workers=2)

    monkeypatch.setattr(advise, "decide", processes)


@pytest.mark.skipif(FREE_THREADED, reason="without a GIL, threads take pure-Python CPU work")
def test_auto_goes_on_with_the_process_pool_it_started_while_measuring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _processes_chosen(monkeypatch)
    started = _count_pools(monkeypatch)

    def fresh(x: int) -> int:  # measured afresh: not remembered from another test
        return slow_spins(x)

    assert workpool.map(fresh, range(40)) == list(range(40))
    assert started == ["process"]  # one pool, started early and then used


@pytest.mark.skipif(numpy is None, reason="needs NumPy")
@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="counts memfds")
@pytest.mark.skipif(FREE_THREADED, reason="without a GIL, threads take pure-Python CPU work")
def test_auto_copies_a_large_argument_into_shared_memory_once_with_its_early_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The items the early pool ran, and those after the choice, are one call: the same
    # 40 MB array was copied once for each (0.1 s, and 40 MB more shared memory, each).
    from workpool import sharing

    _processes_chosen(monkeypatch)
    started = _count_pools(monkeypatch)
    copies: list[int] = []
    share = sharing.share

    def counted(array: Any, **options: bool) -> Any:
        copies.append(array.nbytes)
        return share(array, **options)

    monkeypatch.setattr(sharing, "share", counted)
    big = numpy.ones(1 << 20)  # 8 MiB

    def fresh(array: Any, x: int) -> int:
        return slow_spins(x) + int(array[x]) - 1

    assert workpool.starmap(fresh, [(big, x) for x in range(40)]) == list(range(40))
    assert started == ["process"]
    assert copies == [big.nbytes]
    assert shared_segments_open() == 0  # and let go with the call
    # Chosen by the measurement: five items hardly pay for a pool, which then stops
    # unused; either way the copy goes with the call.
    monkeypatch.undo()
    assert workpool.starmap(fresh, [(big, x) for x in range(5)]) == list(range(5))
    assert shared_segments_open() == 0


def shared_segments_open() -> int:
    """Descriptors of shared-memory segments (not the engine's slots) held here."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sum(name.startswith("/memfd:workpool (") for name in names)


def test_a_process_pool_started_while_measuring_is_stopped_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = _count_pools(monkeypatch)

    def fresh(x: int) -> int:
        return slow_spins(x)

    # Five slow items: processes look likely after the first ones, but with what is
    # left no pool pays for itself. The early pool stops; nothing is left running.
    assert workpool.map(fresh, range(5)) == list(range(5))
    assert started.count("process") <= 1


def test_auto_on_slow_cpu_work_that_cannot_be_pickled_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    started = _count_pools(monkeypatch)
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:  # a closure over a lock: no process can take it
        with lock:
            return slow_spins(x)

    assert workpool.map(holds_a_lock, range(12)) == list(range(12))
    assert "process" not in started
    advice = workpool.advise(holds_a_lock, range(30), total=3000)
    assert advice.backend not in ("process", "interpreter"), advice.reason
    assert "cannot be pickled" in advice.reason


def test_auto_with_task_timeout_and_a_function_that_cannot_be_pickled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # task_timeout sends auto to processes, but no process can take a closure over a
    # lock: threads then run it, which report a hung task on time.
    import threading

    started = _count_pools(monkeypatch)
    lock = threading.Lock()
    release = threading.Event()

    def guarded(x: int) -> int:
        with lock:
            pass
        if x == 1:
            release.wait(30)  # hung, until the test is done with it
        return x

    try:
        results = workpool.map(guarded, range(4), task_timeout=0.5, return_exceptions=True)
    finally:
        release.set()
    assert isinstance(results[1], workpool.TaskTimeout)
    assert [results[0], results[2], results[3]] == [0, 2, 3]
    assert started == ["thread"]


@pytest.mark.parametrize("retries", [0, 1])
def test_an_item_that_fails_only_off_the_calling_thread_runs_there_as_a_loop_would(
    retries: int,
) -> None:
    # Objects tied to the thread that made them (an sqlite3 connection, say) work in a
    # plain loop, but raise on the two threads auto times: those items run again in
    # the calling thread, and threads are not offered for such a function.
    import threading

    caller = threading.get_ident()
    lock = threading.Lock()  # a closure over a lock: no process can take it either

    def bound_to_caller(x: int) -> int:
        with lock:
            if threading.get_ident() != caller:
                raise RuntimeError("objects created in a thread can only be used there")
        spins(x)
        if x % 10 == 9:
            raise ValueError(x)  # a failure of its own, wherever it runs
        return x

    results = workpool.map(bound_to_caller, range(100), retries=retries, return_exceptions=True)
    assert [r for r in results if not isinstance(r, ValueError)] == [
        x for x in range(100) if x % 10 != 9
    ]
    failures = [r for r in results if isinstance(r, ValueError)]
    assert [f.args[0] for f in failures] == list(range(9, 100, 10))
    for failure in failures:  # each reported once, where it ran
        notes = [n for n in failure.__notes__ if n.startswith("workpool:")]
        assert len(notes) == 1 and "the calling thread" in notes[0], notes
    found = remembered(bound_to_caller)
    assert found is not None and found.thread_items > 0  # the case was exercised
    advice = workpool.advise(bound_to_caller, range(100), total=100_000)
    assert advice.backend == "serial", advice.reason
    assert "failed on a thread" in advice.reason


def test_an_item_that_fails_on_a_timing_thread_runs_once_as_on_any_engine() -> None:
    # Items that fail wherever they run (every tenth), among those auto times on two
    # threads: each ran there, and again in the calling thread, so a task with a side
    # effect (a row written, a message sent) did it twice where every engine does it
    # once, retries=0.
    import threading

    runs: dict[int, int] = {}
    lock = threading.Lock()

    def fails_every_tenth(x: int) -> int:
        with lock:
            runs[x] = runs.get(x, 0) + 1
        spins(x)
        if x % 10 == 9:
            raise ValueError(x)
        return x

    results = workpool.map(fails_every_tenth, range(60), return_exceptions=True)
    found = remembered(fails_every_tenth)
    assert found is not None and found.thread_items > 0  # the case was exercised
    assert runs == dict.fromkeys(range(60), 1)
    failures = [r for r in results if isinstance(r, ValueError)]
    assert [f.args[0] for f in failures] == list(range(9, 60, 10))
    timed_on_threads = range(found.items, found.items + found.thread_items)
    for failure in failures:  # each noted once, with where it ran: a timing thread only
        notes = [n for n in failure.__notes__ if n.startswith("workpool:")]  # if it did
        assert len(notes) == 1, notes
        on_a_timing_thread = "workpool-advise-" in notes[0]
        assert on_a_timing_thread == (failure.args[0] in timed_on_threads), notes


@pytest.mark.parametrize("call", ["map", "imap"])
def test_a_failure_that_ends_the_call_ends_the_measuring(call: str) -> None:
    # The first failure cancels what is pending and is raised: auto went on timing the
    # items after it (0.45 s of them, or on two threads), which no engine would run.
    # Only the rest of its group runs (1, 1, 2, 4 items...), as the rest of a chunk.
    ran: list[int] = []

    def fails_at_5(x: int) -> int:
        ran.append(x)
        if x == 5:
            raise ValueError(x)
        return x * x

    run = workpool.map if call == "map" else workpool.imap
    with pytest.raises(ValueError, match="5"):
        list(run(fails_at_5, range(100_000)))
    assert ran == list(range(len(ran))) and 6 <= len(ran) <= 8, ran
    assert remembered(fails_at_5) is None  # six items are no measurement to keep


def test_a_keyboard_interrupt_a_task_raises_on_a_timing_thread_reaches_the_caller(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # As from a plain loop and from every backend: not a thread dying with a traceback
    # on stderr, and the measuring carrying on with an item missing.
    import threading

    caller = threading.get_ident()

    def interrupted_off_the_caller(x: int) -> int:
        if threading.get_ident() != caller:
            raise KeyboardInterrupt
        return spins(x)

    with pytest.raises(KeyboardInterrupt):
        workpool.map(interrupted_off_the_caller, range(100))
    with pytest.raises(KeyboardInterrupt):
        workpool.advise(interrupted_off_the_caller, range(100))
    assert "Exception in thread" not in capfd.readouterr().err
    assert not [t for t in threading.enumerate() if t.name.startswith("workpool-advise")]


class Unrebuildable(RaiseWhenUnpickled):
    """Pickles, but raises when unpickled (as an exception class whose ``__init__``
    takes more than its ``args`` does, where nothing else teaches pickle about it)."""

    def __init__(self, x: int) -> None:
        self.x = x


def rebuilt_from(item: Unrebuildable) -> Unrebuildable:
    return Unrebuildable(item.x + 1)


def test_items_and_results_that_pickle_but_do_not_unpickle_are_not_a_measuring_failure() -> None:
    # What a plain loop runs, auto runs: timing how they ship is not the call's work.
    items = [Unrebuildable(x) for x in range(50)]
    assert [r.x for r in workpool.map(rebuilt_from, items)] == list(range(1, 51))
    advice = workpool.advise(rebuilt_from, items, total=100_000)
    assert advice.backend not in ("process", "interpreter"), advice.reason
    assert "cannot be pickled" in advice.reason


def test_auto_never_gives_processes_an_initializer_that_cannot_be_pickled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    started = _count_pools(monkeypatch)
    lock = threading.Lock()
    ready: list[str] = []

    def setup() -> None:  # a closure over a lock: no process can take it
        with lock:
            ready.append(threading.current_thread().name)

    assert workpool.map(slow_spins, range(12), initializer=setup) == list(range(12))
    assert "process" not in started
    assert ready  # it ran, in this process
    assert workpool.map(slow_spins, range(4), initializer=setup, task_timeout=30) == [0, 1, 2, 3]
    assert "process" not in started


# --- items run on the early process pool while threads are timed -------------------------

# Where the early pool takes items: a build with the GIL (without one, threads take
# pure-Python CPU work and no pool starts early) on which no subinterpreters are timed
# (they would take the items after the threads').
EARLY_ITEMS = not FREE_THREADED and "interpreter" not in BACKENDS
needs_early_items = pytest.mark.skipif(
    not EARLY_ITEMS, reason="needs a build with the GIL and without subinterpreters"
)


def measured_prefix(fn: object) -> int:
    """How many items ``auto`` ran in this process to measure ``fn``."""
    found = remembered(fn)  # type: ignore[arg-type]
    assert found is not None
    return found.items + found.thread_items


class Opaque:
    """An item that cannot be pickled, so cannot be sent to a worker process."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an Opaque item stays in its process")


@needs_early_items
@pytest.mark.parametrize(
    "given", [range, lambda n: (x for x in range(n))], ids=["range", "generator"]
)
def test_items_run_on_the_early_pool_while_measuring_are_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: object
) -> None:
    _processes_chosen(monkeypatch)
    started = _count_pools(monkeypatch)

    def fresh(x: int) -> tuple[int, int]:
        (tmp_path / str(x)).touch(exist_ok=False)  # a second run of x would raise
        return slow_spins(x), os.getpid()

    results = workpool.map(fresh, given(6), workers=2)  # type: ignore[operator]
    assert [x for x, _ in results] == list(range(6))
    assert len(list(tmp_path.iterdir())) == 6
    here = measured_prefix(fresh)
    pids = [pid for _, pid in results]
    assert here < 6
    assert pids[:here] == [os.getpid()] * here
    # The next items ran on the pool started early, whatever was chosen after them.
    assert os.getpid() not in pids[here:]
    assert started == ["process"]


@needs_early_items
def test_an_item_the_early_pool_cannot_take_runs_in_the_calling_thread() -> None:
    def fresh(item: int | Opaque) -> tuple[int, int]:
        x = item.x if isinstance(item, Opaque) else item
        return slow_spins(x), os.getpid()

    items: list[int | Opaque] = list(range(8))
    items[4] = Opaque(4)
    results = workpool.map(fresh, items, workers=2)
    assert [x for x, _ in results] == list(range(8))
    assert measured_prefix(fresh) <= 4  # so items 4 and 5 went to the early pool
    assert results[4] == (4, os.getpid())
    assert results[5][1] != os.getpid()


@pytest.mark.skipif(FREE_THREADED, reason="without a GIL, threads take pure-Python CPU work")
@pytest.mark.parametrize("retries", [0, 1])
def test_an_item_the_chosen_processes_cannot_take_runs_here_as_serial_would(
    monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    # Processes are chosen on the first items; a later one whose argument cannot be
    # pickled must not fail for it, since backend="serial" would have run it.
    _processes_chosen(monkeypatch)
    started = _count_pools(monkeypatch)
    tries: list[int] = []

    def fresh(item: int | Opaque) -> tuple[int, int]:
        if isinstance(item, Opaque):
            tries.append(item.x)
            if item.x == 33 and tries.count(33) == 1:
                raise ValueError("once")  # tried again with retries, as serial would
            return slow_spins(item.x), os.getpid()
        return slow_spins(item), os.getpid()

    items: list[int | Opaque] = list(range(40))
    items[30], items[33] = Opaque(30), Opaque(33)
    results = workpool.map(fresh, items, retries=retries, return_exceptions=True)
    assert started == ["process"]
    assert results[30] == (30, os.getpid())
    if retries:
        assert results[33] == (33, os.getpid())
    else:
        assert isinstance(results[33], ValueError)
        assert "in this process (its arguments cannot be pickled" in str(results[33].__notes__)
    others = [r for i, r in enumerate(results) if i not in (30, 33)]
    assert [x for x, _ in others] == [i for i in range(40) if i not in (30, 33)]


def test_an_item_the_processes_cannot_take_still_keeps_to_task_timeout() -> None:
    # With task_timeout, auto runs on processes; an item they cannot take runs here,
    # where it cannot be stopped: past the timeout it fails as it would on serial (on
    # its return), not with a result that took longer than the caller allows.
    def overruns(item: int | Opaque) -> int:
        if isinstance(item, Opaque):
            time.sleep(0.4)
            return item.x
        return item

    items: list[int | Opaque] = [0, Opaque(1), 2, Opaque(3)]
    results = workpool.map(overruns, items, task_timeout=0.2, return_exceptions=True)
    assert results[0] == 0 and results[2] == 2
    for late in (results[1], results[3]):
        assert isinstance(late, workpool.TaskTimeout), late
        assert "input position" in str(late)


def fails_at_4(x: int) -> int:
    if x == 4:
        raise ValueError("four")
    return slow_spins(x)


@needs_early_items
@pytest.mark.parametrize("call", ["return_exceptions", "map", "imap"])
def test_failures_on_the_early_pool_keep_error_semantics(call: str) -> None:
    def fresh(x: int) -> int:  # measured afresh, so the early pool runs item 4
        return fails_at_4(x)

    where = "input position 4 in worker process"
    if call == "return_exceptions":
        results = workpool.map(fresh, range(6), workers=2, return_exceptions=True)
        assert results[:4] == [0, 1, 2, 3] and results[5] == 5
        assert isinstance(results[4], ValueError)
        assert where in "\n".join(results[4].__notes__)
    elif call == "map":
        with pytest.raises(ValueError, match="four") as info:
            workpool.map(fresh, range(6), workers=2)
        assert where in "\n".join(info.value.__notes__)
    else:
        seen = []
        with pytest.raises(ValueError, match="four"):
            for value in workpool.imap(fresh, range(6), workers=2):
                seen.append(value)
        assert seen == [0, 1, 2, 3]
    assert measured_prefix(fresh) <= 4  # item 4 ran on the early pool


@needs_early_items
def test_an_item_failing_on_the_early_pool_is_retried_there(tmp_path: Path) -> None:
    failed_once = tmp_path / "failed once"

    def flaky(x: int) -> tuple[int, int]:
        if x == 4 and not failed_once.exists():
            failed_once.write_text(str(os.getpid()))
            raise ValueError("first attempt")
        return slow_spins(x), os.getpid()

    results = workpool.map(flaky, range(6), workers=2, retries=1)
    assert [x for x, _ in results] == list(range(6))
    assert measured_prefix(flaky) <= 4
    # Tried again where it failed: on a worker process (not here) if it failed on one.
    # (Which engine that is depends on the timings: a loaded machine can make the
    # first items look like waiting, and threads run them in this process.)
    first_attempt = int(failed_once.read_text())
    assert (results[4][1] == os.getpid()) == (first_attempt == os.getpid())


def slow_marked(item: tuple[int, str]) -> int:
    x, marks = item
    Path(marks, f"{x}.{os.getpid()}.{time.monotonic_ns()}").touch()
    return slow_spins(x)


@needs_early_items
def test_items_run_on_the_early_pool_are_journaled(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    items = [(x, str(marks)) for x in range(6)]
    path = str(tmp_path / "run.ckpt")
    assert workpool.map(slow_marked, items, workers=2, checkpoint=path) == list(range(6))
    ran = {int(x): int(pid) for x, pid, _ in (name.split(".") for name in os.listdir(marks))}
    assert sorted(ran) == list(range(6))
    assert all(ran[x] != os.getpid() for x in range(measured_prefix(slow_marked), 6))
    # Called again, everything comes from the journal: nothing runs.
    assert workpool.map(slow_marked, items, workers=2, checkpoint=path) == list(range(6))
    assert len(os.listdir(marks)) == 6


@needs_early_items
def test_progress_counts_the_items_run_on_the_early_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fresh(x: int) -> int:
        return slow_spins(x)

    assert workpool.map(fresh, range(6), workers=2, progress=True) == list(range(6))
    assert measured_prefix(fresh) < 6
    assert "6/6" in capsys.readouterr().err


def test_closing_imap_while_the_early_pool_runs_leaves_nothing_behind() -> None:
    def fresh(x: int) -> int:
        return slow_spins(x)

    results = workpool.imap(fresh, range(40), workers=2)
    assert next(results) == 0
    results.close()  # the no_leftovers fixture checks every worker is gone


def test_a_first_item_slow_only_for_its_import_is_not_the_sample(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first call imports a module that takes 0.3 s (a quarter of the budget or
    # more): that one item was taken as the sample, tiny items were estimated at 0.3 s
    # each, processes were chosen, and the measurement kept for every later call.
    (tmp_path / "workpool_test_slower_import.py").write_text(
        "import time\n"
        "deadline = time.thread_time() + 0.3\n"
        "while time.thread_time() < deadline:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "workpool_test_slower_import", raising=False)

    def first_imports(x: int) -> int:
        import workpool_test_slower_import  # noqa: F401

        return x * x

    found, items, values, _ = measure(first_imports, CallMode.ONE, InputSource(range(10**5)))
    assert found.items > 1 and found.seconds_per_item < 0.001, found
    assert values == [x * x for x in items]
    assert decide(found, 10**5).backend == "serial", found


def test_a_first_call_slow_only_for_its_imports_starts_no_process_pool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first item spends 20 ms of CPU importing a module; the others are tiny. No
    # pool is started for what was only the first call's cost.
    (tmp_path / "workpool_test_slow_import.py").write_text(
        "import time\n"
        "deadline = time.thread_time() + 0.02\n"
        "while time.thread_time() < deadline:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "workpool_test_slow_import", raising=False)
    started = _count_pools(monkeypatch)

    def first_imports(x: int) -> int:
        import workpool_test_slow_import  # noqa: F401

        return x * x

    assert workpool.map(first_imports, range(2000)) == [x * x for x in range(2000)]
    assert started == []
