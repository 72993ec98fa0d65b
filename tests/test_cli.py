"""The `workpool` command: bench's table, JSON and plot; advise and its errors."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import group_members, wait_for
from helpers import png_size, run_cli_without_matplotlib
from workpool.cli import main

TASKS = """
import time

def slow_square(x):
    time.sleep(0.002)
    return x * x

def pair(a, b):
    return a + b

def length(text):
    return len(text)

not_callable = 42

def explode():
    raise RuntimeError("boom")
"""


@pytest.fixture
def tasks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_tasks.py").write_text(TASKS)
    (tmp_path / "broken_module.py").write_text("raise ImportError('this module is broken')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workpool.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )


def test_bench_prints_the_table_and_writes_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli(
        "bench",
        "--quick",
        "--workload",
        "tiny,io",
        "--workers",
        "1,2",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("usable CPUs", "speedup", "efficiency", "serial", "thread", "process"):
        assert text in out
    headline = re.search(r"io: ([a-z, ]+) (win|wins|tie) \(", out)
    assert headline is not None and "serial" not in headline.group(1)
    data = json.loads(out_json.read_text())
    assert data["machine"]["usable_cpus"] >= 1
    names = [w["name"] for w in data["workloads"]]
    assert names == ["tiny", "io"]
    io = data["workloads"][1]
    assert len(io["serial_seconds"]) == 3
    from workpool._options import BACKENDS

    engines = ["thread", "process"] + (["interpreter"] if "interpreter" in BACKENDS else [])
    assert {(c["backend"], c["workers"]) for c in io["configurations"]} == {
        (engine, count) for engine in engines for count in (1, 2)
    }
    serial_median = statistics.median(io["serial_seconds"])
    for config in io["configurations"]:
        # What the table reports is what was timed: speedup = serial time / pooled time.
        assert len(config["seconds"]) == 3
        assert config["median_seconds"] == statistics.median(config["seconds"])
        assert config["speedup"] == pytest.approx(serial_median / config["median_seconds"])
    width, height = png_size(out_png)
    assert 400 <= width <= 3000
    assert 300 <= height <= 3000
    assert out_png.stat().st_size > 10_000


def test_bench_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    args = ["bench", "--quick", "--workload", "tiny", "--plot", str(tmp_path / "x.png")]
    result = run_cli_without_matplotlib(args)
    assert result.returncode == 2
    assert "pip install 'workpool[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "worker counts must be positive"),
        (["--workers", "two"], "comma-separated positive integers"),
        (["--workers", "1,,2"], "comma-separated positive integers"),
        (["--workers", "100000"], "at most 512 workers a pool"),
        (["--workload", "gpu"], "unknown workload 'gpu'; choose from cpu, io, numpy, tiny"),
    ],
)
def test_bench_rejects_bad_arguments(args: list[str], message: str) -> None:
    result = run_cli("bench", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_bench_runs_a_workload_named_twice_once(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    args = ["--quick", "--workload", "tiny,io,tiny", "--workers", "1,1", "--json"]
    result = run_cli("bench", *args, str(out_json))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tiny: 100,000 squares") == 1
    data = json.loads(out_json.read_text())
    assert [w["name"] for w in data["workloads"]] == ["tiny", "io"]
    configurations = data["workloads"][0]["configurations"]
    assert len({c["backend"] for c in configurations}) == len(configurations)  # one size each


@pytest.mark.parametrize(
    "command",
    [
        ["bench", "--quick"],
        ["advise", "cli_tasks:slow_square", "--input", "in.jsonl"],
        ["trace", "summary", "run.json"],
        ["trace", "plot", "run.json", "-o", "run.png"],
        ["checkpoint", "info", "run.ckpt"],
        ["checkpoint", "accept", "run.ckpt"],
    ],
)
def test_an_unknown_option_is_named_with_its_commands_usage(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--colour", "red"])
    assert exit_info.value.code == 2
    name = " ".join(command[:2] if command[0] in ("trace", "checkpoint") else command[:1])
    err = capsys.readouterr().err
    assert f"usage: workpool {name} " in err
    assert f"workpool {name}: error: unrecognized arguments: --colour red" in err


def test_bench_refuses_an_output_it_cannot_write_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the formats a plot can be written in
    for args, message in [
        (["--json", str(tmp_path / "missing" / "raw.json")], "there is no directory"),
        (["--json", str(tmp_path)], "that is a directory"),
        (["--json", str(Path(__file__) / "raw.json")], "test_cli.py is a file, not a directory"),
        (["--json", "-"], "give a file name; the report goes to standard output"),
        (["--plot", str(tmp_path / "speedup.txt")], "give a file name ending in .png"),
        # No file can be made there, though root's permission bits say otherwise.
        *(
            [(["--json", "/proc/raw.json"], "no file can be written in /proc")]
            if os.path.isdir("/proc/self")
            else []
        ),
    ]:
        result = run_cli("bench", "--workload", "tiny", "--workers", "1", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""  # no table: nothing was timed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["bench", "--json", ""], "--json"),
        (["bench", "--plot", ""], "--plot"),
        (["advise", "mod:fn", "--input", ""], "--input"),
        (["trace", "summary", ""], "FILE"),
        (["trace", "plot", "run.json", "-o", ""], "-o/--output"),
        (["checkpoint", "info", ""], "FILE"),
        (["checkpoint", "clear", ""], "FILE"),
    ],
)
def test_an_empty_file_name_is_refused_as_a_bad_argument(
    command: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not taken for "." (what Path("") is), which messages would then name.
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: expected a file name; got ''" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_bench_output_that_fails_to_write_after_the_study_is_one_line() -> None:
    # /dev/full takes the file and fails the write, as a full disk does.
    result = run_cli(
        "bench", "--quick", "--workload", "tiny", "--workers", "1", "--json", "/dev/full"
    )
    assert result.returncode == 1, result.stderr  # the arguments were right: a failure
    assert "Traceback" not in result.stderr
    assert "/dev/full" in result.stderr


def test_bench_with_pools_too_large_for_the_machine_is_one_line() -> None:
    import resource

    def few_files() -> None:  # fewer than 64 process workers need
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    command = ["bench", "--quick", "--workload", "io", "--workers", "64"]
    bench = subprocess.Popen(
        [sys.executable, "-m", "workpool", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=few_files,
        start_new_session=True,  # a process group of its own, which its pools' processes join
    )
    try:
        _, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.communicate()
    assert bench.returncode == 1, err
    assert err.startswith("workpool bench: ") and err.count("\n") == 1, err
    assert "Too many open files" in err
    assert wait_for(lambda: not group_members(bench.pid), timeout=10)


# A program run from a terminal gets Python's Ctrl+C handler, even when the test suite
# was started by a shell that made its background jobs ignore SIGINT.
BENCH_IN_A_TERMINAL = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from workpool.cli import main
sys.exit(main(["bench", "--workload", "io", "--workers", "2"]))
"""


