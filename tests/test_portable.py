"""The portable paths (macOS's) really taken on Linux under ``WORKPOOL_PORTABLE=1``.

Each test runs a small program with the variable set, whichever pass of the suite
this is, and looks at its processes from outside through ``/proc``: no memfd among a
worker's descriptors, a zygote that was exec'd rather than forked, workers that end
through the parent-death pipe when only the parent is SIGKILLed, no ``/dev/shm`` entry
after crashes. The simulated Windows import is here too (``windows_sim.py``), and a
check that the macOS simulation CI's portable run starts with (``macos_sim``) holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from tests.conftest import left_in_shared_memory, named_shared_memory, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PORTABLE_ENV = {**os.environ, "WORKPOOL_PORTABLE": "1"}

# A pool whose workers report what they hold, then (with "hang") block until killed.
PROGRAM = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import workpool
    from workpool.backends.process import parent_watch, zygote

    def descriptors(array, hang):
        links = {{}}
        for fd in os.listdir("/proc/self/fd"):
            try:
                links[fd] = os.readlink(f"/proc/self/fd/{{fd}}")
            except OSError:
                pass
        line = json.dumps({{"pid": os.getpid(), "fds": links, "sum": float(array.sum())}})
        os.write(1, (line + "\\n").encode())  # one write: the two workers share stdout
        while hang:
            time.sleep(1)
        return os.getpid()

    if __name__ == "__main__":
        array = np.ones(1 << 18)  # 2 MiB: above share_threshold, so it goes in shared memory
        hang = sys.argv[1] == "hang"
        method = None if sys.argv[2] == "default" else sys.argv[2]
        with workpool.Pool(workers=2, start_method=method) as pool:
            watch = parent_watch.read_end()
            helper = zygote._zygote.pid if zygote._zygote is not None else None
            print(json.dumps({{"parent": os.getpid(), "zygote": helper,
                              "watch": os.readlink(f"/proc/self/fd/{{watch}}")}}), flush=True)
            list(pool.map(descriptors, [array, array], [hang, hang], chunksize=1))
    """
)


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "portable_program.py"
    script.write_text(PROGRAM.format())
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=PORTABLE_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_reports(parent: subprocess.Popen[str], count: int) -> list[dict[str, object]]:
    assert parent.stdout is not None
    reports = []
    for _ in range(count):
        line = parent.stdout.readline()
        if not line:
            parent.kill()
            pytest.fail(f"the program ended early: {parent.communicate()[1][-3000:]}")
        reports.append(json.loads(line))
    return reports


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_portable_workers_share_memory_without_memfd(tmp_path: Path) -> None:
    parent = start(tmp_path, "run", "default")
    head, *workers = read_reports(parent, 3)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    for worker in workers:
        links = list(worker["fds"].values())  # type: ignore[attr-defined]
        assert worker["sum"] == float(1 << 18)
        assert not [link for link in links if link.startswith("/memfd:")], links
        # The array's segment: a shm object already unlinked, so it has no name left.
        assert [link for link in links if link.startswith("/dev/shm/wp-")], links
        assert all(link.endswith(" (deleted)") for link in links if "/dev/shm/" in link)
        # The parent-death pipe's read end, the very pipe the parent holds.
        assert head["watch"] in links


def test_portable_zygote_is_exec_d_and_says_so(tmp_path: Path) -> None:
    parent = start(tmp_path, "hang", "default")  # the zygote stays until we have looked
    head, *workers = read_reports(parent, 3)
    pids = [int(w["pid"]) for w in workers]  # type: ignore[call-overload]
    pids.append(int(head["zygote"]))  # type: ignore[call-overload]
    try:
        command = psutil.Process(pids[-1]).cmdline()
    finally:
        parent.kill()
        parent.communicate(timeout=30)
        assert wait_for(lambda: all(gone(pid) for pid in pids), timeout=10)
    assert "workpool-zygote" in command
    # Exec'd, not forked: a forked zygote would carry the program's command line.
    assert not any(part.endswith("portable_program.py") for part in command)


@pytest.mark.parametrize("method", ["default", "fork", "spawn"])
def test_portable_workers_end_when_only_the_parent_is_sigkilled(
    tmp_path: Path, method: str
) -> None:
    before = named_shared_memory()
    parent = start(tmp_path, "hang", method)
    head, *workers = read_reports(parent, 3)
    pids = [int(w["pid"]) for w in workers]  # type: ignore[call-overload]
    if head["zygote"] is not None:
        pids.append(int(head["zygote"]))  # type: ignore[call-overload]
    os.kill(parent.pid, signal.SIGKILL)  # the parent alone, not its process group
    parent.communicate(timeout=30)
    try:
        assert wait_for(lambda: all(gone(pid) for pid in pids), timeout=5)
    finally:
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert not left_in_shared_memory(before)


