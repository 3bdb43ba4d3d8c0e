"""A FHIR Bulk Data Access (STU2) server on loopback, written for the tests.

It serves the batch fixture export (``fixtures/batch/export``) as a job: kick-off (202 + Content-Location),
status polls (202 with ``Retry-After`` and ``X-Progress``, then the manifest), an injected 429 and a
transient 500, an error file, a deleted file, an expired file, a file redirected to a second listener
(another origin, which records whatever Authorization it is sent), DELETE of the job, and a SMART
Backend Services token endpoint that verifies the client assertion.

Strict where the SMART reference server (smart-on-fhir/bulk-data-server) is: a CapabilityStatement lists the
types it holds, a kick-off naming another ``_type`` gets 400 with an OperationOutcome (``processing``:
``The requested resource type "X" is not available on this server``), and a token request with a scope for
a type it does not hold gets the OAuth error ``400 {"error": "invalid_scope", "error_description":
"Invalid scope: \"<scope>\"."}``.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from hostileserver import TwoListeners, drip_headers

from b12screen.sources import bulkexport, fhirclient
from b12screen.sources.extract import UNDERSTOOD_TYPES

EXPORT = Path(__file__).resolve().parent.parent / "fixtures" / "batch" / "export"
TOKEN = "test-access-token"
DELETED_PATIENT = "bx-only"


@functools.cache
def gzip_bomb() -> bytes:
    """64 MiB of blank NDJSON lines, gzip-compressed (about 64 KiB): a decompression bomb."""
    return gzip.compress(b"\n" * (64 << 20), compresslevel=9, mtime=0)


def fixture_files(folder: Path = EXPORT) -> dict[str, bytes]:
    """name -> NDJSON bytes of an export folder (gzip files served decompressed)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name == "log.ndjson":
            continue
        data = path.read_bytes()
        name = path.name
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        files[name] = data
    return files


def deleted_bundle() -> bytes:
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": f"Patient/{DELETED_PATIENT}"}}]}
    return json.dumps(bundle).encode() + b"\n"