def test_ctrl_c_stops_bench_with_one_line_and_leaves_no_process() -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", BENCH_IN_A_TERMINAL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    helpers: list[psutil.Process] = []
    try:
        parent = psutil.Process(bench.pid)
        # Its zygote and two worker processes: the study has reached its process pools,
        # past the imports (CPython drops a Ctrl+C that lands in importlib's weakref
        # callbacks; a user would press it again, and so does this test if need be).
        assert wait_for(lambda: len(parent.children(recursive=True)) >= 3, timeout=60)
        helpers = parent.children(recursive=True)
        for _ in range(3):
            os.killpg(bench.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
            if wait_for(lambda: bench.poll() is not None, timeout=10):
                break
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.communicate()
    assert bench.returncode == 130, err
    assert err.strip().splitlines()[-1] == "workpool bench: interrupted"
    assert "Traceback" not in err
    assert wait_for(lambda: not any(_alive(p) for p in helpers), timeout=10)


def test_ctrl_c_while_the_arguments_are_read_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Reading --workload imports the workloads (NumPy among them): long enough, on a
    # cold start, for a Ctrl+C to land there.
    import workpool.cli

    def interrupted(text: str) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(workpool.cli, "_workload_names", interrupted)
    assert main(["bench", "--workload", "io"]) == 130
    assert capsys.readouterr().err == "workpool: interrupted\n"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_advise_prints_the_advice(tasks_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tasks_module / "in.jsonl").write_text("\n".join(str(i) for i in range(30)) + "\n")
    assert main(["advise", "cli_tasks:slow_square", "--input", "in.jsonl", "--total", "2000"]) == 0
    out = capsys.readouterr().out
    assert "backend" in out
    assert "thread" in out
    assert "why" in out
    # In words, not Python's: what was not measured (subinterpreters before 3.14, or
    # on too few items), and whether the function fails on other threads.
    assert not re.search(r"\b(None|True|False)\b", out)
    assert re.search(r"fails on other threads\W+no\b", out)


def test_advise_star_inputs(tasks_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tasks_module / "pairs.jsonl").write_text("[1, 2]\n[3, 4]\n\n[5, 6]\n")
    assert main(["advise", "cli_tasks:pair", "--input", "pairs.jsonl", "--star"]) == 0
    assert "serial" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "content", "message"),
    [
        ("no_such_module:f", "1\n", "cannot import module 'no_such_module'"),
        ("broken_module:f", "1\n", "this module is broken"),
        ("cli_tasks:missing", "1\n", "module 'cli_tasks' has no attribute 'missing'"),
        ("cli_tasks:not_callable", "1\n", "cli_tasks:not_callable is an int, not a function"),
        ("cli_tasks", "1\n", "expected MODULE:FUNCTION"),
        # A file's path where its import name belongs:
        ("cli_tasks.py:length", "1\n", "not a file: give cli_tasks:length"),
        ("./cli_tasks.py:length", "1\n", "not a file: give cli_tasks:length"),
        ("jobs/cli_tasks.py:length", "1\n", "not a file: run from jobs with cli_tasks:length"),
        ("cli_tasks:slow_square", "1\n2\n{oops\n", "line 3: not a JSON value"),
        ("cli_tasks:slow_square", "\n\n", "holds no inputs"),
        ("cli_tasks:pair", "1\n", "--star needs every line to be a JSON list"),
        # A JSON array of inputs, where one input per line is asked for:
        ("cli_tasks:slow_square", "[1, 2, 3]\n", "holds one JSON list of 3 values on one line"),
        # Lists given to a function of several arguments: the flag, not the keyword.
        ("cli_tasks:pair", "[1, 2]\n[3, 4]\n", "(--star calls fn(*item)"),
    ],
)
def test_advise_errors_are_clear(
    tasks_module: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    content: str,
    message: str,
) -> None:
    (tasks_module / "in.jsonl").write_text(content)
    extra = ["--star"] if target == "cli_tasks:pair" and not content.startswith("[") else []
    assert main(["advise", target, "--input", "in.jsonl", *extra]) == 2
    assert message in capsys.readouterr().err