# A script's own class among the arguments: the exec'd zygote never runs the script,
# so its workers' ``__main__`` has no such name (multiprocessing's spawn re-runs the
# script under another name to find it).
MAIN_CLASS_PROGRAM = textwrap.dedent(
    """
    import dataclasses, json
    import workpool

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    def norm(point):
        return point.x * point.x + point.y * point.y

    def echo(point):
        return point, isinstance(point, Point)

    if __name__ == "__main__":
        points = [Point(1, 2), Point(3, 4)]
        norms = workpool.map(norm, points, backend="process", workers=2)
        with workpool.Pool(2) as pool:
            back, there = pool.submit(echo, points[1]).result(timeout=60)
        print(json.dumps({"norms": norms, "back": dataclasses.asdict(back),
                          "same_class": type(back) is Point, "there": there}))
    """
)


def test_portable_workers_take_arguments_of_the_scripts_own_class(tmp_path: Path) -> None:
    script = tmp_path / "points.py"
    script.write_text(MAIN_CLASS_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script)], env=PORTABLE_ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == {"norms": [5, 25], "back": {"x": 3, "y": 4}, "same_class": True, "there": True}


# What a worker knows of the program that started it: its command line and its
# interpreter's options. An exec'd zygote is a new interpreter with a command line of
# its own; the workers it forks must see the program's, as forked ones do.
PROGRAM_SEEN_BY_WORKERS = textwrap.dedent(
    """
    import json, sys
    import workpool

    def seen(_):
        return [sys.argv, sys.flags.optimize, sys.flags.dev_mode, sys.warnoptions]

    if __name__ == "__main__":
        here = seen(0)
        print(json.dumps({"here": here, "workers": workpool.map(seen, range(2), backend="process"),
                          "exec": workpool.map(seen, range(2), backend="process",
                                               start_method="spawn")}))
    """
)


@pytest.mark.parametrize("portable", [True, False])
def test_workers_see_the_program_s_command_line_and_options(tmp_path: Path, portable: bool) -> None:
    script = tmp_path / "seen.py"
    script.write_text(PROGRAM_SEEN_BY_WORKERS)
    done = subprocess.run(
        [sys.executable, "-O", "-X", "dev", "-W", "error::UserWarning", str(script), "a", "b"],
        env=PORTABLE_ENV if portable else {**os.environ, "WORKPOOL_PORTABLE": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    here = report["here"]
    assert here[0] == [str(script), "a", "b"] and here[1:3] == [1, True]
    assert "error::UserWarning" in here[3]
    assert report["workers"] == [here, here]
    assert report["exec"] == [here, here]
    assert "Warning" not in done.stderr  # -X dev shows ResourceWarnings: none were left


# A pool's own children (fork, spawn), watched through their multiprocessing sentinel:
# once shutdown returns, each has been collected, as ProcessPoolExecutor's are, rather
# than left a zombie until the next process the program starts.
REAPED_PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    import workpool

    def pid(_):
        return os.getpid()

    if __name__ == "__main__":
        with workpool.Pool(2, start_method=sys.argv[1]) as pool:
            pids = set(pool.map(pid, range(20), chunksize=1))
        unreaped = []
        for worker in pids:
            try:
                os.kill(worker, 0)  # a zombie is still there to be signalled
                unreaped.append(worker)
            except ProcessLookupError:
                pass
        print(json.dumps({"workers": len(pids), "unreaped": unreaped}))
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_portable_shutdown_collects_the_pools_own_children(tmp_path: Path, method: str) -> None:
    script = tmp_path / "reaped.py"
    script.write_text(REAPED_PROGRAM)
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), method],
        env=PORTABLE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["workers"] >= 1
    assert report["unreaped"] == []


