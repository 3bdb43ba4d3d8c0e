"""A real ``redis-server`` on a free loopback port, started and stopped by the tests (Debian's package;
``.ci/run`` installs it). Tests that need it skip, with the reason, where the binary is absent."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cdshooks_helpers import free_port

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install "
                                                              "redis-server; .ci/run does)")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(port: int | None = None) -> Iterator[int]:
    """``redis-server`` on 127.0.0.1 (``port``, else a free one), no persistence; yields the port."""
    assert REDIS_SERVER is not None
    port = port or free_port()
    process = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
