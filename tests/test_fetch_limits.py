"""The FHIR client against a misbehaving loopback server: bodies over the size cap and bodies dripped
slowly are one clear error, quickly, whatever ``--timeout`` bounds each read by."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from b12screen.cli import cli
from b12screen.sources.fhirclient import FhirClient, FhirError

PATIENT = b'{"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}'
DRIP = 0.005  # seconds between the bytes of /drip: the 67-byte body takes 0.34 s or more
TIMEOUT = 0.25  # the read timeout of the dripped requests: 50 times the gap between two bytes, under the body's time


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        if mode == "big":  # no Content-Length: the cap must apply while reading
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.end_headers()
            chunk = b" " * (1 << 16)
            try:
                self.wfile.write(b'{"resourceType": "Patient", "id": "p1", "x": "')
                for _ in range(2048):  # 128 MiB
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if mode == "declared":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            return
        if mode == "drip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PATIENT)))
            self.end_headers()
            try:
                for byte in PATIENT:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(DRIP)
            except OSError:
                pass
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PATIENT)))
        self.end_headers()
        self.wfile.write(PATIENT)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_body_over_the_cap_is_refused_while_streaming(server: str) -> None:
    client = FhirClient(f"{server}/big", retries=0, max_body_bytes=1 << 20)
    with pytest.raises(FhirError, match=f"response larger than {1 << 20} bytes"):
        client.read("Patient", "p1")
    client = FhirClient(f"{server}/declared", retries=0, max_body_bytes=1 << 20)
    with pytest.raises(FhirError, match="response larger than"):
        client.read("Patient", "p1")
    assert FhirClient(f"{server}/ok", retries=0).read("Patient", "p1")["id"] == "p1"


def test_a_dripping_body_is_cut_at_the_request_time_limit(server: str) -> None:
    assert len(PATIENT) * DRIP > TIMEOUT  # the whole body takes longer than the request may
    client = FhirClient(f"{server}/drip", retries=0, timeout=(1.0, TIMEOUT))  # each byte comes well within it
    started = time.monotonic()
    with pytest.raises(FhirError, match="timed out"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < 5  # a bound against a hang: cut at the read timeout, not the body's end
    slow_but_allowed = FhirClient(f"{server}/drip", retries=0, timeout=(1.0, TIMEOUT), request_timeout=30)
    assert slow_but_allowed.read("Patient", "p1")["id"] == "p1"


def test_fetch_cli_names_the_limit(server: str) -> None:
    result = CliRunner().invoke(cli, ["fetch", "--fhir-server", f"{server}/big", "--patient", "p1", "--retries",
                                      "0", "--max-response-mb", "1", "--as-of", "2026-11-24"])
    assert result.exit_code == 2 and "response larger than 1048576 bytes" in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(cli, ["fetch", "--fhir-server", f"{server}/drip", "--patient", "p1", "--retries",
                                      "0", "--timeout", str(TIMEOUT), "--as-of", "2026-11-24"])
    assert result.exit_code == 2 and "timed out" in result.stderr, result.stderr
