"""Properties of the process engine that users rely on without seeing them."""

from __future__ import annotations

import functools
import json
import os
import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

import workpool
from conftest import FORK_WARNING, START_METHODS, wait_for
from faults import sleep_then_pid
from helpers import SlowToLoad, first_worker_waits, hold, square
from workpool import _platform
from workpool.chunking import ChunkSizer, ChunkTimes

_unpickled_here: list[int] = []


def _count_unpickling() -> CountedFunction:
    _unpickled_here.append(os.getpid())
    return CountedFunction()


class CountedFunction:
    """A callable that notes every time it is unpickled in a process."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_count_unpickling, ())

    def __call__(self, x: int) -> tuple[int, int]:
        return os.getpid(), len(_unpickled_here)


def test_workers_start_after_the_current_directory_was_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script run from a scratch directory that something removes while it works: a
    # worker started after that (a new pool, or one replacing a worker) has no
    # directory to be sent to, and starts where it is rather than breaking the pool.
    gone = tmp_path / "scratch"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert workpool.map(square, range(4), backend="process", workers=2) == [0, 1, 4, 9]
    with workpool.Pool(2, backend="process", max_tasks_per_worker=1) as pool:
        assert list(pool.map(square, range(6), chunksize=1)) == [0, 1, 4, 9, 16, 25]


def _setting_seen_by_a_new_worker(start_method: str | None) -> str | None:
    with workpool.Pool(1, backend="process", start_method=start_method) as pool:
        return pool.submit(os.getenv, "WORKPOOL_TEST_SETTING").result(timeout=60)


def _check_workers_see_the_environment_as_it_is_now(
    start_method: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The zygote and the fork server outlive pools: a worker forked from one must still
    # see a variable set (OMP_NUM_THREADS, say) or removed since, as fork and spawn do.
    monkeypatch.delenv("WORKPOOL_TEST_SETTING", raising=False)
    assert _setting_seen_by_a_new_worker(start_method) is None  # the server runs now
    monkeypatch.setenv("WORKPOOL_TEST_SETTING", "set later")
    assert _setting_seen_by_a_new_worker(start_method) == "set later"
    monkeypatch.delenv("WORKPOOL_TEST_SETTING")
    assert _setting_seen_by_a_new_worker(start_method) is None


def test_workers_see_the_environment_as_it_is_when_they_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _check_workers_see_the_environment_as_it_is_now(None, monkeypatch)


def test_workers_of_every_start_method_see_the_environment_as_it_is_now(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_workers_see_the_environment_as_it_is_now(start_method, monkeypatch)


# The zygote outlives pools; its workers had its umask, resource limits and niceness,
# those of the program when its first pool started. A program that then made its files
# private (os.umask(0o077)), capped its workers' memory (RLIMIT_AS) or lowered their
# priority had none of that in the workers of its next pool, as fork and spawn have.
LIMITS_PROGRAM = textwrap.dedent(
    """
    import json, os, resource
    import workpool

    def settings(_=None):
        umask = os.umask(0)
        os.umask(umask)
        return umask, resource.getrlimit(resource.RLIMIT_FSIZE), os.nice(0), os.getpid()

    if __name__ == "__main__":
        first = workpool.map(settings, [0], backend="process")
        os.umask(0o077)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        lower = 1 << 30 if soft == resource.RLIM_INFINITY else soft // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (lower, hard))
        os.nice(3)
        later = workpool.map(settings, [0], backend="process")
        print(json.dumps([settings()[:3], later[0][:3], [first[0][3], later[0][3]]]))
    """
)


def test_workers_take_the_umask_limits_and_niceness_the_program_has_now() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIMITS_PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    program, worker, pids = json.loads(done.stdout)
    assert worker == program
    assert program[0] == 0o077
    assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids))


# A program under a long TMPDIR (a build tool's, a cluster job's): the standard fork
# server's socket, made there, has a path longer than a Unix socket's may be (104 bytes
# on macOS, 108 on Linux), and multiprocessing before 3.14 fails to bind it.
LONG_TMPDIR_PROGRAM = textwrap.dedent(
    """
    import json, sys, threading
    import workpool

    def square(x):
        return x * x

    if __name__ == "__main__":
        method = None if sys.argv[1] == "default" else sys.argv[1]
        release = threading.Event()  # a thread running: the zygote cannot be forked
        threading.Thread(target=release.wait).start()
        try:
            out = workpool.map(square, range(4), backend="process", workers=2,
                               start_method=method)
        except Exception as exc:
            out = f"{type(exc).__name__}: {exc}"
        finally:
            release.set()
        print(json.dumps(out))
    """
)


def run_under_long_tmpdir(tmp_path: Path, method: str) -> object:
    long_tmp = tmp_path / ("t" * 60) / ("u" * 60)
    long_tmp.mkdir(parents=True)
    script = tmp_path / "long_tmp.py"
    script.write_text(LONG_TMPDIR_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script), method],
        env={**os.environ, "TMPDIR": str(long_tmp)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_threaded_program_under_a_long_tmpdir_gets_its_workers(tmp_path: Path) -> None:
    assert run_under_long_tmpdir(tmp_path, "default") == [0, 1, 4, 9]


def test_forkserver_under_a_too_long_tmpdir_says_so_at_once(tmp_path: Path) -> None:
    out = run_under_long_tmpdir(tmp_path, "forkserver")
    if out != [0, 1, 4, 9]:  # Python 3.14 makes its socket elsewhere then
        assert isinstance(out, str) and out.startswith("OSError: start_method='forkserver'"), out
        assert "TMPDIR" in out and "shorter" in out, out


def test_function_is_shipped_once_per_worker_not_per_task() -> None:
    results = workpool.map(
        CountedFunction(), range(2000), backend="process", workers=2, chunksize=5
    )
    per_worker: dict[int, int] = {}
    for pid, times_unpickled in results:
        per_worker[pid] = max(per_worker.get(pid, 0), times_unpickled)
    assert per_worker  # some worker ran tasks
    assert set(per_worker.values()) == {1}


def test_pool_reuses_its_workers_across_calls() -> None:
    with workpool.Pool(2, backend="process") as pool:
        first = {pid for pid, _ in pool.map(CountedFunction(), range(50))}
        second = {pid for pid, _ in pool.map(CountedFunction(), range(50))}
        assert first | second  # the same processes answer both calls
        assert len(first | second) <= 2


def test_large_arguments_and_results_cross_intact() -> None:
    blob = os.urandom(3 * 1024 * 1024)
    result = workpool.map(bytes.upper, [blob, blob[:10]], backend="process", workers=2)
    assert result == [blob.upper(), blob[:10].upper()]
    echoes = workpool.map(lambda b: b * 2, [blob] * 4, backend="process", workers=2, chunksize=2)
    assert echoes == [blob * 2] * 4


def test_many_functions_through_one_pool() -> None:
    with workpool.Pool(2, backend="process") as pool:
        functions = [lambda x, k=k: x + k for k in range(150)]  # more than a worker caches
        futures = [pool.submit(fn, 1) for fn in functions]
        assert [f.result(timeout=60) for f in futures] == [1 + k for k in range(150)]
        assert pool.submit(square, 9).result(timeout=30) == 81


def test_arguments_of_a_class_defined_in_main_after_the_workers_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A notebook's class, defined in a later cell: plain pickle names it
    # ``__main__.<name>``, which the workers (forked before it existed, or exec'd)
    # cannot look up; it must travel by value, and come back as the caller's class.
    with workpool.Pool(2, backend="process") as pool:
        assert pool.submit(square, 3).result(timeout=60) == 9  # the workers are up
        name = f"Cell_{os.urandom(8).hex()}"
        cell = type(name, (), {"__module__": "__main__", "__qualname__": name})
        monkeypatch.setattr(sys.modules["__main__"], name, cell, raising=False)
        items = [cell() for _ in range(3)]
        for k, item in enumerate(items):
            item.x = k
        assert pool.submit(vars, items[2]).result(timeout=60) == {"x": 2}
        assert list(pool.map(vars, items)) == [{"x": k} for k in range(3)]
        back = list(pool.map(_itself, items))
        assert [type(item) for item in back] == [cell] * 3
        assert [item.x for item in back] == [0, 1, 2]


def _itself(obj: object) -> object:
    return obj


# A script that forgot the guard: a spawned worker runs it again (as __mp_main__),
# reaches the map, and multiprocessing refuses to start processes from there.
UNGUARDED_SCRIPT = textwrap.dedent(
    """
    import workpool

    def square(x):
        return x * x

    print(workpool.map(square, range(4), backend="process", workers=2, start_method="spawn"))
    """
)


def _broken_pool_line(script: Path, text: str) -> str:
    """Run ``text`` as the script ``script``; the last line of the error it failed with."""
    script.write_text(text)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("workpool.BrokenPool: workers could not start"), last
    return last


def test_a_script_without_the_main_guard_is_told_what_to_fix(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    last = _broken_pool_line(script, UNGUARDED_SCRIPT)
    assert "'if __name__ == \"__main__\":'" in last and str(script) in last


# A guarded script whose spawned workers are killed while they start (the OOM killer,
# or a service manager's SIGTERM to the whole group): no fault of the script's.
KILLED_WHILE_STARTING_SCRIPT = textwrap.dedent(
    """
    import os, signal
    import workpool

    if __name__ == "__mp_main__":  # what a spawned worker runs first
        os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        print(workpool.map(abs, range(4), backend="process", workers=2, start_method="spawn"))
    """
)


def test_workers_killed_while_starting_do_not_blame_the_script(tmp_path: Path) -> None:
    last = _broken_pool_line(tmp_path / "guarded.py", KILLED_WHILE_STARTING_SCRIPT)
    assert "killed by SIGKILL before it was ready for work" in last
    assert "__main__" not in last, last


def test_spawn_asked_for_a_script_read_from_stdin_is_told_what_to_fix() -> None:
    # spawn must run the main module again in each worker, and "<stdin>" is no file
    # (multiprocessing's own pool waits for ever there).
    program = UNGUARDED_SCRIPT.replace("print(", "if __name__ == '__main__':\n    print(")
    done = subprocess.run(
        [sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("workpool.BrokenPool: workers could not start"), last
    assert "<stdin> is no file they can run: leave start_method to its default" in last


TESTS = Path(__file__).resolve().parent

MAIN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import workpool

    SCALE = 1

    def scaled(x):
        return os.getpid(), x * SCALE

    if __name__ == "__main__":
        method = sys.argv[1] or None
        with workpool.Pool(2, backend="process", start_method=method) as pool:
            SCALE = 10  # after the workers started: they must see it all the same
            pid_a, a = pool.submit(scaled, 2).result(timeout=60)
            pid_b, b = next(pool.map(lambda x: scaled(x + 1), [2]))
        pid_c, c = workpool.map(scaled, [3], backend="process", start_method=method)[0]
        print(json.dumps({{"values": [a, b, c], "pids": [pid_a, pid_b, pid_c]}}))
    """
)

