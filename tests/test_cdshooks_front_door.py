"""The service's front door on a real loopback uvicorn: the JWT ``aud`` never comes from request headers,
headers are bounded however they arrive, and idle connections cannot lock a new caller out."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cdshooks_helpers import AS_OF, MockEhr, get_health, metformin_patient, request_body, running_server
from click.testing import CliRunner

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.protocol import BoundedHttpToolsProtocol
from b12screen.cli import cli
from b12screen.errors import ConfigError
from b12screen.plugins import get_plugin_manager

PUBLIC = "https://cds.example.org/b12"
PV = "/cds-services/b12screen-patient-view"
EHR = MockEhr()
#: the documented bounds (docs/integrator/front-door.md): the bytes of a request's URL and header lines
MAX_HEADER_BYTES, MAX_HEADER_LINES = 16_384, 100


class Protocol(BoundedHttpToolsProtocol):
    """The service's protocol with bounds of its own (``configure`` sets them on this class only)."""


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, int]]:
    """JWT verification on, ``public_base_url`` set; a 5 s read timeout and room for 3 connections."""
    Protocol.configure(5.0, 3)
    config = ServiceConfig(issuers=(EHR.issuer(),), public_base_url=PUBLIC)
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    with running_server(create_app(config, screener=screener, today=lambda: AS_OF), http=Protocol) as url:
        yield url, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# -- R8: the aud is the configured public URL, whatever Host and X-Forwarded-* say -------------------------

def post(url: str, aud: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(url + PV, json=request_body(prefetch=metformin_patient()),
                         headers={**EHR.auth(aud), **headers}, timeout=10)


def test_a_token_for_the_public_url_passes(service: tuple[str, int]) -> None:
    response = post(service[0], PUBLIC + PV, {})
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1


FORGED = {
    "Host": ("http://evil.example" + PV, {"Host": "evil.example"}),
    "Host and X-Forwarded-Proto": ("https://evil.example" + PV, {"Host": "evil.example", "X-Forwarded-Proto": "https"}),
    "X-Forwarded-Host": ("https://evil.example" + PV, {"X-Forwarded-Host": "evil.example",
                                                      "X-Forwarded-Proto": "https"}),
    "Forwarded": ("https://evil.example" + PV, {"Forwarded": "host=evil.example;proto=https"}),
    "the public host without its path": ("https://cds.example.org" + PV, {"Host": "cds.example.org",
                                                                           "X-Forwarded-Proto": "https"}),
    "the address the service listens on": (None, {}),
}


@pytest.mark.parametrize("name", list(FORGED))
def test_a_token_addressed_by_request_headers_is_refused(service: tuple[str, int], name: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A token the trusted EHR minted for another URL (another service at the same path) is not replayable
    here by sending a matching Host or X-Forwarded-* header."""
    aud, headers = FORGED[name]
    caplog.set_level("INFO", logger="b12screen.cdshooks")
    response = post(service[0], aud or service[0] + PV, headers)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["issue"][0]["code"] == "login"
    assert "401 on b12screen-patient-view: JWT rejected (aud is not this endpoint)" in caplog.messages


def test_jwt_verification_without_public_base_url_is_refused_at_start() -> None:
    """Before, the ``aud`` was then built from the request's Host header: a token for any URL was accepted."""
    import os
    import subprocess
    import sys

    settings = {"issuers": (EHR.issuer(),)}
    with pytest.raises(ConfigError, match="public_base_url is not set"):
        create_app(ServiceConfig(**settings))
    create_app(ServiceConfig(**settings, insecure_no_auth=True))  # no JWT, no aud: not needed
    env = {"B12SCREEN_CDS_ISSUERS": json.dumps([{"iss": EHR.iss, "jwks": EHR.jwks()}])}
    served = subprocess.run([sys.executable, "-m", "b12screen", "serve", "--port", "0"], capture_output=True,
                            text=True, timeout=60, env={**{k: v for k, v in os.environ.items()
                                                           if not k.startswith("B12SCREEN_CDS_")}, **env})
    checked = CliRunner().invoke(cli, ["serve", "--check-config"], env=env)
    for code, stderr in ((served.returncode, served.stderr), (checked.exit_code, checked.stderr)):
        assert code == 2 and "Traceback" not in stderr
        assert "public_base_url is not set" in stderr and "B12SCREEN_CDS_PUBLIC_BASE_URL" in stderr
    result = CliRunner().invoke(cli, ["serve", "--check-config", "--public-base-url", PUBLIC], env=env)
    assert result.exit_code == 0 and json.loads(result.output)["public_base_url"] == PUBLIC


# -- R9: headers bounded in bytes and lines, in one read or many ------------------------------------------

def head(*lines: bytes) -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def padded(counted: int) -> bytes:
    """A request whose URL and header lines count ``counted`` bytes (each line: name, value and 2)."""
    fixed = len(b"/health") + len(b"Host") + len(b"x") + 2 + len(b"X-Pad") + 2
    return head(b"X-Pad: " + b"a" * (counted - fixed))


@pytest.mark.parametrize("request_bytes", [
    head(*[b"X-Pad-%d: " % i + b"a" * 1000 for i in range(100)]),  # 100 KiB of headers in one send
    head(*[b"X-%d: a" % i for i in range(5000)]),  # 5,000 header lines
    head(b"X-Big: " + b"a" * 100_000),  # one line of 100 KB
    padded(MAX_HEADER_BYTES + 1),  # one byte over
    head(*[b"X-%d: a" % i for i in range(MAX_HEADER_LINES)]),  # with Host, one line over
], ids=["100 KiB", "5000 lines", "one big line", "one byte over", "one line over"])
def test_headers_past_a_bound_in_one_send_get_431(service: tuple[str, int], request_bytes: bytes) -> None:
    with connect(service[1]) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 431 ") and b"application/fhir+json" in status
    [issue] = json.loads(body)["issue"]
    assert issue["code"] == "too-long" and issue["diagnostics"].startswith("request headers too large")


def test_headers_past_the_bound_over_several_reads_get_431(service: tuple[str, int]) -> None:
    import time

    with connect(service[1]) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):  # an unfinished line of 20 KB, 1 KB at a time
            try:
                sock.sendall(b"X-Pad: " + b"a" * 1000)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.005)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"headers over 16384 bytes" in answer


