"""Where the ``jti`` of every accepted token is remembered until it expires (the replay guard).

``replay_store = "memory"``: a dict in the process (:class:`MemoryReplayStore`); one process only, so
with ``--workers N`` or several hosts a token replayed to another process is accepted once more.
``replay_store = "redis://HOST:PORT/DB"``: one Redis for the whole fleet (:class:`RedisReplayStore`):
each ``jti`` is recorded with ``SET NX`` and the token's remaining lifetime, so exactly one call, on
whichever worker or host, records it first. When Redis cannot be reached the store raises
:class:`StoreUnavailable` and the call is refused (fail closed).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: seconds to wait for Redis (connect, and each answer): calls wait at most this long before a 503
REDIS_TIMEOUT_SECONDS = 0.5
#: after a failure, calls are refused at once for this long instead of each waiting for a timeout
RETRY_AFTER_SECONDS = 1.0
KEY_PREFIX = "b12screen:jti:"


class StoreUnavailable(Exception):
    """The replay store cannot be reached: the call must be refused (fail closed)."""


class ReplayStore(Protocol):
    def check_and_store(self, iss: str, jti: str, expires: float) -> bool:
        """True when ``jti`` of ``iss`` is new (and now recorded until ``expires``); False for a replay."""

    def reachable(self) -> bool:
        """Whether the store answers now (for ``/ready``; may do I/O)."""


class MemoryReplayStore:
    """``(iss, jti)`` pairs seen, kept until their token expires; at most ``size`` entries (one process)."""

    def __init__(self, size: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_store(self, iss: str, jti: str, expires: float) -> bool:
        key = (iss, jti)
        with self._lock:
            now = self._clock()
            while self._expiry and (self._expiry[0][0] < now or len(self._seen) >= self.size):
                when, old = heapq.heappop(self._expiry)
                if self._seen.get(old) == when:
                    del self._seen[old]
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            self._seen[key] = expires
            heapq.heappush(self._expiry, (expires, key))
            return True

    def reachable(self) -> bool:
        return True


class RedisReplayStore:
    """The replay guard in Redis, shared by every worker and host that names the same database."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time, client: Any = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._clock = clock
        self._errors = (redis.RedisError, OSError)
        self._client = client or redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=30, retry=Retry(NoBackoff(), 0))  # no retries: one bounded wait, then 503
        self._down_until = 0.0

    @staticmethod
    def key(iss: str, jti: str) -> str:
        """A bounded key with neither value in clear: the SHA-256 of ``iss`` and ``jti``."""
        return KEY_PREFIX + hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()

    def check_and_store(self, iss: str, jti: str, expires: float) -> bool:
        now = self._clock()
        if now < self._down_until:
            raise StoreUnavailable("the replay store was unreachable moments ago")
        ttl_ms = max(1, math.ceil((expires - now) * 1000))  # the token's remaining lifetime, skew included
        try:
            created = self._client.set(self.key(iss, jti), b"1", nx=True, px=ttl_ms)
        except self._errors as exc:
            self._down_until = now + RETRY_AFTER_SECONDS
            raise StoreUnavailable(f"the replay store is unreachable ({type(exc).__name__})") from None
        return bool(created)

    def reachable(self) -> bool:
        try:
            ok = bool(self._client.ping())
        except self._errors:
            return False
        if ok:
            self._down_until = 0.0
        return ok


def check_store_url(value: str, origin: str) -> None:
    """``memory`` or ``redis://HOST:PORT/DB`` (``rediss://`` for TLS); :class:`ConfigError` otherwise."""
    if value == "memory":
        return
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    path = parts.path.lstrip("/")
    if (parts.scheme not in ("redis", "rediss") or not parts.hostname or port is None or parts.query
            or parts.fragment or not (path == "" or path.isdigit())):
        raise ConfigError(f"{origin}: replay_store must be 'memory' or redis://HOST:PORT/DB (e.g. "
                          "redis://127.0.0.1:6379/0)")


def describe_store(url: str) -> str:
    """The store for a log line: scheme, host, port and database, never a password."""
    if url == "memory":
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"


def make_store(url: str, size: int) -> MemoryReplayStore | RedisReplayStore:
    """The store a ``replay_store`` setting names."""
    if url == "memory":
        return MemoryReplayStore(size)
    return RedisReplayStore(url)
