"""Run as a program: import workpool as it would be on Windows, then use it.

Not Windows: a POSIX interpreter with what Windows lacks taken away before workpool is
imported (POSIX-only modules, AF_UNIX and descriptor passing, fork and its hooks,
poll, memfd, pidfd) and ``os.name`` saying ``"nt"``. (``sys.platform`` stays: the
standard library's own modules would then import Windows-only ones.) It shows that
nothing POSIX-only is imported or called on the way to the serial, thread and
interpreter backends, and that ``backend="process"`` refuses at once. Prints JSON.
"""

import json
import os
import select
import socket
import sys

for module in ("fcntl", "_posixshmem", "termios", "resource", "pwd", "grp"):
    sys.modules[module] = None  # type: ignore[assignment]
for owner, names in (
    (os, ("fork", "register_at_fork", "memfd_create", "pidfd_open", "getppid", "killpg")),
    (socket, ("AF_UNIX", "send_fds", "recv_fds")),
    (select, ("poll", "POLLRDHUP")),
):
    for name in names:
        if hasattr(owner, name):
            delattr(owner, name)
os.name = "nt"

import workpool  # noqa: E402


def square(x: int) -> int:
    return x * x


report = {
    "serial": workpool.map(square, range(4), backend="serial"),
    "thread": workpool.map(square, range(4), backend="thread"),
    "auto": workpool.map(square, range(4)),
}
try:
    workpool.Pool(backend="process")
except ValueError as exc:
    report["process"] = str(exc)
report["process_modules"] = [m for m in sys.modules if m.startswith("workpool.backends.process")]
print(json.dumps(report))