# The zygote killed from outside while its workers run tasks: their exit pipes close
# without a status, and nothing can tell any more when they end. They must not run on,
# unseen, past their pool.
ZYGOTE_KILLED_PROGRAM = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import psutil
    import workpool
    from workpool.backends.process import zygote

    def nap(seconds, marks=None):
        if marks is not None:
            open(os.path.join(marks, str(os.getpid())), "w").close()
        time.sleep(seconds)
        return os.getpid()

    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    if __name__ == "__main__":
        marks = sys.argv[1]
        with workpool.Pool(2) as pool:
            busy = [pool.submit(nap, 60, marks) for _ in range(2)]
            deadline = time.monotonic() + 30
            while len(os.listdir(marks)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # until each worker runs one of them
            workers = [int(name) for name in os.listdir(marks)]
            os.kill(zygote.get_zygote().pid, signal.SIGKILL)
            errors = []
            for future in busy:
                try:
                    future.result(timeout=30)
                except Exception as exc:
                    errors.append(type(exc).__name__)
            goes_on = pool.submit(nap, 0).result(timeout=60) not in workers
        deadline = time.monotonic() + 5
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.01)
        left = [pid for pid in workers if running(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        print(json.dumps({"workers": len(workers), "errors": errors, "goes_on": goes_on,
                          "left": left}))
    """
)


def test_portable_workers_of_a_killed_zygote_do_not_outlive_their_pool(tmp_path: Path) -> None:
    script = tmp_path / "zygote_killed.py"
    script.write_text(ZYGOTE_KILLED_PROGRAM)
    marks = tmp_path / "marks"
    marks.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(marks)],
        env=PORTABLE_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == {
        "workers": 2,
        "errors": ["WorkerCrashed", "WorkerCrashed"],
        "goes_on": True,
        "left": [],
    }


# Ctrl+C while the exec'd zygote is still starting: it must not die of it (printing a
# traceback from a process the user never started), since the program handles it.
CTRL_C_AT_ZYGOTE_START = textwrap.dedent(
    """
    import json, os, signal
    import workpool
    from workpool.backends.process import zygote

    # Handled here by doing nothing. (A handler, not SIG_IGN: an ignored signal would
    # stay ignored across exec, in the zygote too, as in a shell's background job.)
    signal.signal(signal.SIGINT, lambda *_: None)
    helper = zygote.get_zygote()
    os.killpg(0, signal.SIGINT)  # as the terminal does, to the whole process group
    values = workpool.map(abs, [-1, -2], backend="process", workers=2)
    print(json.dumps({"values": values, "same_zygote": zygote.get_zygote() is helper}))
    """
)


def test_ctrl_c_while_the_zygote_starts_is_left_to_the_program() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_ZYGOTE_START],
        env=PORTABLE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # its own process group, for the killpg
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"values": [1, 2], "same_zygote": True}
    assert "KeyboardInterrupt" not in done.stderr


def test_windows_import_and_clear_refusal_simulated() -> None:
    program = Path(__file__).with_name("windows_sim.py")
    done = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["serial"] == report["thread"] == report["auto"] == [0, 1, 4, 9]
    assert "needs a POSIX system" in report["process"]
    assert "'thread'" in report["process"] and "'serial'" in report["process"]
    assert report["process_modules"] == []


# Under the macOS simulation: what a worker (forked by the exec'd zygote) lacks, and
# data far larger than a socket buffer crossing both ways, in many pieces.
MACOS_SIM_PROGRAM = textwrap.dedent(
    """
    import json, os, select, socket
    import numpy as np
    import workpool

    def inside(array):
        a, b = socket.socketpair()
        room = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        a.close(), b.close()
        lacks = [not hasattr(os, "pipe2"), not hasattr(os, "memfd_create"),
                 not hasattr(select, "epoll"), not hasattr(socket, "SOCK_CLOEXEC")]
        return {"lacks": all(lacks), "room": room, "sum": float(array.sum()),
                "back": bytes(300_000)}

    if __name__ == "__main__":
        big = np.ones(1 << 17)  # 1 MiB: a copy, below share_threshold
        shared = np.ones(1 << 20)  # 8 MiB: in shared memory
        out = workpool.map(inside, [big, shared, big], backend="process", workers=2)
        print(json.dumps({"lacks": [o["lacks"] for o in out], "room": max(o["room"] for o in out),
                          "sums": [o["sum"] for o in out],
                          "back": [len(o["back"]) for o in out]}))
    """
)


def test_the_macos_simulation_reaches_the_workers_and_data_crosses_in_pieces(
    tmp_path: Path,
) -> None:
    # CI's portable run starts every interpreter this way; this shows the simulation
    # takes hold in the workers and that the engine's messages cross 8 KiB buffers.
    script = tmp_path / "on_a_mac.py"
    script.write_text(MACOS_SIM_PROGRAM)
    env = {**PORTABLE_ENV, "PYTHONPATH": str(Path(__file__).with_name("macos_sim"))}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["lacks"] == [True, True, True]
    assert report["room"] <= 16384  # Linux reports twice what was asked for
    assert report["sums"] == [float(1 << 17), float(1 << 20), float(1 << 17)]
    assert report["back"] == [300_000] * 3