IMPORTABLE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import workpool
    from helpers import where

    if __name__ == "__main__":
        method = sys.argv[1] or None
        first = workpool.map(where, range(4), backend="process", workers=2, start_method=method)
        needed_cloudpickle = "cloudpickle" in sys.modules
        second = workpool.map(
            lambda x: (os.getpid(), -x), range(3), backend="process", workers=2,
            start_method=method,
        )
        print(json.dumps({{"values": [v for _, v in second], "cloudpickle": needed_cloudpickle,
                          "pids": [p for p, _ in first + second]}}))
    """
)


def run_script(tmp_path: Path, source: str, method: str | None) -> dict[str, Any]:
    """Run ``source`` as a program's ``__main__``; its JSON line, once no worker is left."""
    script = tmp_path / "program.py"
    script.write_text(source.format(tests=str(TESTS)))
    done = subprocess.run(
        [sys.executable, str(script), method or ""],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    pids = set(report["pids"])
    assert os.getpid() not in pids
    assert wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), timeout=10)
    return report


METHODS = [None, *START_METHODS]


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("method", METHODS, ids=[m or "default" for m in METHODS])
def test_functions_of_main_travel_with_the_globals_they_see_now(
    tmp_path: Path, method: str | None
) -> None:
    report = run_script(tmp_path, MAIN_SCRIPT, method)
    assert report["values"] == [20, 30, 30]


