"""uvicorn's httptools protocol with a read deadline, a header size bound and a connection bound.

httptools (the C parser uvicorn uses when it is installed) is used rather than the pure-Python h11: it
costs a fraction of the CPU per request (see the README's load test). uvicorn alone times out only idle
keep-alive connections: a client that sends its headers or body one byte a second is held for ever.
Here every request (headers and body) must arrive within ``read_timeout`` seconds of the connection
opening or of the previous response; otherwise the connection is closed. Headers over ``max_header_bytes``
(httptools sets no limit of its own) and requests the parser cannot read get a 400 OperationOutcome, not
uvicorn's plain text. A connection past ``max_connections`` open ones (per worker) is closed at once.
Every accepted connection gets TCP_NODELAY, also under ``--workers``. The ASGI scope of a request holds,
under :data:`RECEIVED`, the ``time.monotonic()`` at which its last byte was read (the service's time
budget counts from then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16_384
#: the scope key of the time the whole request had been read
RECEIVED = "b12screen.received"
_BAD_REQUEST = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",'
                b'"diagnostics":"malformed HTTP request (bad or oversized headers)"}]}')


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted TCP socket. asyncio sets it only when the listening socket says
    ``IPPROTO_TCP``; a socket bound with proto 0 (as uvicorn's own ``--workers`` socket) does not, and then
    every keep-alive response waits on Nagle's algorithm and delayed ACKs (about 40 ms)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the peer may already have gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus a per-request read deadline, a header size bound and a connection cap."""

    read_timeout: ClassVar[float] = 15.0
    max_connections: ClassVar[int] = 200
    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES

    @classmethod
    def configure(cls, read_timeout: float, max_connections: int) -> None:
        cls.read_timeout = read_timeout
        cls.max_connections = max_connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # the parser is reading a request's start line and headers
        self._header_bytes = 0  # bytes received since that request began
        self._unanswered = 0  # requests fully received and not yet answered
        self._completed_here = False  # a request ended in the chunk being parsed
        set_nodelay(transport)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection refused: more than %d open connections", self.max_connections)
            transport.close()
            return
        self._arm()

    # -- the read deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

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
        # bytes of headers still incomplete; a chunk that also ended a previous (pipelined) request is
        # not counted, as the parser does not say where in it the new request began
        if self._in_headers and not self._completed_here and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                log.info("request refused: headers over %d bytes", self.max_header_bytes)
                self.send_400_response("headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0

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
        """A request the parser cannot read (bad syntax, a bad ``Content-Length``, oversized headers)."""
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/fhir+json\r\n"
                             b"content-length: " + str(len(_BAD_REQUEST)).encode("ascii")
                             + b"\r\nconnection: close\r\n\r\n" + _BAD_REQUEST)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
