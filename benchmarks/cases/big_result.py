"""``big_result``: one task that returns a 200 MB float64 array.

The mirror of ``big_array``: here the large data comes back from the worker. Pools that
pickle results copy it through a pipe and again when unpickling; workpool returns it
through shared memory. Like for like, every row's task returns a fresh ``numpy.arange``;
one more workpool row has the task write the same values into ``workpool.empty``, so
the array is born in shared memory and comes back without any copy. Metrics: wall
seconds (pool start included), and peak memory of the process tree above this
process's own, as sums of RSS and of PSS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from benchmarks.measure import TreeMemorySampler, check, timed
from benchmarks.spec import WORKERS, Framework, Metric, Sample, Workload
from benchmarks.workloads import make_array, make_array_in_shared_memory

Maker = Callable[[int], Any]
MB = 1_000_000


def serial_make() -> Maker:
    """The yardstick: the call in this process."""
    return make_array


def workpool_make() -> Maker:
    """``workpool.map`` with one item; the result comes back through shared memory."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()
    from workpool.backends.process import default_start_method

    default_start_method()  # settle how workers start before the memory sampler's thread

    return lambda megabytes: workpool.map(
        make_array, [megabytes], backend="process", workers=WORKERS
    )[0]


def workpool_born_make() -> Maker:
    """``workpool.map`` with one item, whose task fills ``workpool.empty`` and returns it."""
    from benchmarks.mappers import import_workpool

    workpool = import_workpool()
    from workpool.backends.process import default_start_method

    default_start_method()

    return lambda megabytes: workpool.map(
        make_array_in_shared_memory, [megabytes], backend="process", workers=WORKERS
    )[0]


def mp_pool_make() -> Maker:
    """``multiprocessing.Pool.apply``."""
    import multiprocessing.pool

    def run(megabytes: int) -> Any:
        with multiprocessing.Pool(WORKERS) as pool:
            return pool.apply(make_array, (megabytes,))

    return run


def ppe_make() -> Maker:
    """``ProcessPoolExecutor.submit(...).result()``."""
    from concurrent.futures import ProcessPoolExecutor

    def run(megabytes: int) -> Any:
        with ProcessPoolExecutor(WORKERS) as executor:
            return executor.submit(make_array, megabytes).result()

    return run


def joblib_make() -> Maker:
    """joblib ``Parallel`` with one delayed call."""
    from benchmarks.mappers import import_joblib

    parallel, delayed, release = import_joblib()

    def run(megabytes: int) -> Any:
        result = parallel(n_jobs=WORKERS)([delayed(make_array)(megabytes)])[0]
        release()
        return result

    return run


def run_make(factory: Callable[[], Maker], params: Mapping[str, Any]) -> Sample:
    maker = factory()  # imports the library, outside the timer
    megabytes = int(params["megabytes"])
    with TreeMemorySampler(float(params["sample_interval_s"])) as sampler:
        seconds, result = timed(lambda: maker(megabytes))
    check(result.nbytes == megabytes * MB, f"{result.nbytes} bytes instead of {megabytes} MB")
    probes = [0, 12_345, len(result) // 2, len(result) - 1]
    check([float(result[i]) for i in probes] == [float(i) for i in probes], "wrong values")
    return Sample(
        {
            "seconds": seconds,
            "peak_rss_mb": sampler.rss_delta / MB,
            "peak_pss_mb": sampler.pss_delta / MB,
        },
        {"result_mb": result.nbytes / MB, "max_processes": sampler.max_processes},
    )


def _framework(key: str, label: str, factory: Callable[[], Maker], **kwargs: Any) -> Framework:
    return Framework(key, label, partial(run_make, factory), **kwargs)


WORKLOAD = Workload(
    name="big_result",
    summary="one task returns a 200 MB float64 array, pool start included",
    primary=Metric("seconds", "wall s", "lower", "{:.3f}"),
    extras=(
        Metric("peak_rss_mb", "peak Δ RSS-sum MB", "lower", "{:,.0f}"),
        Metric("peak_pss_mb", "peak Δ PSS-sum MB", "lower", "{:,.0f}"),
    ),
    params={"megabytes": 200, "sample_interval_s": 0.02},
    needs=("numpy", "psutil"),
    frameworks=(
        _framework("workpool", "workpool.map", workpool_make, role="workpool"),
        _framework(
            "workpool_born",
            "workpool.map, task fills workpool.empty",
            workpool_born_make,
            role="workpool",
        ),
        _framework("mp", "multiprocessing.Pool.apply", mp_pool_make),
        _framework("ppe", "ProcessPoolExecutor.submit", ppe_make),
        _framework("joblib", "joblib Parallel", joblib_make, needs=("joblib",)),
        _framework("serial", "the call in this process", serial_make, role="reference"),
    ),
)