@pytest.mark.parametrize("method", METHODS, ids=[m or "default" for m in METHODS])
def test_importable_functions_do_not_need_cloudpickle(tmp_path: Path, method: str | None) -> None:
    # Sending a function by name needs only the standard pickle, so a program that
    # never sends a lambda never pays for importing cloudpickle (fork imports it
    # early on purpose, see launch.py); one that does later still works.
    report = run_script(tmp_path, IMPORTABLE_SCRIPT, method)
    assert report["values"] == [0, -1, -2]
    if method != "fork":
        assert report["cloudpickle"] is False


PRELOAD_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import workpool
    import program_lib  # beside this script; it notes who imports it
    from helpers import loaded

    if __name__ == "__main__":
        with workpool.Pool(2, backend="process") as pool:
            answers = [pool.submit(loaded, "program_lib").result(timeout=60) for _ in range(4)]
        print(json.dumps({{"answers": answers, "pids": sorted({{p for p, _ in answers}})}}))
    """
)


def test_workers_start_with_the_modules_the_program_imported(tmp_path: Path) -> None:
    # On every path, the zygote holds them before it forks: a forked zygote as a copy
    # of the program, an exec'd one by importing them (not each worker again).
    importers = tmp_path / "imported_by"
    (tmp_path / "program_lib.py").write_text(
        "import os\n"
        f"with open({str(importers)!r}, 'a') as log:\n"
        "    log.write(f'{os.getpid()}\\n')\n"
    )
    report = run_script(tmp_path, PRELOAD_SCRIPT, None)
    assert all(present for _, present in report["answers"])
    assert not set(report["pids"]) & {int(pid) for pid in importers.read_text().split()}


NAMES_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import workpool
    from workpool.backends.process import zygote

    def name_of(pid):
        with open(f"/proc/{{pid}}/comm") as comm:  # what ps -o comm and top show
            return comm.read().strip()

    if __name__ == "__main__":
        method = sys.argv[1] or None
        with workpool.Pool(2, backend="process", start_method=method) as pool:
            pids = sorted({{pool.submit(os.getpid).result(timeout=60) for _ in range(4)}})
            workers = [name_of(pid) for pid in pids]
            helper = zygote._zygote  # made only for the default start method
            helper_name = name_of(helper.pid) if helper is not None else None
        print(json.dumps({{"workers": workers, "zygote": helper_name, "pids": pids}}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names are set on Linux")
@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("method", METHODS, ids=[m or "default" for m in METHODS])
def test_workers_and_the_zygote_say_what_they_are(tmp_path: Path, method: str | None) -> None:
    # Beside the program, `ps` and `top` show workpool's processes by name, not as
    # more copies of the program.
    if not _platform.USE_PRCTL:
        # Only prctl (Linux) renames a process; elsewhere a process shows its command
        # line, and only the exec'd zygote's can be chosen (test_portable checks it).
        pytest.skip("process names are set through prctl, which only Linux has")
    report = run_script(tmp_path, NAMES_SCRIPT, method)
    assert set(report["workers"]) == {"workpool-worker"}
    assert report["zygote"] == ("workpool-zygote" if method is None else None)


ZYGOTE_KILLED_PROGRAM = textwrap.dedent(
    """
    import json, os, signal, time
    import psutil
    import workpool
    from workpool.backends.process import zygote

    def zombie(pid):  # dead, and left to its parent to collect (waitid is not on macOS)
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    workpool.map(abs, [-1, -2], backend="process", workers=2)  # the zygote starts
    lost = zygote._zygote.pid
    os.kill(lost, signal.SIGKILL)  # as the OOM killer might, in a service
    deadline = time.monotonic() + 30
    while not zombie(lost):
        assert time.monotonic() < deadline, "the killed zygote never ended"
        time.sleep(0.01)
    values = workpool.map(abs, [-3, -4], backend="process", workers=2)
    print(json.dumps({"values": values, "collected": not psutil.pid_exists(lost)}))
    """
)


def test_a_killed_zygote_is_collected_once_a_pool_finds_it_gone() -> None:
    # The pools go on without it; but for as long as the program ran on (a service's
    # months), it stayed a zombie of the program's.
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE_KILLED_PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"values": [3, 4], "collected": True}


# Scripts without the main guard, which the zygote lets work (it never runs the main
# module again): they must go on working when the zygote cannot be forked from the
# program, because a thread already runs, or because the zygote was killed.
THREAD_FIRST_SCRIPT = textwrap.dedent(
    """
    import json, os, threading
    import psutil
    import workpool

    print("the script ran", flush=True)
    threading.Thread(target=threading.Event().wait, daemon=True).start()

    def parent_and_square(x):
        return os.getppid(), x * x

    out = workpool.map(parent_and_square, range(4), backend="process", workers=2)
    parents = {parent for parent, _ in out}  # the zygote, which stays
    print(json.dumps([[x for _, x in out], [psutil.Process(p).name() for p in parents]]))
    """
)


def _report_of_an_unguarded_script(script: Path, source: str) -> Any:
    """Run ``source`` as the script ``script``; the JSON it printed after its first line,
    which says it ran (once: not again in any worker)."""
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ran, report = done.stdout.splitlines()
    assert ran == "the script ran"
    return json.loads(report)


def test_a_script_that_runs_a_thread_before_its_first_pool_needs_no_main_guard(
    tmp_path: Path,
) -> None:
    # The fork server would run the script again in every worker, where its map fails;
    # an exec'd zygote runs none of it, as the forked one.
    values, parents = _report_of_an_unguarded_script(
        tmp_path / "thread_first.py", THREAD_FIRST_SCRIPT
    )
    assert values == [0, 1, 4, 9]
    if _platform.USE_PRCTL:
        assert parents == ["workpool-zygote"]


ZYGOTE_REPLACED_SCRIPT = textwrap.dedent(
    """
    import json, os, signal
    import psutil
    import workpool
    from workpool.backends.process import zygote

    print("the script ran", flush=True)

    def parent_pid(x):
        return os.getppid()

    workpool.map(abs, [-1, -2], backend="process", workers=2)  # the zygote starts
    lost = zygote._zygote.pid
    os.kill(lost, signal.SIGKILL)  # as the OOM killer might, in a service
    psutil.Process(lost).wait(30)
    parents = set(workpool.map(parent_pid, range(4), backend="process", workers=2))
    print(json.dumps({"lost": lost, "parents": sorted(parents),
                      "zygote": zygote._zygote.pid}))
    """
)


def test_a_killed_zygote_is_replaced_and_the_script_still_runs_once(tmp_path: Path) -> None:
    # Before, the pools fell back to the fork server, which ran this unguarded script
    # again in every worker: its next map failed.
    out = _report_of_an_unguarded_script(tmp_path / "zygote_replaced.py", ZYGOTE_REPLACED_SCRIPT)
    assert out["parents"] == [out["zygote"]] and out["zygote"] != out["lost"]


ZYGOTE_OF_A_THREAD_PROGRAM = textwrap.dedent(
    """
    import json, os, threading, time
    import psutil
    import workpool
    from workpool.backends.process import zygote

    threading.Thread(target=threading.Event().wait, daemon=True).start()

    def start_the_first_pool():
        workpool.map(abs, [-1, -2], backend="process", workers=2)
        # The zygote serves by now; it would ask for the death signal 0.05 s into that.
        # (Were this too short, the test would pass wrongly, never fail wrongly.)
        time.sleep(0.5)
        info["thread"] = threading.get_native_id()

    info = {}
    first = threading.Thread(target=start_the_first_pool)
    first.start()
    first.join()
    deadline = time.monotonic() + 30  # until the thread is gone from the kernel too
    while os.path.exists(f"/proc/self/task/{info['thread']}") and time.monotonic() < deadline:
        time.sleep(0.01)
    made = zygote._zygote.pid
    ended = None
    try:
        ended = psutil.Process(made).wait(1.0)  # what the thread's end would have done
    except psutil.TimeoutExpired:
        pass
    workpool.map(abs, [-3], backend="process", workers=1)
    print(json.dumps({"ended": ended, "same": zygote._zygote.pid == made}))
    """
)


@pytest.mark.skipif(not _platform.USE_PDEATHSIG, reason="only Linux has the death signal")
def test_a_zygote_started_by_a_thread_outlives_that_thread() -> None:
    # The kernel's parent-death signal comes when the thread that started a process
    # ends, not the program: a zygote started from a thread must not ask for it.
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE_OF_A_THREAD_PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"ended": None, "same": True}


@pytest.mark.skipif(not hasattr(select, "POLLRDHUP"), reason="the watch polls for POLLRDHUP")
def test_a_worker_that_closed_its_socket_stops_watching_it() -> None:
    # A worker that ends on its own closes its socket and may linger (the program's
    # threads): its watch on the parent must then end, not spin on the closed descriptor.
    program = textwrap.dedent(
        """
        import socket
        from workpool.backends.process.parent_watch import _watch_socket

        ours, parent = socket.socketpair()
        fd = ours.fileno()
        ours.close()
        _watch_socket(fd)
        print("returned")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "returned"


