"""``--workers N``: uvicorn's supervisor, with a listening socket of its own for every worker.

uvicorn's multiprocess mode hands one listening socket to all workers; whichever process wakes first
accepts, so connections pile onto one worker while the other idles. Here each worker gets its own socket,
bound to the same address with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers
(by a hash of the client's address and port). A worker that dies is replaced on the same socket.
Only processes of the same user can join a ``SO_REUSEPORT`` group (Linux), so no other account can take
over the port. Where the platform has no ``SO_REUSEPORT``, uvicorn's shared socket is used.

The workers share one Prometheus multiprocess directory (:func:`shared_metrics_dir`), so ``/metrics``
answers the same totals whichever worker serves the scrape.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

BACKLOG = 2048


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` for this run, set in the environment the workers inherit: the directory
    already named there, emptied of metric files now (a previous run's counts would be added in), or a new
    private one, removed at exit."""
    named = os.environ.get(MULTIPROC_ENV)
    path = Path(named) if named else Path(tempfile.mkdtemp(prefix="b12screen-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if not named:
            shutil.rmtree(path, ignore_errors=True)
            del os.environ[MULTIPROC_ENV]


def _forget(process: Process) -> None:
    """Drop a dead worker's per-process gauges (its counters stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV) and process.pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid)


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuse_port_sockets(host: str, port: int, count: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` in one ``SO_REUSEPORT`` group (port 0: the first
    socket's free port, shared by the rest)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # port 0 becomes the port the first socket got
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ReusePortSupervisor(Multiprocess):
    """:class:`uvicorn.supervisors.Multiprocess` whose worker ``i`` always serves ``sockets[i]``."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=sockets)
        self.processes_num = len(sockets)

    def _process(self, index: int) -> Process:
        return Process(self.config, [self.sockets[index]])

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            process = self._process(index)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced on its own socket, the new one serving before the old one stops."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._process(index)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("a new worker was not ready in time; keeping the old one")
                return
            old.terminate()
            old.join()
            _forget(old)
            self.processes[index] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: stop it
            process.join()
            _forget(process)
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way on every restart
                log.error("worker %d failed to start; stopping", index)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker %d died; starting another on its socket", index)
            replacement = self._process(index)
            replacement.start()
            self.processes[index] = replacement

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def run_workers(config: Config) -> None:
    """Run ``config.workers`` uvicorn workers, each on its own ``SO_REUSEPORT`` socket."""
    sockets = reuse_port_sockets(config.host, config.port, config.workers, config.backlog)
    host, port = sockets[0].getsockname()[:2]
    log.info("listening on %s:%d: %d workers, one SO_REUSEPORT socket each", host, port, config.workers)
    supervisor = ReusePortSupervisor(config, sockets)
    try:
        supervisor.run()
    finally:
        supervisor.close()