SCRIPT_MODULE = """
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("path")
args = parser.parse_args()  # at import: a script, not a module of functions

def f(x):
    return x
"""


def test_advise_on_a_module_that_exits_when_imported_says_so(tasks_module: Path) -> None:
    # Its argparse sees its own name and no arguments, not workpool's command line,
    # and the last line says what happened, in one line, without a traceback.
    (tasks_module / "script_module.py").write_text(SCRIPT_MODULE)
    (tasks_module / "in.jsonl").write_text("1\n")
    result = subprocess.run(
        [sys.executable, "-m", "workpool", "advise", "script_module:f", "--input", "in.jsonl"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tasks_module,
    )
    assert result.returncode == 2
    assert "unrecognized arguments" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("workpool advise: importing module 'script_module' ended the program")
    assert "__main__" in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("total", ["-5", "x", "2.5"])
def test_advise_refuses_a_bad_total_as_it_refuses_bad_arguments(total: str) -> None:
    # Checked with the other arguments, before the module is imported or the input read
    # (neither exists here), and worded for the command line: no Python "None".
    result = run_cli("advise", "no_such_module:f", "--input", "missing.jsonl", "--total", total)
    assert result.returncode == 2
    assert f"argument --total: expected an integer >= 0; got {total!r}" in result.stderr
    assert "None" not in result.stderr


def test_advise_reads_standard_input_given_a_dash(
    tasks_module: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As most command-line tools do: `... | workpool advise mod:fn --input -`.
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1, 2]\n\n[3, 4]\n"))
    assert main(["advise", "cli_tasks:pair", "--input", "-", "--star"]) == 0
    assert "serial" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n{oops\n"))
    assert main(["advise", "cli_tasks:slow_square", "--input", "-"]) == 2
    assert "standard input, line 2: not a JSON value" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["advise", "cli_tasks:slow_square", "--input", "-"]) == 2
    assert "standard input holds no inputs" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", None)  # as Python sets it when started with it closed
    assert main(["advise", "cli_tasks:slow_square", "--input", "-"]) == 2
    assert capsys.readouterr().err == "workpool advise: cannot read standard input: it is closed\n"


def test_advise_unreadable_input(tasks_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", "cli_tasks:slow_square", "--input", "missing.jsonl"]) == 2
    assert "cannot read missing.jsonl" in capsys.readouterr().err
    (tasks_module / "binary.jsonl").write_bytes(b"\xff\xfe\x00")
    assert main(["advise", "cli_tasks:slow_square", "--input", "binary.jsonl"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_advise_reads_its_input_as_utf8_whatever_the_locale(tasks_module: Path) -> None:
    (tasks_module / "in.jsonl").write_text('"caf\u00e9"\n"na\u00efve"\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "workpool", "advise", "cli_tasks:length", "--input", "in.jsonl"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tasks_module,
        # An ASCII locale for files, UTF-8 for the table printed.
        env={**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
        | {"PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    assert "advice for cli_tasks:length" in result.stdout


def test_the_help_says_what_each_exit_status_means() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Exit status: 0 done; 2 a problem with the command's arguments" in text
    assert "1 the work could not be done" in text and "130 interrupted" in text


def test_every_argument_of_every_command_is_explained_in_its_help() -> None:
    import argparse

    from workpool.cli import _parser

    unexplained, parsers = [], [_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif not action.help:
                unexplained.append(
                    f"{parser.prog} {'/'.join(action.option_strings) or action.metavar}"
                )
    assert unexplained == []


def test_no_command_prints_help() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "bench" in result.stderr
    assert "advise" in result.stderr


def test_python_dash_m_workpool_is_the_command() -> None:
    # Where the console script is not on the PATH (a venv not activated, say), the
    # messages' `workpool checkpoint accept FILE` is still one `python -m` away.
    result = subprocess.run(
        [sys.executable, "-m", "workpool", "trace", "summary", "no-such-trace.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("workpool trace: no-such-trace.json: no such file")
