"""What the zygote imports before it forks a worker: the modules the program's main imported.

A zygote forked from the program (Linux) starts with every module the program has
imported, so its workers do too. One exec'd as a fresh interpreter (macOS, portable
mode) starts with none of them: without help, each worker would import NumPy (say)
on its first task, every worker paying for it again, at once, and keeping its own
copy. So the parent names, with each request for a worker, the modules its
``__main__`` holds (``import numpy as np``, ``from mylib import score``), and the
zygote imports them once; the workers it forks afterwards inherit them.

This is the standard library's fork server's ``__main__`` preload, without running the
main script again: only the modules it imported are imported, by name. As with the
fork server, a module that starts a thread when imported would make the zygote's
later forks unsafe; the parent cannot know, and importing is what the worker would
have done anyway.

A request also says where the program is now (``program_place``): its ``sys.path``,
working directory, ``sys.argv`` and environment. A worker forked from a long-lived
server would otherwise see them as they were when the server started (or, exec'd,
its own command line); a forked or spawned worker sees them as they are when it
starts, and so does one of workpool's (``take_place``). So for what the zygote's
workers would otherwise keep of the zygote's own start: the umask, the resource
limits (``resource.setrlimit``) and the niceness (``program_limits``), which they take
once forked (``take_limits``), so that the zygote's own are never lowered for good.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types

TYPE_CHECKING = False

__all__ = [
    "current_directory",
    "main_imports",
    "program_limits",
    "program_place",
    "take_limits",
    "take_place",
]

# Never worth naming: there already, or not importable by that name.
_SKIP = frozenset({"__main__", "__mp_main__", "builtins"})


def main_imports() -> list[str]:
    """The importable modules that ``__main__``'s globals are, or come from, by name."""
    main = sys.modules.get("__main__")
    if main is None:
        return []
    names: set[str] = set()
    # A copy: the program's threads may bind names in __main__ meanwhile.
    for value in vars(main).copy().values():
        name: object
        try:
            if isinstance(value, types.ModuleType):
                name = value.__name__
            elif isinstance(value, (type, types.FunctionType)):
                name = value.__module__
            else:  # instances, bound methods (an IDE's helpers): their module is no hint
                continue
        except Exception:  # a hint only: an odd object must not keep a worker from starting
            continue
        if not isinstance(name, str) or name in _SKIP:
            continue
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None:
            names.add(name)
    return sorted(names)


def current_directory() -> str | None:
    """Where the program is, for a new worker to go; None once that directory is deleted.

    A worker told None starts where it is: in the directory it was started or forked
    in, which is where relative paths pointed until the deletion.
    """
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


if TYPE_CHECKING:
    # sys.path, the working directory (None: deleted), sys.argv, the environment
    Place = tuple[list[str], str | None, list[str], dict[bytes, bytes]]
    # the umask (None: unknown), each resource limit, the niceness
    Limits = tuple[int | None, dict[int, tuple[int, int]], int]


def program_place() -> Place:
    """Where the program is now, for a worker to take (``take_place``)."""
    return list(sys.path), current_directory(), list(sys.argv), dict(os.environb)


def take_place(place: Place) -> None:
    """Make this process look like the program at ``program_place``: imports find
    what it finds, relative paths and ``sys.argv`` mean what they mean there, and
    the environment holds its variables (only what differs is changed)."""
    sys_path, cwd, argv, environment = place
    sys.path[:] = sys_path
    sys.argv[:] = argv
    if cwd is not None:  # None: the program's directory was deleted; stay here
        with contextlib.suppress(OSError):  # deleted since: stay here too
            os.chdir(cwd)
    here = os.environb
    for name in [name for name in here if name not in environment]:
        del here[name]
    for name, value in environment.items():
        if here.get(name) != value:
            here[name] = value


# The resource limits there are (``resource.RLIMIT_*``); none where ``resource`` is not.
try:
    import resource
except ImportError:  # pragma: no cover - not on Linux or macOS
    _RESOURCES: tuple[int, ...] = ()
else:
    _RESOURCES = tuple(
        sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")})
    )


def _umask() -> int | None:
    """This process's umask, where the system says it without its being changed (Linux)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None  # os.umask reads it only by setting it, which other threads would see


def program_limits() -> Limits:
    """The program's umask, resource limits and niceness, for a worker to take."""
    limits = {which: resource.getrlimit(which) for which in _RESOURCES}
    return _umask(), limits, os.getpriority(os.PRIO_PROCESS, 0)


def take_limits(limits: Limits) -> None:
    """Make this process's umask, resource limits and niceness the program's.

    What it may not do (raise a hard limit, or the priority, without the privilege) it
    leaves as it is.
    """
    umask, resource_limits, niceness = limits
    if umask is not None:
        os.umask(umask)
    for which, wanted in resource_limits.items():
        if resource.getrlimit(which) != wanted:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, wanted)
    if os.getpriority(os.PRIO_PROCESS, 0) != niceness:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
