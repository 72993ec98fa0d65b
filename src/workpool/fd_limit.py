"""Room for the file descriptors that shared memory holds open.

Every segment a process holds (``segments.py``) keeps a descriptor open, to hand its
memory on to workers without a copy; before Python 3.13 its ``mmap`` keeps a second
one. A service that keeps a few hundred large results, or shares a few hundred
arrays, would pass the soft limit on open files that many systems start programs
with (1,024) and fail with ``EMFILE`` in the middle of a call, although the hard limit
allows far more. So when a segment's descriptor is numbered past three quarters of the
soft limit (the system hands out the lowest free number, so at least that many are
open), the soft limit is raised to the hard limit, as Go's runtime and Node do when
they start. Only then: a program that never holds many keeps the limit it was given.
(Processes it starts afterwards inherit the higher limit, as from a shell whose
``ulimit -n`` was raised.) Past the hard limit, a result that arrives in shared memory
is copied out of it (``segments.map_segment``) rather than fail.
"""

from __future__ import annotations

from types import ModuleType

# Imported with this module, which the process backend imports before any worker
# starts; never on first need. Workers may fork (start_method="fork") from the
# supervisor thread while the caller's thread makes its first segment: had that thread
# been importing ``resource`` then, a worker would inherit the import's lock, held by a
# thread it does not have, and wait for it for ever on its own first segment.
resource: ModuleType | None
try:
    import resource
except ImportError:  # no limits to lift on this system (Windows)
    resource = None

__all__ = ["make_room_for"]

# Where the hard limit is "unlimited", the soft limit is raised this far; macOS refuses
# more than its OPEN_MAX there, which is tried next.
_UNLIMITED_TARGETS = (1 << 20, 10240)

# A descriptor numbered at least this sends for the limit again (0: not read yet).
_mark = 0


def make_room_for(fd: int) -> None:
    """Raise the soft limit on open descriptors if ``fd``'s number says it is near.

    Cheap when it is not (one comparison). Thread-safe without a lock, which a worker
    forked while another thread held it would inherit held: two threads that both lift
    the limit ask for the same one.
    """
    if fd >= _mark:
        _lift_if_near(fd)


def _lift_if_near(fd: int) -> None:
    global _mark
    if resource is None:
        _mark = 1 << 62
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        _mark = 1 << 62
        return
    near = soft * 3 // 4
    if fd < near:
        _mark = near
        return
    targets = (hard,) if hard != resource.RLIM_INFINITY else _UNLIMITED_TARGETS
    for target in targets:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        _mark = target * 3 // 4
        return
    _mark = soft  # no higher to go: read the limit again only if the program raises it
