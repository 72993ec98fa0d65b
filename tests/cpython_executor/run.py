"""CPython's own ``concurrent.futures`` tests, run against ``workpool.Pool``.

``workpool.Pool`` claims to be a ``concurrent.futures.Executor``. The strictest judge of
that claim is the test suite CPython runs against its own executors, which ships with
the interpreter (``Lib/test/test_concurrent_futures``). This script imports its generic
test classes (executor, as_completed, wait, shutdown), builds one test case per start
method with ``workpool.Pool`` as the executor, and runs them::

    python tests/cpython_executor/run.py                    # every start method
    python tests/cpython_executor/run.py fork -v            # one, verbosely
    python tests/cpython_executor/run.py -k free_reference  # tests whose name matches

It is a script, not part of the pytest suite: the stdlib test package differs between
Python versions (and distributions may leave it out), so CI runs it on the versions it
was written for (3.13 and 3.14). The exit status is non-zero when any test fails.

Within those classes, what is not run, and why, is listed in ``SKIPPED`` and
``ADAPTED`` below; nothing else is left out. The classes for one executor only
(``test_process_pool.py``, ``ProcessPoolShutdownTest``, the thread pool's) test that
executor's private attributes (``_processes``, ``_executor_manager_thread``, ...) and
are not run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import unittest
from typing import Any

try:
    from test.test_concurrent_futures import executor, test_as_completed, test_shutdown, test_wait
    from test.test_concurrent_futures import util as cpython_util
except ImportError as exc:  # a Python without its test package
    sys.exit(f"CPython's test package is not installed for {sys.executable}: {exc}")

import workpool

START_METHODS = [
    m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()
]

# Tests that name ProcessPoolExecutor (or ThreadPoolExecutor) itself: they start a new
# interpreter that imports the executor class by name from concurrent.futures, which
# no other executor can stand in for.
SKIPPED = {
    "test_interpreter_shutdown": "imports the executor class by name from concurrent.futures",
    "test_submit_after_interpreter_shutdown": (
        "imports the executor class by name from concurrent.futures"
    ),
    "test_hang_gh83386": "imports the executor class by name from concurrent.futures",
}


class CPythonStylePool(workpool.Pool):
    """``workpool.Pool`` built the way the tests build ``ProcessPoolExecutor``.

    Only the constructor differs: the multiprocessing context names the start method.
    Everything the tests call after that is ``Pool``'s own.
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None) -> None:
        method = None if mp_context is None else mp_context.get_start_method()
        super().__init__(backend="process", start_method=method, max_workers=max_workers)


class PoolMixin(cpython_util.ExecutorMixin):
    """Stands where ``ProcessPool<Method>Mixin`` stands in CPython's test classes."""

    executor_type = CPythonStylePool
    ctx: str

    def get_context(self) -> Any:
        return multiprocessing.get_context(self.ctx)

    def create_event(self) -> Any:  # Python 3.14's tests: an event workers can wait on
        return self.manager.Event()


def _max_workers_negative(self: Any) -> None:
    # CPython's test matches ProcessPoolExecutor's wording ("max_workers must be greater
    # than 0"); Pool's says what it accepts.
    for number in (0, -1):
        with self.assertRaisesRegex(ValueError, "max_workers must be a positive integer"):  # noqa: PT027
            self.executor_type(max_workers=number)


# Tests rewritten for Pool's constructor: (why, the test as run here).
ADAPTED = {
    "test_max_workers_negative": (
        "the same check, matching Pool's message",
        _max_workers_negative,
    ),
}

# The generic test classes: each runs against whatever executor its mixin makes.
GENERIC_TESTS = [
    executor.ExecutorTest,
    test_as_completed.AsCompletedTests,
    test_wait.WaitTests,
    test_shutdown.ExecutorShutdownTest,
]


def _skip(reason: str) -> Any:
    def skipped(self: unittest.TestCase) -> None:
        self.skipTest(reason)

    return skipped


def test_cases(method: str) -> list[type[unittest.TestCase]]:
    """One TestCase class per generic CPython test class, for start method ``method``."""
    cases = []
    for tests in GENERIC_TESTS:
        name = f"Pool{method.capitalize()}{tests.__name__}"
        namespace: dict[str, Any] = {"ctx": method, "__module__": __name__}
        for test, reason in SKIPPED.items():
            if hasattr(tests, test):
                namespace[test] = _skip(reason)
        for test, (_, adapted) in ADAPTED.items():
            if hasattr(tests, test):
                namespace[test] = adapted
        bases = (tests, PoolMixin, cpython_util.BaseTestCase)
        cases.append(type(name, bases, namespace))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("methods", nargs="*", choices=START_METHODS, metavar="START_METHOD")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-k", dest="patterns", action="append", help="run tests matching this")
    args = parser.parse_args()

    cpython_util.setup_module()
    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [f"*{pattern}*" for pattern in args.patterns]
    failed = False
    summary = []
    for method in args.methods or START_METHODS:
        suite = unittest.TestSuite(
            loader.loadTestsFromTestCase(case) for case in test_cases(method)
        )
        print(f"--- start_method={method!r}: {suite.countTestCases()} tests", flush=True)
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
        skipped = len(result.skipped)
        broken = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        passed = result.testsRun - skipped - broken
        summary.append(f"{method}: {passed} passed, {broken} failed, {skipped} skipped")
        failed = failed or not result.wasSuccessful()
    unittest.case.doModuleCleanups()
    print(f"CPython {sys.version.split()[0]} executor tests against workpool.Pool")
    for line in summary:
        print("  " + line)
    for name, reason in SKIPPED.items():
        print(f"  skipped {name}: {reason}")
    for name, (reason, _) in ADAPTED.items():
        print(f"  adapted {name}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
