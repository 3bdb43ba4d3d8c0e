"""uvicorn's httptools protocol with a read deadline, header bounds and a connection bound.

httptools (the C parser uvicorn uses when it is installed) is used rather than the pure-Python h11: it
costs a fraction of the CPU per request (docs/benchmarks/cds-load.md). uvicorn alone times out only idle
keep-alive connections: a client that sends its headers or body one byte a second is held for ever.
Here every request (headers and body) must arrive within ``read_timeout`` seconds of the connection
opening or of the previous response; otherwise the connection is closed.

Headers (httptools sets no limit of its own) are bounded however they arrive, in one read or many: the
URL and header lines, counted as the parser hands them over, at most ``max_header_bytes``, and at most
``max_header_lines`` header lines; a head still incomplete is bounded by the bytes received for it. Past
either bound: 431 with an OperationOutcome. Requests the parser cannot read get a 400 OperationOutcome, not
uvicorn's plain text.

Past ``max_connections`` open connections (per worker) a new one closes the connection that has waited
longest for its client (the oldest deadline among those whose request has not fully arrived); one whose
request the service is working on is never closed for it. Only when every connection is such is the new
one closed at once. So idle or slow connections, from one address or many, cannot lock out a new caller;
a per-address bound would not do, as behind a reverse proxy every connection has the proxy's address.
Every accepted connection gets TCP_NODELAY, also under ``--workers``. The ASGI scope of a request holds,
under :data:`RECEIVED`, the ``time.monotonic()`` at which its last byte was read (the service's time
budget counts from then).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import time
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16_384
#: header lines a request may have (Apache httpd's LimitRequestFields default)
MAX_HEADER_LINES = 100
#: connections closed to admit new ones are logged at most this often
EVICTION_LOG_SECONDS = 10.0
#: the scope key of the time the whole request had been read
RECEIVED = "b12screen.received"


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose headers are past a bound."""


def _error_response(status: bytes, code: str, diagnostics: str) -> bytes:
    """A complete HTTP/1.1 response, ``Connection: close``, whose body is an OperationOutcome."""
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": diagnostics}]}, separators=(",", ":")).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/fhir+json\r\ncontent-length: "
            + str(len(body)).encode("ascii") + b"\r\nconnection: close\r\n\r\n" + body)


_BAD_REQUEST = _error_response(b"400 Bad Request", "invalid", "malformed HTTP request")


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted TCP socket. asyncio sets it only when the listening socket says
    ``IPPROTO_TCP``; a socket bound with proto 0 (as uvicorn's own ``--workers`` socket) does not, and then
    every keep-alive response waits on Nagle's algorithm and delayed ACKs (about 40 ms)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the peer may already have gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus a per-request read deadline, header bounds and a connection cap."""

    read_timeout: ClassVar[float] = 15.0
    max_connections: ClassVar[int] = 200
    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES
    max_header_lines: ClassVar[int] = MAX_HEADER_LINES
    _arming: ClassVar[itertools.count[int]] = itertools.count()  # orders read deadlines: lower waited longer
    _closed_for_room: ClassVar[list[float]] = [0, -EVICTION_LOG_SECONDS]  # count since the last log line, its time

    @classmethod
    def configure(cls, read_timeout: float, max_connections: int) -> None:
        cls.read_timeout = read_timeout
        cls.max_connections = max_connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        self._armed_at = 0  # when the read deadline was set, from ``_arming``
        self._in_headers = True  # the parser is reading a request's start line and headers
        self._header_bytes = 0  # URL and header lines of that request handed over by the parser
        self._header_lines = 0
        self._unparsed_bytes = 0  # bytes received while that request's headers were incomplete
        self._too_large: str | None = None  # why the request's headers were refused
        self._unanswered = 0  # requests fully received and not yet answered
        self._completed_here = False  # a request ended in the chunk being parsed
        set_nodelay(transport)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            waiting = self._longest_waiting()
            if waiting is None:
                log.warning("connection refused: %d open connections, each with a request being answered",
                            self.max_connections)
                transport.close()
                return
            waiting.transport.close()
            self._log_closed_for_room()
        self._arm()

    def _log_closed_for_room(self) -> None:
        """One line at most every ``EVICTION_LOG_SECONDS`` (a flood of connections must not flood the log)."""
        counts = self._closed_for_room
        counts[0] += 1
        now = time.monotonic()
        if now - counts[1] >= EVICTION_LOG_SECONDS:
            log.info("%d connection(s) closed, the longest waiting of %d open ones, to admit new ones",
                     counts[0], self.max_connections)
            counts[:] = [0, now]

    def _longest_waiting(self) -> BoundedHttpToolsProtocol | None:
        """The open connection, other than this one, that has waited longest for its client's request."""
        waiting = [c for c in self.connections if isinstance(c, BoundedHttpToolsProtocol) and c is not self
                   and c._read_deadline is not None and not c.transport.is_closing()]
        return min(waiting, key=lambda c: c._armed_at, default=None)

    # -- the read deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)
        self._armed_at = next(self._arming)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            log.info("connection closed: the request did not arrive within %.0f s", self.read_timeout)
            self.transport.close()

    # -- parser events -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._completed_here = False
        super().data_received(data)
        # headers still incomplete: the parser holds a partial line it has not handed over; bound it by the
        # bytes received (a read that also ended a previous, pipelined, request is not counted, as the
        # parser does not say where in it the new request began)
        if self._in_headers and not self._completed_here and not self.transport.is_closing():
            self._unparsed_bytes += len(data)
            if self._unparsed_bytes > self.max_header_bytes:
                self._too_large = f"headers over {self.max_header_bytes} bytes"
                self.send_400_response("headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = self._header_lines = self._unparsed_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value) + 2, 1)
        super().on_header(name, value)

    def _count_header(self, size: int, lines: int) -> None:
        """Count a piece of the request's head; past a bound, stop the parser (then :meth:`send_400_response`)."""
        self._header_bytes += size
        self._header_lines += lines
        if self._header_bytes > self.max_header_bytes:
            self._too_large = f"headers over {self.max_header_bytes} bytes"
        elif self._header_lines > self.max_header_lines:
            self._too_large = f"more than {self.max_header_lines} header lines"
        if self._too_large:
            raise _HeadersTooLarge(self._too_large)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.scope[RECEIVED] = time.monotonic()  # type: ignore[literal-required]
        super().on_message_complete()
        self._unanswered += 1
        self._completed_here = True
        self._disarm()  # the whole request is here: the rest is the application's time budget

    def on_response_complete(self) -> None:
        self._unanswered = max(0, self._unanswered - 1)
        super().on_response_complete()
        if not self.transport.is_closing() and not self._unanswered:
            self._arm()  # the next request on this keep-alive connection gets its own deadline

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read (bad syntax, a bad ``Content-Length``): 400; headers past a
        bound: 431. Either way an OperationOutcome, and the connection closed."""
        if self._too_large:
            log.info("request refused: %s", self._too_large)
            self.transport.write(_error_response(b"431 Request Header Fields Too Large", "too-long",
                                                 f"request headers too large ({self._too_large})"))
        else:
            self.transport.write(_BAD_REQUEST)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
