"""The ``workpool`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import workpool

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workpool",
        description="Run Python functions in parallel, and measure what parallelism buys here.",
    )
    parser.add_argument("--version", action="version", version=f"workpool {workpool.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
