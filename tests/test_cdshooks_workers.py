"""``serve --workers 2``: one SO_REUSEPORT socket per worker, connections spread, a dead worker replaced."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cdshooks_helpers import free_port, get_health

from b12screen.cdshooks.workers import reuse_port_sockets, reuse_port_supported

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from cds_load import stop_server
from cds_wrk import socket_inodes, tcp_inodes  # the benchmark's /proc readers: sockets by pid and by port

pytestmark = pytest.mark.skipif(not reuse_port_supported() or not Path("/proc/self/fd").is_dir(),
                                reason="needs SO_REUSEPORT and /proc (Linux)")


def test_sockets_share_one_port_and_all_listen() -> None:
    sockets = reuse_port_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1 and ports != {0}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in sockets)
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # the kernel queued it on one of them
    finally:
        for s in sockets:
            s.close()


def test_a_port_in_use_without_reuse_port_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            reuse_port_sockets("127.0.0.1", taken.getsockname()[1], 2)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _workers(process: subprocess.Popen[bytes], port: int) -> list[int]:
    """The children of ``serve`` that hold a listening socket on ``port``."""
    listening = tcp_inodes(port, "0A")
    return sorted(c for c in _children(process.pid) if socket_inodes(c) & listening)


@contextmanager
def two_workers(*options: str, port: int | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``serve --workers 2`` on ``port`` (else a free one) with ``options`` (default ``--insecure-no-auth``)."""
    port = port or free_port()
    process = subprocess.Popen([sys.executable, "-m", "b12screen", "serve", *(options or ("--insecure-no-auth",)),
                                "--port", str(port), "--workers", "2", "--log-level", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(_workers(process, port)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            assert process.poll() is None, "serve exited"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            get_health(sock)  # a worker answers
        yield port, process
    finally:
        stop_server(process)


def _connections_per_worker(process: subprocess.Popen[bytes], port: int) -> list[int]:
    established = tcp_inodes(port, "01")
    return [len(socket_inodes(w) & established) for w in _workers(process, port)]


def _assert_spread(process: subprocess.Popen[bytes], port: int, count: int = 24) -> None:
    """``count`` keep-alive connections, each answered, held by both workers (hashed over 24 connections,
    all on one worker has odds of 2 in 16 million)."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    try:
        for sock in clients:
            assert get_health(sock).startswith(b"HTTP/1.1 200")
        spread = _connections_per_worker(process, port)
        assert len(spread) == 2 and sum(spread) == count and min(spread) >= 1, spread
    finally:
        for sock in clients:
            sock.close()


@pytest.mark.slow
def test_connections_spread_over_both_workers_and_a_dead_worker_is_replaced() -> None:
    with two_workers() as (port, process):
        listening = tcp_inodes(port, "0A")
        held = [socket_inodes(w) & listening for w in _workers(process, port)]
        assert len(listening) == 2 and all(len(h) == 1 for h in held) and held[0] != held[1]  # a socket each
        _assert_spread(process, port)
        victim = _workers(process, port)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while victim in _workers(process, port) or len(_workers(process, port)) < 2:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        _assert_spread(process, port)  # the replacement's connections answered too