def test_work_does_not_wait_for_a_worker_still_starting(tmp_path: Path) -> None:
    """A ready worker runs every chunk while another is still in its initializer."""
    with workpool.Pool(
        2, backend="process", initializer=first_worker_waits, initargs=(str(tmp_path),)
    ) as pool:
        releaser = threading.Timer(30, (tmp_path / "release").touch)  # never hang the suite
        releaser.start()
        try:
            # Before, chunks queued for the starting worker waited the full 30 s for it.
            assert list(pool.map(square, range(8), chunksize=1)) == [x * x for x in range(8)]
            assert not (tmp_path / "release").exists()
        finally:
            (tmp_path / "release").touch()
            releaser.cancel()


def test_the_first_long_tasks_of_a_map_each_get_a_worker(tmp_path: Path) -> None:
    # Items 0 and 2 run until released; the others take 50 ms. A worker that was sent
    # its next chunk at once, before anything was known of their lengths, held item 2
    # behind item 0 while the other worker ran out of work (the map took twice as long
    # as multiprocessing's, whose workers take a task when they are free).
    with workpool.Pool(2, backend="process") as pool:
        task = functools.partial(hold, directory=str(tmp_path), held=(0, 2), others_take=0.05)
        futures = [pool.submit(task, x) for x in range(8)]
        both = wait_for(
            lambda: all((tmp_path / f"started-{x}").exists() for x in (0, 2)), timeout=10
        )
        (tmp_path / "release").touch()
        assert both, "item 2 waited behind item 0"
        assert [f.result(timeout=30) for f in futures] == list(range(8))


