"""A hostile FHIR server on loopback, written for the tests: one behaviour per first path segment.

- ``/ok/...``: a well-behaved FHIR server (``Patient/<id>``; every search an empty searchset);
- ``/drip-headers/...``: the status line, then one header line every :data:`DRIP` seconds, for a minute;
- ``/redirect-away/...``: 302 to the same path on a second listener (another origin), ``elsewhere``;
- ``/retry-later/...``: 429 with ``Retry-After: 86400``.

``seen`` lists the paths each listener was asked for; ``connections`` counts the main listener's
connections; ``in_flight``/``most_in_flight`` count the connections held open at once by
``/drip-headers/`` (for per-server bounds).
"""

from __future__ import annotations

import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

DRIP = 0.2
DRIP_LINES = 300  # a minute: every test must be cut long before


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hung_up(sock: socket.socket) -> bool:
    """Whether the client closed its end (EOF waiting), without consuming anything."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        # socket.socket.recv: the raw bytes, TLS or not (an SSLSocket refuses MSG_PEEK)
        return bool(readable) and socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def drip_headers(handler: BaseHTTPRequestHandler) -> None:
    """Answer with a status line, then one header line every :data:`DRIP` seconds (for a minute), until the
    client hangs up."""
    try:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for number in range(DRIP_LINES):
            handler.wfile.write(f"X-Drip-{number}: {number}\r\n".encode())
            handler.wfile.flush()
            if select.select([handler.connection], [], [], DRIP)[0] and hung_up(handler.connection):
                break
    except OSError:
        pass  # the client hung up: what the tests want
    handler.close_connection = True


class TwoListeners:
    """A main listener and a second one on another port (another origin), each served by a thread."""

    main: ThreadingHTTPServer
    other: ThreadingHTTPServer

    def listen(self, main: type[BaseHTTPRequestHandler], other: type[BaseHTTPRequestHandler]) -> None:
        self.main = ThreadingHTTPServer(("127.0.0.1", 0), main)
        self.other = ThreadingHTTPServer(("127.0.0.1", 0), other)
        for server in (self.main, self.other):
            server.daemon_threads = True
        # shutdown() waits for the serving loop to look again: every 0.05 s, not the default 0.5 s
        self.threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                        for s in (self.main, self.other)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in (self.main, self.other):
            server.shutdown()
            server.server_close()


class HostileServer(TwoListeners):
    def __init__(self, resources: dict[str, dict[str, Any]] | None = None) -> None:
        #: ``/ok/`` answers: path after the mode (``Patient/p1``, ``MedicationRequest``) -> resource or Bundle
        self.resources = resources or {}
        self.seen: list[str] = []
        self.elsewhere_seen: list[str] = []
        self.open: set[socket.socket] = set()
        self.most_in_flight = 0
        self.connections = 0  # accepted by the main listener
        self.lock = threading.Lock()
        self.listen(self._handler(main=True), self._handler(main=False))

    def base(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.main.server_port}/{mode}"

    @property
    def in_flight(self) -> int:
        with self.lock:
            return len(self.open)

    @property
    def elsewhere(self) -> str:
        return f"http://localhost:{self.other.server_port}"

    def _handler(self, main: bool) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in one go: no delayed-ACK stalls

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                if main:
                    with server.lock:
                        server.connections += 1

            def answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if not main:
                    server.elsewhere_seen.append(path)
                    return self.answer(200, server.resources.get(path.split("/", 2)[-1], searchset()))
                server.seen.append(path)
                mode, _, rest = path.strip("/").partition("/")
                if mode == "drip-headers":
                    return self.drip_headers()
                if mode == "redirect-away":
                    return self.answer(302, headers={"Location": f"{server.elsewhere}{path}"})
                if mode == "retry-later":
                    return self.answer(429, headers={"Retry-After": "86400"})
                found = server.resources.get(rest)
                if found is None and "/" not in rest:
                    found = searchset()
                self.answer(200 if found is not None else 404, found or {"resourceType": "OperationOutcome"})

            def drip_headers(self) -> None:
                with server.lock:
                    # A client that hung up has sent its FIN before it could start another request (on
                    # loopback it is already here): count only the connections still open.
                    server.open = {c for c in server.open if not hung_up(c)} | {self.connection}
                    server.most_in_flight = max(server.most_in_flight, len(server.open))
                try:
                    drip_headers(self)
                finally:
                    with server.lock:
                        server.open.discard(self.connection)

        return Handler
