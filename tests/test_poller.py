"""The engine's wait on descriptors (``poller.py``), as the supervisor and zygote rely on it."""

from __future__ import annotations

import os
import socket

from workpool.backends.process.poller import READ, WRITE, Poller, wait_readable


def test_a_poller_reports_what_is_ready_with_the_value_given_for_it() -> None:
    read_end, write_end = os.pipe()
    left, right = socket.socketpair()
    try:
        poller = Poller()
        poller.register(read_end, READ, "pipe")
        poller.register(left.fileno(), READ, ("socket", 1))
        assert poller.wait(0) == []
        os.write(write_end, b"x")
        assert poller.wait(0) == [("pipe", READ)]
        poller.modify(left.fileno(), READ | WRITE, ("socket", 2))
        assert (("socket", 2), WRITE) in poller.wait(0)
        poller.unregister(read_end)
        assert poller.wait(0) == [(("socket", 2), WRITE)]
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        left.close()
        right.close()


def test_a_peer_gone_shows_as_readable_and_only_as_what_was_asked() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)  # end of file: a hang-up
    try:
        poller = Poller()
        poller.register(read_end, READ, "pipe")
        assert poller.wait(None) == [("pipe", READ)]  # not WRITE: it was not asked for
        assert wait_readable(read_end, 0)
    finally:
        os.close(read_end)


def test_waiting_for_a_descriptor_that_stays_quiet_ends_at_its_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        assert not wait_readable(read_end, 0.01)
        assert Poller().wait(0.01) == []
    finally:
        os.close(read_end)
        os.close(write_end)
