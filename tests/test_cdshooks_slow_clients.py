"""Slow or stalled clients on a real loopback uvicorn with :class:`BoundedHttpToolsProtocol`: a request whose
headers or body do not arrive within the read timeout is cut off. (Header and connection bounds:
``test_cdshooks_front_door.py``.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from cdshooks_helpers import get_health, running_server

from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.protocol import BoundedHttpToolsProtocol

READ_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def base() -> Iterator[tuple[str, int]]:
    before = (BoundedHttpToolsProtocol.read_timeout, BoundedHttpToolsProtocol.max_connections)
    BoundedHttpToolsProtocol.configure(READ_TIMEOUT, 3)
    try:
        app = create_app(ServiceConfig(insecure_no_auth=True))
        with running_server(app, http=BoundedHttpToolsProtocol) as url:
            yield "127.0.0.1", int(url.rsplit(":", 1)[1])
    finally:
        BoundedHttpToolsProtocol.configure(*before)


def connect(base: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(base, timeout=10)
    return sock


def closed_by_server(sock: socket.socket, seen: list[bytes] | None = None) -> bool:
    """True when the server closes the connection (recv gives EOF or a reset) before our 10 s timeout;
    what arrived before is appended to ``seen``."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            if seen is not None:
                seen.append(data)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_headers_are_cut_off(base: tuple[str, int]) -> None:
    with connect(base) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        assert closed_by_server(sock)


def test_a_body_that_never_arrives_is_cut_off(base: tuple[str, int]) -> None:
    with connect(base) as sock:
        sock.sendall(b"POST /cds-services/b12screen-patient-view HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"hook\"")
        assert closed_by_server(sock)


def test_complete_requests_are_answered_and_keep_alive_gets_a_fresh_deadline(base: tuple[str, int]) -> None:
    with connect(base) as sock:
        for _ in range(2):
            assert get_health(sock).startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock)  # then idle: closed too


def test_headers_dripping_one_byte_at_a_time_are_cut_off(base: tuple[str, int]) -> None:
    """Each byte arriving does not extend the deadline: the whole request must arrive in time."""
    import time

    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(base) as sock:
        cut = False
        for byte in request:  # 0.05 s a byte: the request would need 10 s, 20x the read timeout
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.05)
        seen: list[bytes] = []
        assert cut or closed_by_server(sock, seen)
        assert seen == []  # never answered: the request was cut off, not served


def test_a_client_that_hangs_up_is_logged_at_info_not_as_an_error(base: tuple[str, int],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import time

    caplog.set_level("INFO", logger="b12screen")
    with connect(base) as sock:
        sock.sendall(b"POST /cds-services/b12screen-patient-view HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"hook\"")
        time.sleep(0.1)  # let the app start reading the body, then hang up
    for _ in range(100):
        if any("disconnected" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.05)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("b12screen")]
    assert ("INFO", "client disconnected during service b12screen-patient-view") in messages
    assert not [m for level, m in messages if level in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(("request_bytes", "status"), [
    # never ends: past the 16 KiB bound for headers
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000, b"431"),
    (b"POST /cds-services/b12screen-patient-view HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", b"400"),
], ids=["oversized headers", "bad Content-Length"])
def test_requests_the_http_layer_refuses_get_an_operation_outcome(base: tuple[str, int], request_bytes: bytes,
                                                                  status: bytes) -> None:
    import json

    with connect(base) as sock:
        sock.sendall(request_bytes)
        seen: list[bytes] = []
        assert closed_by_server(sock, seen)
    head, _, body = b"".join(seen).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status) and b"application/fhir+json" in head
    assert json.loads(body)["resourceType"] == "OperationOutcome"


def test_connections_on_a_worker_style_socket_get_tcp_nodelay() -> None:
    """uvicorn binds ``--workers`` sockets with proto 0, so asyncio skips TCP_NODELAY; the protocol sets it."""
    import asyncio
    import threading

    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn's Config.bind_socket: proto 0
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(create_app(ServiceConfig(insecure_no_auth=True)), http=BoundedHttpToolsProtocol,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.02)
        with connect(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            [protocol] = list(server.server_state.connections)
            accepted = protocol.transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def _read_answers(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data.count(b'HTTP/1.1 ')} answer(s)"
        data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def test_headers_under_the_bound_and_a_large_body_in_one_packet_are_served(base: tuple[str, int]) -> None:
    """Only header bytes count toward the 16 KiB bound: a 15 KB header passes, and so does a body of 200 KB
    sent with its headers in one go."""
    with connect(base) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 15_000 + b"\r\n\r\n")
        [answer] = _read_answers(sock, 1)
        assert answer.startswith(b"HTTP/1.1 200")
    body = b'{"hook":"patient-view","pad":"' + b"a" * 200_000 + b'"}'
    with connect(base) as sock:
        sock.sendall(b"POST /cds-services/b12screen-patient-view HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        [answer] = _read_answers(sock, 1)
        assert answer.startswith(b"HTTP/1.1 400") and b"hookInstance is required" in answer  # the app's 400


def test_pipelined_requests_are_all_answered_in_order(base: tuple[str, int]) -> None:
    with connect(base) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = _read_answers(sock, 3)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2 + [b"HTTP/1.1 404 Not Found"]