def test_when_work_is_sent_ahead_of_a_busy_worker() -> None:
    # The rule both the process and the Dask engines follow (chunking.ChunkTimes).
    times = ChunkTimes()
    assert not times.send_ahead  # nothing known yet
    times.add(0.001)
    assert times.send_ahead  # short chunks: a wait for the parent would cost most
    long_even = ChunkTimes()
    for _ in range(ChunkTimes.RECENT - 1):
        long_even.add(0.05)
        assert not long_even.send_ahead  # long ones: not before enough were seen
    long_even.add(0.05)
    assert long_even.send_ahead  # ... and were even
    long_even.add(1.0)
    assert not long_even.send_ahead  # one far longer than the rest: not now


def test_chunks_of_tiny_items_grow_as_soon_as_a_bigger_chunk_is_measured() -> None:
    # The rule every engine's chunks follow (chunking.ChunkSizer). A chunk's fixed cost
    # (its delivery: up to a millisecond on a loaded machine) makes one item look that
    # slow; a chunk of 16 then shows what an item really costs, and counts alone.
    sizer = ChunkSizer(fixed=None, workers=2, total=None, target_seconds=0.01)
    for _ in range(6):
        sizer.observe(1, 0.0005)
    assert sizer.next_size() == 16  # grown as far as one item's measure allows
    sizer.observe(16, 0.0006)  # 38 µs an item, not 500
    assert sizer.next_size() >= 100
    sizer.observe(128, 0.0002)
    sizer.observe(100, 0.02)  # then a smaller chunk that was slow: blended in
    slower = sizer.next_size()
    assert 1 < slower < 128 * 16


