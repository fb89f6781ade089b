"""Restarting a local server waits until its old process has let go of its ports, within a deadline."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tools.stack.supervisor import StackError, wait_ports_free


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_waits_until_the_old_process_lets_go_of_the_port():
    sock = listening()
    port = sock.getsockname()[1]
    threading.Timer(0.5, sock.close).start()  # the killed server's sockets close as it exits
    started = time.monotonic()
    wait_ports_free([port], "kafka", timeout=10)
    assert 0.4 < time.monotonic() - started < 5


def test_a_port_still_held_past_the_deadline_is_a_clear_error():
    with listening() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=f"kafka: port.*{port}.*still in use 1 s after it stopped"):
            wait_ports_free([port], "kafka", timeout=1)
