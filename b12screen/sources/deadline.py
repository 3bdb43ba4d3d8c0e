"""A true deadline for a whole HTTP exchange made with ``requests``: connect, TLS handshake, headers and body.

``requests``/``urllib3`` timeouts bound each socket operation, not the exchange: a server that sends
one header line a second never trips a 3 s read timeout, and urllib3's ``Timeout(total=...)`` is a
per-read bound after the connect too. Here one watchdog thread per process keeps the deadlines of the
exchanges in flight; when one passes, it shuts the exchange's socket down (``shutdown(SHUT_RDWR)``),
which wakes the blocked read at once, plain or TLS. The socket is watched through a duplicate of its
file descriptor, so the watchdog never touches a descriptor number that was closed and reused.

Use::

    session = guarded_session()  # or mount DeadlineAdapter on a session
    with deadline(20.0) as guard:
        response = session.get(url, stream=True, timeout=(3, 20))
        ... read the body ...
    # guard.expired: the exchange was cut at its deadline (a short body is then not a whole one)

Only sockets opened or reused for requests made inside ``with deadline(...)`` in the same thread are watched.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class Guard:
    """The deadline of one exchange and the sockets it uses; ``expired`` once the watchdog cut it."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []

    def seconds_left(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Watch ``sock`` (through a duplicate descriptor); shut it at once when already expired."""
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return
        with self._lock:
            self._socks.append(dup)
            if self.expired:
                _shut(dup)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def close(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread waking at the earliest deadline of the guards in flight."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (in a forked child: the parent's thread and lock state are not ours)."""
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, guard: Guard) -> int:
        with self._cond:
            key = next(self._seq)
            heapq.heappush(self._heap, (guard.at, key, guard))
            self._live.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="b12-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
            return key

    def remove(self, key: int) -> None:
        with self._cond:
            self._live.discard(key)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at, key, guard = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(key)
                guard.expire()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Guard]:
    """Requests made in this block (in this thread) are cut ``seconds`` from now, whatever they are doing."""
    guard = Guard(time.monotonic() + max(0.0, seconds))
    outer = getattr(_local, "guard", None)
    _local.guard = guard
    key = _WATCHDOG.add(guard)
    try:
        yield guard
    finally:
        _WATCHDOG.remove(key)
        _local.guard = outer
        guard.close()


def _watch(sock: socket.socket | None) -> None:
    guard = getattr(_local, "guard", None)
    if guard is not None and sock is not None:
        guard.watch(sock)


class _WatchedMixin:
    """A urllib3 connection that hands its socket to the current thread's guard: when it is opened
    (before any TLS handshake) and each time it is reused for a request."""

    sock: Any

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose connections are watched by :func:`deadline` (direct and via an HTTP proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools keep per-read timeouts only
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def guard_session(session: requests.Session) -> requests.Session:
    """Mount :class:`DeadlineAdapter` on ``session`` for http and https; returns it."""
    adapter = DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def guarded_session() -> requests.Session:
    """A new ``requests.Session`` whose requests :func:`deadline` can cut."""
    return guard_session(requests.Session())