def test_loading_the_function_is_not_counted_as_running_the_first_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker loads a function once, with its first chunk. Counted as that chunk's run
    # time, it made each of its items look as slow as the load, and chunks of tiny items
    # grew slowly from there.
    observed: list[tuple[int, float]] = []
    observe = ChunkSizer.observe

    def spy(self: ChunkSizer, items: int, seconds: float) -> None:
        observed.append((items, seconds))
        observe(self, items, seconds)

    monkeypatch.setattr(ChunkSizer, "observe", spy)
    assert workpool.map(SlowToLoad(0.5), range(20), backend="process", workers=1) == [
        x * x for x in range(20)
    ]
    assert observed
    items, seconds = observed[0]
    assert seconds / items < 0.25, observed


def test_a_pool_runs_more_functions_than_a_worker_keeps() -> None:
    """Past the worker's cache of functions, the oldest are evicted and sent again."""
    import functools

    from workpool.backends.process.handle import FUNCTION_CACHE_SIZE

    functions = [functools.partial(pow, base) for base in range(FUNCTION_CACHE_SIZE + 10)]
    with workpool.Pool(1, backend="process") as pool:
        for _ in range(2):  # the second round needs the evicted ones back
            got = [pool.submit(fn, 2).result(timeout=30) for fn in functions]
            assert got == [base**2 for base in range(FUNCTION_CACHE_SIZE + 10)]


