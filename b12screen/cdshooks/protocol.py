"""uvicorn's h11 protocol with a read deadline and a connection bound (slow or stalled clients).

uvicorn alone times out only idle keep-alive connections: a client that sends its headers or body one
byte a second is held for ever. Here every request (headers and body) must arrive within
``read_timeout`` seconds of the connection opening or of the previous response; otherwise the
connection is closed. A connection past ``max_connections`` open ones (per worker) is closed at once.
A request h11 cannot parse is answered with a 400 OperationOutcome, not uvicorn's plain text. Every
accepted connection gets TCP_NODELAY, also under ``--workers`` (where uvicorn's shared socket loses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted TCP socket. asyncio sets it only when the listening socket says
    ``IPPROTO_TCP``; the socket uvicorn binds for ``--workers`` says 0, so without this every keep-alive
    response waits on Nagle's algorithm and delayed ACKs (about 40 ms)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the peer may already have gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BoundedH11Protocol(H11Protocol):
    """H11Protocol plus a per-request read deadline and a cap on open connections."""

    read_timeout: ClassVar[float] = 15.0
    max_connections: ClassVar[int] = 200

    @classmethod
    def configure(cls, read_timeout: float, max_connections: int) -> None:
        cls.read_timeout = read_timeout
        cls.max_connections = max_connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        set_nodelay(transport)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection refused: more than %d open connections", self.max_connections)
            transport.close()
            return
        self._arm()

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

    def _request_received(self) -> None:
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._request_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this keep-alive connection gets its own deadline
            self._request_received()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (oversized headers, a bad Content-Length): an OperationOutcome."""
        body = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",'
                b'"diagnostics":"malformed HTTP request (bad or oversized headers)"}]}')
        headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response was already under way: just close
            pass
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