class Waits(list[float]):
    """The pauses the export client asked for (poll intervals after ``Retry-After`` and its 1 s floor, retry
    backoff), in order, none of them slept: its clock moves on by what it asked, so ``--max-wait`` still ends a
    job that is never ready. Tests assert what was asked instead of waiting it out."""

    def sleep(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(0)  # let the other threads run, as a real pause would

    def clock(self) -> float:
        return time.monotonic() + sum(self)


def record_waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    """In-process runs of ``export`` and ``batch --fhir-server`` build their client and exporter with the
    sleep (and the exporter's clock) of the :class:`Waits` returned."""
    waits = Waits()

    class Client(fhirclient.FhirClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{"sleep": waits.sleep, **kwargs})

    class Exporter(bulkexport.BulkExporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{"sleep": waits.sleep, "clock": waits.clock, **kwargs})

    monkeypatch.setattr(fhirclient, "FhirClient", Client)
    monkeypatch.setattr(bulkexport, "BulkExporter", Exporter)
    return waits


@dataclass
class Scenario:
    requires_token: bool = True
    polls_before_ready: int = 1
    inject_429: bool = True
    inject_500: bool = True
    error_file: bool = True
    deleted_file: bool = False
    redirect: str | None = "Patient.001.ndjson"  # served by the other origin
    expire: str | None = None  # 404 for this file in these jobs
    expire_jobs: tuple[int, ...] = (1,)
    fatal_kickoff: bool = False
    declare_code_search: bool = True
    smart_public_key: Any = None  # verifies client assertions when set
    token_lifetime: int = 300
    never_ready: bool = False
    broken: str | None = None  # this file answers 500 (a server fault that outlasts the retries)
    reject_type_filter: bool = False
    insecure_url: bool = False  # one more output file, on plain http to a remote host
    fatal_poll: bool = False  # the status request fails for good (a non-transient OperationOutcome)
    slow: str | None = None  # this file trickles out a line every 0.1 s for a minute
    first_job_only: str | None = None  # this file is in the first job's manifest only
    wrong_count: str | None = None  # the manifest announces one resource more for this file
    gzip_bomb: str | None = None  # this file comes gzip-encoded: 64 KiB on the wire, 64 MiB expanded
    endless: str | None = None  # this file never ends: bytes as fast as the socket takes them (for 30 s at most)
    missing_elsewhere: str | None = None  # this file's URL is on the other origin, which answers 404
    cut_short: str | None = None  # this file's connection closes halfway through its declared length
    drip_headers: str | None = None  # this file's (or "status": the status request's) headers come a line at a time
    types: tuple[str, ...] = tuple(sorted(UNDERSTOOD_TYPES))  # what the server holds: another _type is refused
    capability_types: tuple[str, ...] | None = None  # what its CapabilityStatement says (None: ``types``)
    no_capability: bool = False  # GET metadata answers 404
    scopes_supported: list[str] | None = None  # published in the SMART configuration when set


@dataclass
class Log:
    kickoffs: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    deletes: list[str] = field(default_factory=list)
    downloads: list[tuple[str, str | None]] = field(default_factory=list)
    other_downloads: list[tuple[str, str | None]] = field(default_factory=list)
    tokens_issued: int = 0
    scopes: list[str] = field(default_factory=list)  # the scope of each token request
    metadata: list[str | None] = field(default_factory=list)  # the Authorization of each metadata request


class BulkServer(TwoListeners):
    def __init__(self, scenario: Scenario | None = None, folder: Path = EXPORT) -> None:
        self.scenario = scenario or Scenario()
        self.log = Log()
        self.files = fixture_files(folder)
        self.lock = threading.Lock()
        self.jobs: dict[int, int] = {}  # job -> polls so far
        self.retry_after: dict[int, str] = {}  # poll number -> Retry-After to send instead of the default
        self.listen(self._handler(main=True), self._handler(main=False))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.main.server_port}/fhir"

    @property
    def other_base(self) -> str:
        return f"http://127.0.0.1:{self.other.server_port}"

    def manifest(self, job: int) -> dict[str, Any]:
        sc = self.scenario
        output = []
        for name, data in self.files.items():
            if name == sc.first_job_only and job > 1:
                continue
            host = f"{self.other_base}/files" if name == sc.redirect else f"{self.base}/files/{job}"
            url = f"{self.base}/files/{job}/redirect/{name}" if name == sc.redirect else f"{host}/{name}"
            if name == sc.missing_elsewhere:
                url = f"{self.other_base}/files/{name}"
            count = data.count(b"\n") + (name == sc.wrong_count)
            output.append({"type": name.split(".")[0], "url": url, "count": count})
        if sc.insecure_url:
            output.append({"type": "Condition", "url": "http://files.example.org/Condition.ndjson"})
        manifest: dict[str, Any] = {"transactionTime": "2026-11-24T00:00:00Z", "request": f"{self.base}/$export",
                                    "requiresAccessToken": sc.requires_token, "output": output, "error": []}
        if sc.error_file:
            manifest["error"] = [{"type": "OperationOutcome", "url": f"{self.base}/files/{job}/errors.ndjson"}]
        if sc.deleted_file:
            manifest["deleted"] = [{"type": "Bundle", "url": f"{self.base}/files/{job}/deleted.ndjson"}]
        return manifest

    def _handler(self, main: bool) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                     ctype: str = "application/fhir+json") -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def outcome(self, status: int, code: str, text: str) -> None:
                body = {"resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
                self.send(status, json.dumps(body).encode())

            def authorized(self) -> bool:
                return self.headers.get("Authorization") == f"Bearer {TOKEN}"

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if not main:
                    server.log.other_downloads.append((path, self.headers.get("Authorization")))
                    name = path.rsplit("/", 1)[-1]
                    if name == server.scenario.missing_elsewhere:
                        return self.send(404, b"no such file", ctype="text/plain")
                    return self.send(200, server.files[name], ctype="application/fhir+ndjson")
                if path == "/fhir/.well-known/smart-configuration":
                    config: dict[str, Any] = {"token_endpoint": f"{server.base}/token"}
                    if server.scenario.scopes_supported is not None:
                        config["scopes_supported"] = server.scenario.scopes_supported
                    return self.send(200, json.dumps(config).encode(), ctype="application/json")
                if path == "/fhir/metadata":
                    server.log.metadata.append(self.headers.get("Authorization"))
                    if server.scenario.no_capability:
                        return self.outcome(404, "not-found", "unknown")
                    return self.send(200, json.dumps(server.capability()).encode())
                if path.endswith("$export"):
                    return self.kickoff("GET", dict(parse_qsl(urlsplit(self.path).query)),
                                        parse_qsl(urlsplit(self.path).query))
                if not self.authorized() and (server.scenario.requires_token or path.startswith("/fhir/status")):
                    return self.outcome(401, "login", "no token")
                if path.startswith("/fhir/status/") and server.scenario.drip_headers == "status":
                    return drip_headers(self)
                if path.startswith("/fhir/status/"):
                    return self.status(int(path.rsplit("/", 1)[-1]))
                if path.startswith("/fhir/files/"):
                    return self.file(path)
                self.outcome(404, "not-found", "unknown")

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if path == "/fhir/token":
                    return self.token(dict(parse_qsl(body.decode())))
                if path.endswith("$export"):
                    params = [(p["name"], p["valueString"]) for p in json.loads(body)["parameter"]]
                    return self.kickoff("POST", dict(params), params)
                self.outcome(404, "not-found", "unknown")

            def do_DELETE(self) -> None:
                server.log.deletes.append(urlsplit(self.path).path)
                self.send(202)

            def token(self, form: dict[str, str]) -> None:
                key = server.scenario.smart_public_key
                try:
                    claims = jwt.decode(form["client_assertion"], key, algorithms=["RS384"],
                                        audience=f"{server.base}/token")
                    assert claims["iss"] == claims["sub"] == "b12-client"
                except Exception:  # any bad assertion is refused
                    return self.send(401, b'{"error":"invalid_client"}', ctype="application/json")
                server.log.scopes.append(form.get("scope", ""))
                if not all(server.known_scope(scope) for scope in form.get("scope", "").split()):
                    body = {"error": "invalid_scope", "error_description": f'Invalid scope: "{form.get("scope")}".'}
                    return self.send(400, json.dumps(body).encode(), ctype="application/json")
                server.log.tokens_issued += 1
                self.send(200, json.dumps({"access_token": TOKEN, "token_type": "bearer",
                                           "expires_in": server.scenario.token_lifetime}).encode(),
                          ctype="application/json")

            def kickoff(self, method: str, params: dict[str, str], pairs: list[tuple[str, str]]) -> None:
                with server.lock:
                    server.log.kickoffs.append({"method": method, "path": urlsplit(self.path).path, "params": params,
                                                "pairs": pairs, "prefer": self.headers.get("Prefer"),
                                                "authorization": self.headers.get("Authorization")})
                    job = len(server.log.kickoffs)
                    server.jobs[job] = 0
                if not self.authorized():
                    return self.outcome(401, "login", "no token")
                for rtype in params.get("_type", "").split(","):
                    if rtype and rtype not in server.scenario.types:
                        return self.outcome(400, "processing",
                                            f'The requested resource type "{rtype}" is not available on this server')
                if server.scenario.reject_type_filter and "_typeFilter" in params:
                    return self.outcome(400, "not-supported", "_typeFilter is not supported")
                if server.scenario.fatal_kickoff:
                    return self.outcome(400, "not-supported", "Group export is not enabled on this server")
                self.send(202, headers={"Content-Location": f"{server.base}/status/{job}"})

            def status(self, job: int) -> None:
                with server.lock:
                    server.log.polls += 1
                    server.jobs[job] += 1
                    n = server.jobs[job]
                sc = server.scenario
                if sc.fatal_poll:
                    return self.outcome(500, "exception", "the export job failed")
                if sc.inject_429 and n == 1:
                    return self.send(429, headers={"Retry-After": "0"})
                if sc.inject_500 and n == 2:
                    return self.outcome(500, "transient", "busy")
                ready_at = 1 + sc.inject_429 + sc.inject_500 + sc.polls_before_ready
                if sc.never_ready or n < ready_at:
                    retry = server.retry_after.get(n) or ("0" if n % 2 else formatdate(time.time() - 5, usegmt=True))
                    return self.send(202, headers={"Retry-After": retry, "X-Progress": f"{n * 10}% done"})
                self.send(200, json.dumps(server.manifest(job)).encode(), ctype="application/json")

            def file(self, path: str) -> None:
                server.log.downloads.append((path, self.headers.get("Authorization")))
                parts = path.split("/")  # /fhir/files/<job>/[redirect/]<name>
                job, name = int(parts[3]), parts[-1]
                if parts[4] == "redirect":
                    return self.send(302, headers={"Location": f"{server.other_base}/files/{name}"})
                if name == server.scenario.slow:
                    line = server.files[name].splitlines(keepends=True)[0]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(line) * 600))
                    self.end_headers()
                    for _ in range(600):
                        try:
                            self.wfile.write(line)
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.1)
                    return
                if name == server.scenario.gzip_bomb:
                    return self.send(200, gzip_bomb(), {"Content-Encoding": "gzip"}, ctype="application/fhir+ndjson")
                if name == server.scenario.cut_short:
                    self.send_response(200)
                    self.send_header("Content-Length", str(2 * len(server.files[name])))
                    self.end_headers()
                    self.wfile.write(server.files[name])
                    self.close_connection = True
                    return None
                if name == server.scenario.drip_headers:
                    return drip_headers(self)
                if name == server.scenario.endless:
                    return self.endless()
                if name == server.scenario.broken:
                    return self.outcome(500, "exception", "disk error")
                if name == server.scenario.expire and job in server.scenario.expire_jobs:
                    return self.outcome(404, "not-found", "expired")
                if name == "errors.ndjson":
                    issue = {"resourceType": "OperationOutcome",
                             "issue": [{"severity": "error", "code": "processing",
                                        "diagnostics": "Procedure export failed"}]}
                    return self.send(200, json.dumps(issue).encode() + b"\n", ctype="application/fhir+ndjson")
                if name == "deleted.ndjson":
                    return self.send(200, deleted_bundle(), ctype="application/fhir+ndjson")
                self.send(200, server.files[name], ctype="application/fhir+ndjson")

            def endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.end_headers()  # no length: the body ends when the connection does
                line = server.files["Patient.000.ndjson"].splitlines(keepends=True)[0] * 256
                stop = time.monotonic() + 30
                try:
                    while time.monotonic() < stop:
                        self.wfile.write(line)
                except OSError:
                    pass  # the client hung up
                self.close_connection = True

        return Handler

    def capability(self) -> dict[str, Any]:
        params = [{"name": "code", "type": "token"}] if self.scenario.declare_code_search else []
        types = self.scenario.capability_types if self.scenario.capability_types is not None else self.scenario.types
        return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1",
                "rest": [{"mode": "server", "resource": [
                    {"type": t, "searchParam": params if t in ("Condition", "Observation", "Procedure") else []}
                    for t in types]}]}

    def known_scope(self, scope: str) -> bool:
        """``system/<type or *>.<read, rs or *>`` for a type the server holds (the reference server's check)."""
        rtype, _, access = scope.removeprefix("system/").partition(".")
        return scope.startswith("system/") and (rtype == "*" or rtype in self.scenario.types) and \
            access in ("read", "rs", "*")