def test_a_worker_whose_pool_left_before_it_was_ready_ends_quietly() -> None:
    # A pool that ends while a worker still starts (a nested pool, say, whose process
    # exits): the worker finds no one to tell it is ready. No traceback on stderr.
    script = textwrap.dedent(
        """
        import os, socket
        from workpool.backends.process import protocol
        from workpool.backends.process.framing import send_frame
        from workpool.backends.process.parent_watch import WatchEnd
        from workpool.backends.process.slots import SharedSlots
        from workpool.backends.process.worker import worker_main

        parent, child = socket.socketpair()
        send_frame(parent, *protocol.encode_init(None))
        parent.close()
        # The parent-death watch looks at a pipe kept open here: it cannot end this
        # process first, so the worker surely meets the closed socket itself.
        watched, kept = os.pipe()
        worker_main(child, SharedSlots(1), 0, 0, WatchEnd(watched))
        print("ended quietly")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stderr == ""
    assert done.stdout == "ended quietly\n"


def test_an_idle_pool_uses_no_cpu() -> None:
    # A worker with nothing to do looks for work only briefly after its last result
    # (worker.SPIN_SECONDS), then sleeps: a pool kept open in a long-lived program,
    # between bursts of work, must not keep a CPU busy.
    with workpool.Pool(2, backend="process") as pool:
        assert list(pool.map(square, range(200))) == [x * x for x in range(200)]
        for x in range(20):  # one task at a time: each ends with its worker out of work
            assert pool.submit(square, x).result() == x * x
        workers = psutil.Process().children(recursive=True)
        assert workers

        def cpu_seconds() -> float:
            total = 0.0
            for process in workers:
                times = process.cpu_times()
                total += times.user + times.system
            return total

        before = cpu_seconds()
        threading.Event().wait(0.5)  # the idle spell whose cost is measured
        spent = cpu_seconds() - before
    assert spent < 0.05, f"idle workers used {spent:.3f} s of CPU in 0.5 s"


def test_no_process_of_a_program_outlives_it() -> None:
    # The hook below is registered before workpool's, so it runs after them (atexit is
    # last in, first out): by then the zygote must have ended and been collected by
    # the program, and every worker by the zygote. Before, the zygote was only told to
    # end: it outlived the program for a moment, and so, now and then, did a worker
    # it had not collected yet; both stayed zombies where the system's first process
    # collects no orphans.
    program = textwrap.dedent(
        """
        import atexit, os
        zygotes, workers = [], set()

        def check():
            import psutil

            for pid in zygotes:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    print("zygote reaped")
                else:
                    print("zygote not reaped")
            print("workers left:", [pid for pid in workers if psutil.pid_exists(pid)])

        atexit.register(check)

        import psutil
        import workpool

        pids = workpool.map(lambda _: os.getpid(), range(8), backend="process", workers=2)
        workers.update(pids)
        zygotes += [p.pid for p in psutil.Process().children()]  # workers are its children
        print(len(zygotes), "zygote")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["1 zygote", "zygote reaped", "workers left: []"], (
        done.stdout
    )


def test_a_chunk_the_supervisor_fails_to_send_fails_its_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whatever goes wrong in sending a chunk breaks the pool; the chunk itself, taken
    # from the queue and not yet given to a worker, must fail too, or its caller waits
    # for ever (as it did when an option's value made the chunk's header overflow).
    from workpool.backends.process import protocol

    real = protocol.encode_chunk

    def encode_chunk(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "workpool-supervisor":
            raise RuntimeError("a bug while sending")
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "encode_chunk", encode_chunk)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            with workpool.Pool(1, backend="process") as pool:
                # The first keeps the worker busy, so the others queue for the supervisor.
                futures = [pool.submit(sleep_then_pid, 0.2)]
                futures += [pool.submit(square, x) for x in range(5)]
                for future in futures:
                    future.result()
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "a caller waits for ever on a chunk nobody has"
    assert outcome and isinstance(outcome[0], workpool.BrokenPool), outcome


def test_a_task_running_when_the_pool_breaks_fails_with_broken_pool(tmp_path: Path) -> None:
    # As the queued tasks do, and as the stdlib's process pool does: the task's worker
    # is stopped with the pool, and a CancelledError would hide why (a worker that could
    # not start for want of file descriptors, say, as `workpool bench` met).
    pool = workpool.Pool(1, backend="process")
    try:
        running = pool.submit(hold, 0, str(tmp_path), (0,))
        assert wait_for(lambda: (tmp_path / "started-0").exists(), timeout=30)
        supervisor = pool._backend._supervisor  # type: ignore[attr-defined]

        def react(*args: Any) -> bool:
            raise OSError(24, "Too many open files")

        supervisor._react = react  # its next round fails, as a worker's start can
        queued = pool.submit(square, 1)  # and wakes it
        for future in (running, queued):
            error = future.exception(timeout=30)
            assert isinstance(error, workpool.BrokenPool), repr(error)
            assert "Too many open files" in str(error)
    finally:
        (tmp_path / "release").touch()
        pool.shutdown()


@pytest.mark.skipif(not _platform.FORK_ZYGOTE, reason="the zygote is exec'd here, not forked")
def test_a_thread_of_c_code_alone_brings_no_fork_warning() -> None:
    # faulthandler's watchdog (pytest's faulthandler_timeout starts one) is a thread
    # of C code, not of Python: the zygote is still forked, as for OpenBLAS's threads,
    # and `python -X dev` must not warn the user that workpool forked with threads.
    program = textwrap.dedent(
        """
        import faulthandler
        import workpool
        from workpool.backends.process import zygote

        if __name__ == "__main__":
            faulthandler.dump_traceback_later(60)
            print(workpool.map(abs, [-1, -2], backend="process"), zygote._zygote is not None)
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "2]", "True"]
    assert done.stderr == ""


def test_the_zygote_keeps_no_pipe_or_connection_of_the_program_open(tmp_path: Path) -> None:
    # The zygote outlives every pool. Forked from the program, it held a copy of each
    # descriptor the program had open at its first pool: a pipe the program closed
    # afterwards never reached end of file (a `cat` fed by Popen ran on, the program
    # waiting for it hung), nor did a connection the program closed. A file the program
    # logs to stays with the workers of a forked zygote, as with forked workers.
    program = textwrap.dedent(
        """
        import logging, os, select, socket, subprocess, sys
        import workpool

        log = sys.argv[1]
        logging.basicConfig(filename=log, level=logging.INFO, format="%(message)s")
        feed = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        read_end, write_end = os.pipe()
        ours, peer = socket.socketpair()

        def task(x):
            logging.info("task %d", x)
            return os.getpid()

        pids = workpool.map(task, range(2), backend="process", workers=2)
        pids += [child.pid for child in __import__("psutil").Process().children()]
        os.close(write_end)
        ours.close()
        feed.stdin.close()
        print(bool(select.select([read_end], [], [], 10)[0]) and os.read(read_end, 1) == b"")
        peer.settimeout(10)
        print(peer.recv(1) == b"")
        print(feed.wait(timeout=10))
        print(*pids)
        """
    )
    log = tmp_path / "tasks.log"
    done = subprocess.run(
        [sys.executable, "-c", program, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pipe_ended, connection_ended, cat_code, pids = done.stdout.splitlines()
    assert (pipe_ended, connection_ended, cat_code) == ("True", "True", "0")
    if _platform.FORK_ZYGOTE:  # an exec'd zygote has none of the program's logging
        assert sorted(log.read_text().splitlines()) == ["task 0", "task 1"]
    assert wait_for(lambda: not any(psutil.pid_exists(int(pid)) for pid in pids.split()))


def test_workers_draw_numpy_random_numbers_of_their_own(tmp_path: Path) -> None:
    # NumPy's global random state, unlike Python's `random`, is not reseeded in a forked
    # process: once the program had drawn from it, every worker forked from the zygote,
    # and each that replaced one, drew the very same numbers (spawned workers do not).
    # A seed the initializer sets is the user's, and is kept.
    pytest.importorskip("numpy")
    program = textwrap.dedent(
        """
        import os, random
        import numpy as np
        import workpool

        data = np.random.random(3)

        def draw(_):
            return os.getpid(), float(np.random.random()), random.random()

        with workpool.Pool(2, max_tasks_per_worker=1) as pool:
            drawn = list(pool.map(draw, range(6), chunksize=1))
        seeding = dict(initializer=np.random.seed, initargs=(7,), max_tasks_per_worker=1)
        with workpool.Pool(2, **seeding) as pool:
            seeded = list(pool.map(draw, range(2), chunksize=1))
        pids = {pid for pid, _, _ in drawn + seeded}
        print(len({pid for pid, _, _ in drawn}), len({value for _, value, _ in drawn}))
        print(len({value for _, _, value in drawn}))
        print(len({value for _, value, _ in seeded}))
        print(*pids)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    workers_and_numpy_values, python_values, seeded_values, pids = done.stdout.splitlines()
    assert (workers_and_numpy_values, python_values, seeded_values) == ("6 6", "6", "1")
    assert wait_for(lambda: not any(psutil.pid_exists(int(pid)) for pid in pids.split()))
