"""One measurement in a fresh interpreter: ``python -m benchmarks.run_one WORKLOAD FRAMEWORK``.

The driver starts this once per (framework, workload, repetition), so no measurement
inherits a warm pool, a running fork server, imported modules or a fragmented heap
from another. It prints exactly one JSON line on stdout, ``{"workload", "framework",
"metrics", "info"}``; on failure it prints the traceback on stderr and exits 1.

Keep the imports at the top light: with spawn or a fork server, worker processes
import this module again as ``__mp_main__``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_one", description=__doc__)
    parser.add_argument("workload", help="workload name, e.g. tiny_map")
    parser.add_argument("framework", help="framework key within the workload, e.g. workpool")
    parser.add_argument(
        "--params",
        default="{}",
        help="JSON object of workload parameters; missing ones take the workload's defaults",
    )
    return parser.parse_args(argv)


def measure(workload_name: str, framework_key: str, given: dict[str, Any]) -> dict[str, Any]:
    """Run one framework on one workload with ``given`` over the default parameters."""
    from benchmarks.cases import get_workload

    workload = get_workload(workload_name)
    framework = workload.framework(framework_key)
    params = {**workload.params, **given}
    sample = framework.run(params)
    return {
        "workload": workload_name,
        "framework": framework_key,
        "metrics": sample.metrics,
        "info": {**sample.info, "pid": os.getpid()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = measure(args.workload, args.framework, json.loads(args.params))
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
