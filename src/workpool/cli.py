"""The ``workpool`` command: ``bench`` (the scaling study), ``advise`` (for your function),
``checkpoint`` (what a checkpoint file holds; clear it; accept a changed function) and
``trace`` (reading a timeline written by ``trace=FILE``)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import workpool
from workpool.named_files import creation_error

__all__ = ["main"]


class CommandError(Exception):
    """A problem with what the user asked for; printed without a traceback."""

    status = 2  # as argparse's own usage errors


class CommandFailed(CommandError):
    """What was asked for could not be done (a full disk, a checkpoint in use)."""

    status = 1


# A study starts pools of each size; past this, a size is a typo, not a pool to start.
MAX_BENCH_WORKERS = 512


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 1,2,4,8; got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"worker counts must be positive integers; got {text!r}")
    if max(values) > MAX_BENCH_WORKERS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_BENCH_WORKERS} workers a pool; got {max(values)}"
        )
    return sorted(set(values))


def _item_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def _file_name(text: str) -> Path:
    # Path("") is ".", and a message about "." would name a file nobody gave.
    if not text:
        raise argparse.ArgumentTypeError("expected a file name; got ''")
    return Path(text)


def _workload_names(text: str) -> list[str]:
    from workpool.bench import WORKLOADS

    # Each named once, as --workers takes each size once: a repeat would be timed again.
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose from {', '.join(WORKLOADS)}"
        )
    return names


_TRACE_FILE_HELP = "a file written by trace=FILE (or another Chrome trace)"


def _parser() -> argparse.ArgumentParser:
    """The command's parser. Each (sub)command's parser is in its arguments as ``parser``,
    so that a problem is said with the usage of the command it was given to."""
    parser = argparse.ArgumentParser(
        prog="workpool",
        description="Run Python functions in parallel, and measure what parallelism buys here.",
        epilog="Exit status: 0 done; 2 a problem with the command's arguments or files; "
        "1 the work could not be done (an output that fails to write, a checkpoint in "
        "use); 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"workpool {workpool.__version__}")
    parser.set_defaults(parser=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench",
        help="the pool-size scaling study: serial vs threads vs processes",
        description="Time each workload serially and on threads and processes (and "
        "subinterpreters on Python 3.14+) at each pool size; print time, speedup and "
        "efficiency, and what the numbers show.",
    )
    bench.set_defaults(parser=bench)
    bench.add_argument("--quick", action="store_true", help="smaller workloads, 3 runs each")
    bench.add_argument(
        "--workers",
        type=_positive_ints,
        default=[1, 2, 4, 8],
        metavar="N,N,...",
        help="pool sizes to time (default 1,2,4,8)",
    )
    bench.add_argument(
        "--workload",
        type=_workload_names,
        default=None,
        metavar="NAME,...",
        help="workloads: cpu, io, numpy, tiny (default all)",
    )
    bench.add_argument(
        "--json", type=_file_name, metavar="FILE", help="write the raw numbers as JSON"
    )
    bench.add_argument("--plot", type=_file_name, metavar="FILE.png", help="write a speedup plot")

    advise = commands.add_parser(
        "advise",
        help="time a function of yours and say which backend fits it",
        description="Import MODULE:FUNCTION, time it on the inputs in FILE (one JSON value "
        "per line), and print the advice with the numbers behind it.",
    )
    advise.set_defaults(parser=advise)
    advise.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="the function, as import names: mypackage.tasks:resize (modules in the "
        "current directory are found)",
    )
    advise.add_argument(
        "--input",
        type=_file_name,
        required=True,
        metavar="FILE",
        help="one JSON value per line (- reads standard input)",
    )
    advise.add_argument(
        "--star", action="store_true", help="each input is a JSON list of arguments"
    )
    advise.add_argument(
        "--total",
        type=_item_count,
        default=None,
        metavar="N",
        help="how many items the real job has (default: the number of lines)",
    )

    checkpoint = commands.add_parser(
        "checkpoint",
        help="inspect or change a checkpoint file (checkpoint=... of map/imap/starmap)",
        description="What a checkpoint file holds, and the two deliberate changes to it.",
    )
    actions = checkpoint.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, summary_line, description in [
        (
            "info",
            "items done and failed, the function it belongs to, its size on disk",
            "Show what the checkpoint holds. Safe while a call is using it.",
        ),
        (
            "clear",
            "remove every result, so that the next call starts over",
            "Empty the checkpoint: results, failures and the function it belongs to. The "
            "next call with it runs everything and may use any function.",
        ),
        (
            "accept",
            "keep the results for a changed function (after a fix, a Python upgrade)",
            "Mark the checkpoint so that the next call adopts its function as the "
            "checkpoint's, keeping every result, instead of refusing it with "
            "CheckpointMismatch. The input is still checked position by position.",
        ),
    ]:
        action = actions.add_parser(name, help=summary_line, description=description)
        action.set_defaults(parser=action)
        action.add_argument(
            "file",
            type=_file_name,
            metavar="FILE",
            help="a file given to map, imap or starmap as checkpoint=FILE",
        )

    trace = commands.add_parser(
        "trace",
        help="where the time of a traced call went (a file written by trace=FILE)",
        description="Read a timeline written by map(..., trace=FILE) and summarize or draw it.",
    )
    trace_actions = trace.add_subparsers(dest="action", metavar="ACTION", required=True)
    summary = trace_actions.add_parser(
        "summary",
        help="start-up, busy and idle time per worker, shipping vs running, stragglers",
        description="Print each worker's start-up, busy and idle share of the call, how "
        "the busy time splits into shipping and running, the slowest chunks, and what "
        "the numbers mean.",
    )
    summary.set_defaults(parser=summary)
    summary.add_argument("file", type=_file_name, metavar="FILE", help=_TRACE_FILE_HELP)
    plot = trace_actions.add_parser(
        "plot",
        help="draw the timeline as a Gantt chart (needs the plot extra)",
        description="Draw one row per worker and per caller activity, one bar per chunk.",
    )
    plot.set_defaults(parser=plot)
    plot.add_argument("file", type=_file_name, metavar="FILE", help=_TRACE_FILE_HELP)
    plot.add_argument(
        "-o",
        "--output",
        type=_file_name,
        required=True,
        metavar="FILE.png",
        help="the file to draw it in (.png, or .svg, .pdf, ...)",
    )
    return parser


def _file_path_hint(module_name: str, attribute: str) -> str:
    """What to add to an import error when ``module_name`` is a file's path, not the
    name ``import`` takes; "" otherwise."""
    if "/" not in module_name and not module_name.endswith(".py"):
        return ""
    path = Path(module_name)
    name = f"{path.stem if path.suffix == '.py' else path.name}:{attribute}"
    if str(path.parent) == ".":
        return f"; MODULE is a name to import, not a file: give {name}"
    return f"; MODULE is a name to import, not a file: run from {path.parent} with {name}"


def load_function(target: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function may be dotted, like ``Class.method``)."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise CommandError(f"expected MODULE:FUNCTION, like mypackage.tasks:resize; got {target!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`, find modules here
    # A script that reads its command line when imported reads its own name, not
    # workpool's arguments (which it would call unrecognized, in workpool's name).
    argv, sys.argv = sys.argv, [module_name]
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
            + _file_path_hint(module_name, attribute)
        ) from exc
    except SystemExit as exc:
        raise CommandError(
            f"importing module {module_name!r} ended the program (SystemExit: {exc.code!r}): "
            'its script part runs when imported; put it under `if __name__ == "__main__":`'
        ) from None
    finally:
        sys.argv = argv
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(obj):
        kind = type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise CommandError(f"{target} is {article} {kind}, not a function")
    return obj  # type: ignore[no-any-return]


def read_inputs(path: Path) -> list[Any]:
    """One JSON value per line; blank lines are skipped. ``-`` reads standard input."""
    from_stdin = str(path) == "-"
    name = "standard input" if from_stdin else str(path)
    try:
        if not from_stdin:
            # JSON is UTF-8 whatever the locale says (the C locale's ASCII, say).
            text = path.read_text(encoding="utf-8")
        elif sys.stdin is None:  # the program was started with it closed (<&-)
            raise CommandError(f"cannot read {name}: it is closed")
        else:
            text = sys.stdin.read()
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"cannot read {name}: not UTF-8 text ({exc.reason})") from exc
    inputs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            inputs.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{name}, line {number}: not a JSON value ({exc.msg} at column {exc.colno})"
            ) from None
    if not inputs:
        raise CommandError(f"{name} holds no inputs: write one JSON value per line")
    return inputs


def _measurement(value: Any) -> str:
    """One of ``Advice.measurements`` in words, not as Python writes it (None, False)."""
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.4g} s" for k, v in value.items())
    return str(value)


def _run_advise(args: argparse.Namespace, console: Console) -> int:
    fn = load_function(args.target)
    inputs = read_inputs(args.input)
    if args.star and not all(isinstance(item, list) for item in inputs):
        raise CommandError("--star needs every line to be a JSON list of arguments")
    if not args.star and len(inputs) == 1 and isinstance(inputs[0], list) and inputs[0]:
        # One sample item says nothing about running many: this is a JSON array of inputs.
        raise CommandError(
            f"{args.input} holds one JSON list of {len(inputs[0])} values on one line; "
            "write one input per line (JSON Lines), as many as a sample needs"
        )
    items = [tuple(item) for item in inputs] if args.star else inputs
    try:
        advice = workpool.advise(fn, items, star=args.star, total=args.total)
    except (TypeError, ValueError) as exc:
        # The library's hints name its keyword; here the same switch is a flag.
        raise CommandError(str(exc).replace("star=True", "--star")) from exc
    table = Table(title=f"advice for {args.target}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("backend", advice.backend)
    table.add_row("workers", str(advice.workers))
    table.add_row("chunksize", str(advice.chunksize))
    table.add_row("why", advice.reason)
    for key, value in advice.measurements.items():
        table.add_row(key.replace("_", " "), _measurement(value))
    console.print(table)
    return 0


def _check_output(option: str, path: Path, *, not_stdout: str) -> None:
    """Refuse, before any work, a path no file can be written at; ``not_stdout`` says
    why ``-`` is not standard output here."""
    if str(path) == "-":
        raise CommandError(f"{option} -: give a file name; {not_stdout}")
    if path.is_dir():
        raise CommandError(f"{option} {path}: that is a directory; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise CommandError(f"{option} {path}: {path.parent} is a file, not a directory")
    if not path.parent.is_dir():
        raise CommandError(f"{option} {path}: there is no directory {path.parent}")
    failure = creation_error(str(path.parent))
    if failure is not None:
        raise CommandError(
            f"{option} {path}: no file can be written in {path.parent} "
            f"({failure.strerror or failure})"
        )


def _check_plot_output(option: str, path: Path, *, not_stdout: str) -> None:
    """As ``_check_output``, and the name must end in a format matplotlib can write."""
    _check_output(option, path, not_stdout=not_stdout)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return  # drawing says what to install
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix[1:].lower() not in formats:
        raise CommandError(
            f"{option} {path}: give a file name ending in .png "
            f"(or another format matplotlib writes: {', '.join(formats)})"
        )


def _run_bench(args: argparse.Namespace, console: Console) -> int:
    from workpool.bench import WORKLOADS, OutputUnwritable, PlotUnavailable, run_bench

    report_there = "the report goes to standard output"
    if args.json is not None:
        _check_output("--json", args.json, not_stdout=report_there)
    if args.plot is not None:
        _check_plot_output("--plot", args.plot, not_stdout=report_there)
    try:
        run_bench(
            workloads=args.workload or list(WORKLOADS),
            workers=args.workers,
            quick=args.quick,
            json_path=args.json,
            plot_path=args.plot,
            console=console,
        )
    except PlotUnavailable as exc:
        raise CommandError(str(exc)) from exc
    except (OutputUnwritable, workpool.WorkpoolError) as exc:
        # A pool that cannot run here (too few file descriptors or processes for its
        # size, say) ends the study; what the library says of it is the message.
        raise CommandFailed(str(exc)) from exc
    return 0


def _byte_size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _ranges(ranges: list[tuple[int, int]], shown: int = 4) -> str:
    parts = [f"{a:,}" if a == b else f"{a:,}..{b:,}" for a, b in ranges[:shown]]
    if len(ranges) > shown:
        more = len(ranges) - shown
        parts.append(f"and {more:,} more range{'' if more == 1 else 's'}")
    return ", ".join(parts) or "none"


def _run_checkpoint(args: argparse.Namespace, console: Console) -> int:
    from workpool import checkpoint
    from workpool.errors import CheckpointBusy

    path = str(args.file)
    try:
        if args.action == "info":
            found = checkpoint.summary(path)
            table = Table(title=f"checkpoint {path}", show_header=False)
            table.add_column(style="bold")
            table.add_column()
            function = "none yet"
            if found.function is not None:
                function = f"{found.function} (identity {found.function_digest})"
            table.add_row("function", function)
            if found.accept_next:
                table.add_row("accepting", "the next call's function becomes this checkpoint's")
            table.add_row("done", f"{found.items_done:,} items in {found.rows:,} chunks")
            table.add_row("positions", _ranges(found.ranges))
            table.add_row("failed", f"{found.failed:,} items (they run again on the next call)")
            side = ""
            if found.side_files:
                side = f", {found.side_files:,} side file{'s' if found.side_files > 1 else ''}"
            table.add_row("size on disk", _byte_size(found.bytes_on_disk) + side)
            table.add_row("format", f"{found.format_version}, {found.journal_mode} journal")
            if found.created:
                table.add_row(
                    "created",
                    f"{found.created} by workpool {found.workpool_version}, {found.python}",
                )
            console.print(table)
        elif args.action == "clear":
            removed = checkpoint.summary(path).items_done
            checkpoint.clear(path)
            print(f"{path}: cleared ({removed:,} results removed)")
        elif checkpoint.accept(path):
            print(
                f"{path}: the next call's function becomes this checkpoint's; its results are kept"
            )
        else:
            print(f"{path}: nothing to accept (it holds no results yet)")
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    except CheckpointBusy as exc:
        raise CommandFailed(str(exc)) from exc
    return 0


def _run_trace(args: argparse.Namespace, console: Console) -> int:
    from workpool.timeline.reading import TraceFileError, load

    try:
        timeline = load(args.file)
    except TraceFileError as exc:
        raise CommandError(str(exc)) from exc
    if args.action == "summary":
        from workpool.timeline.summary import print_summary, summarize

        print_summary(summarize(timeline), str(args.file), console)
        return 0
    from workpool.timeline.plot import PlotUnavailable, write_plot

    _check_plot_output("-o", args.output, not_stdout="the drawing is written to a file")
    try:
        write_plot(timeline, args.output)
    except PlotUnavailable as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandFailed(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    console.print(f"The timeline is drawn in {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        # Parsing imports what a command needs (the workloads, NumPy among them), which
        # takes long enough for a Ctrl+C to land in it.
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt:
        print("workpool: interrupted", file=sys.stderr)
        return 130
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    console = Console()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "bench":
            return _run_bench(args, console)
        if args.command == "checkpoint":
            return _run_checkpoint(args, console)
        if args.command == "trace":
            return _run_trace(args, console)
        return _run_advise(args, console)
    except CommandError as exc:
        print(f"workpool {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # Ctrl+C: the pools have stopped on the way out
        print(f"workpool {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