def test_headers_at_the_bounds_are_served(service: tuple[str, int]) -> None:
    with connect(service[1]) as sock:
        for request_bytes in (padded(MAX_HEADER_BYTES), head(*[b"X-%d: a" % i for i in range(MAX_HEADER_LINES - 1)])):
            sock.sendall(request_bytes)
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, f"closed: {answer[:200]!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")


# -- R10: idle connections cannot lock a new caller out ---------------------------------------------------

def is_open(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the server has not closed ``sock`` (nor sent anything) within ``wait`` seconds."""
    sock.settimeout(wait)  # 0: do not wait
    try:
        sock.recv(1)
        return False
    except (BlockingIOError, TimeoutError):
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(10)


def test_more_idle_connections_than_the_limit_do_not_lock_out_a_caller(service: tuple[str, int]) -> None:
    """Six idle connections from one address against a limit of three: a call on a new connection is served,
    and the connections closed to make room are the ones that had waited longest."""
    held = []
    try:
        for _ in range(6):
            held.append(connect(service[1]))
            get_health(held[-1])  # accepted and answered: now idle on keep-alive
        with connect(service[1]) as caller:
            assert get_health(caller).startswith(b"HTTP/1.1 200 ")
            response = post(service[0], PUBLIC + PV, {})  # and one more, with a JWT, as an EHR calls
            assert response.status_code == 200, response.text
        assert is_open(held[5])
        # the oldest, closed without a word (they would stay open for the 5 s read timeout otherwise)
        assert [is_open(sock, wait=2) for sock in held[:5]] == [False] * 5
    finally:
        for sock in held:
            sock.close()


def test_connections_with_a_request_being_answered_are_not_closed_for_a_new_one() -> None:
    """When every connection carries a request the service is working on, a new one is closed at once."""
    release, both_started = threading.Event(), threading.Barrier(3)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await asyncio.to_thread(both_started.wait, 10)
        await asyncio.to_thread(release.wait, 10)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    class Busy(BoundedHttpToolsProtocol):
        pass

    Busy.configure(5.0, 2)
    with running_server(app, http=Busy) as url:
        port = int(url.rsplit(":", 1)[1])
        busy = [connect(port) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            both_started.wait(10)  # the service has both requests in hand
            with connect(port) as extra:
                extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_until_closed(extra) == b""  # refused before any request was read
            release.set()
            for sock in busy:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            release.set()
            for sock in busy:
                sock.close()
