"""Loaded at start-up (``PYTHONPATH=tests/macos_sim``): this Linux interpreter, closer to macOS.

``WORKPOOL_PORTABLE=1`` makes workpool choose the paths it takes on macOS, but the calls
only Linux has are still there, so a portable path that used one by mistake would pass
on Linux and fail on a Mac. CI's portable run therefore starts every interpreter
(the program, the exec'd zygote, workers, test scripts) with this module, which takes
away what CPython on macOS does not have, before anything else can use it:

- the Linux-only calls and constants of ``os``, ``_socket`` (``socket`` copies them
  when it is imported, later), ``select``, ``signal``, ``mmap``, ``time``, ``fcntl``
  and ``resource``: memfd, pidfd, eventfd, epoll, ``pipe2``, ``posix_fallocate``,
  CPU affinity, ``waitid`` (macOS has it from Python 3.13 only), ``SOCK_CLOEXEC``,
  ``MSG_CMSG_CLOEXEC``, ``POLLRDHUP``, real-time signals, Linux's ``madvise`` advice;
- the room in a Unix socket's buffers: macOS gives a stream socket pair 8 KiB each
  way (``net.local.stream.sendspace``), where Linux gives hundreds; every pair made
  here gets Linux's smallest, so messages cross in many pieces, as there.

What cannot be taken away from a running Linux is not: ``/proc``, ``/dev/shm`` and
``sys.platform``, which the standard library reads as it imports.
"""

import _socket
import fcntl
import mmap
import os
import resource
import select
import signal
import time

_ABSENT_ON_MACOS = {
    os: """pipe2 memfd_create MFD_CLOEXEC MFD_ALLOW_SEALING MFD_HUGETLB pidfd_open
        PIDFD_NONBLOCK P_PIDFD eventfd eventfd_read eventfd_write EFD_CLOEXEC
        EFD_NONBLOCK EFD_SEMAPHORE posix_fallocate posix_fadvise sched_getaffinity
        sched_setaffinity waitid splice copy_file_range getrandom GRND_NONBLOCK
        GRND_RANDOM O_PATH O_TMPFILE O_DIRECT O_NOATIME unshare setns
        timerfd_create""",
    _socket: """SOCK_CLOEXEC SOCK_NONBLOCK MSG_CMSG_CLOEXEC SO_PEERCRED SO_PASSCRED
        SCM_CREDENTIALS MSG_NOSIGNAL MSG_MORE MSG_CONFIRM MSG_ERRQUEUE""",
    select: "epoll EPOLLIN EPOLLOUT EPOLLERR EPOLLHUP EPOLLRDHUP POLLRDHUP",
    signal: "pidfd_send_signal sigtimedwait sigwaitinfo SIGRTMIN SIGRTMAX SIGPWR SIGSTKFLT",
    mmap: """MAP_POPULATE MADV_HUGEPAGE MADV_NOHUGEPAGE MADV_DONTFORK MADV_DOFORK
        MADV_REMOVE MADV_MERGEABLE MADV_UNMERGEABLE MADV_DONTDUMP MADV_DODUMP
        MADV_POPULATE_READ MADV_POPULATE_WRITE""",
    time: "CLOCK_BOOTTIME CLOCK_TAI pthread_getcpuclockid",
    fcntl: """F_SETPIPE_SZ F_GETPIPE_SZ F_ADD_SEALS F_GET_SEALS F_SEAL_SEAL
        F_SEAL_SHRINK F_SEAL_GROW F_SEAL_WRITE F_OFD_GETLK F_OFD_SETLK F_OFD_SETLKW""",
    resource: "prlimit RLIMIT_RTPRIO RLIMIT_RTTIME RLIMIT_MSGQUEUE RLIMIT_NICE RLIMIT_SIGPENDING",
}
for _module, _names in _ABSENT_ON_MACOS.items():
    for _name in _names.split():
        if hasattr(_module, _name):
            delattr(_module, _name)

# Linux's least (it doubles what it is asked for, and keeps a floor of about 4 KiB).
_UNIX_SOCKET_BUFFER = 4096
_socketpair = _socket.socketpair


def _small_buffered_pair(*args: int) -> tuple[_socket.socket, _socket.socket]:
    pair = _socketpair(*args)
    for end in pair:
        if end.family == _socket.AF_UNIX:
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, _UNIX_SOCKET_BUFFER)
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, _UNIX_SOCKET_BUFFER)
    return pair


_socket.socketpair = _small_buffered_pair
