"""Test support for the CDS Hooks service: a mock EHR that signs real JWTs with keys generated at test
time, request builders, a walker for empty fields, and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from b12screen.cdshooks.config import IssuerConfig

AS_OF = date(2026, 11, 24)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cdshooks"
ISS = "https://ehr.example.org"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


class MockEhr:
    """A CDS client: an ES384 and an RS384 key pair, its JWK Set, and JWTs signed like a real EHR."""

    def __init__(self, iss: str = ISS) -> None:
        self.iss = iss
        self.ec_key = ec.generate_private_key(ec.SECP384R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kids = {"ES384": "ehr-ec-1", "RS384": "ehr-rsa-1"}

    def private_key(self, alg: str) -> Any:
        return self.ec_key if alg.startswith("ES") else self.rsa_key

    def jwks(self) -> dict[str, Any]:
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk.update(kid=self.kids["ES384"], use="sig", alg="ES384")
        rsa_jwk.update(kid=self.kids["RS384"], use="sig", alg="RS384")
        return {"keys": [ec_jwk, rsa_jwk]}

    def issuer(self, **changes: Any) -> IssuerConfig:
        return IssuerConfig(**{"iss": self.iss, "jwks": self.jwks(), **changes})

    def token(self, aud: str | list[str], *, alg: str = "ES384", kid: str | None = None, iss: str | None = None,
              lifetime: int = 300, iat_offset: int = 0, jti: str | None = None, jku: str | None = None,
              key: Any = None, **claims: Any) -> str:
        now = int(time.time()) + iat_offset
        payload = {"iss": iss or self.iss, "aud": aud, "exp": now + lifetime, "iat": now,
                   "jti": str(uuid.uuid4()) if jti is None else jti, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": kid or self.kids.get(alg, "none"), "typ": "JWT"}
        if jku:
            headers["jku"] = jku
        return jwt.encode(payload, key if key is not None else self.private_key(alg), algorithm=alg, headers=headers)

    def auth(self, aud: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud, **kw)}"}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def metformin_request(rid: str, pid: str, authored: str = "2019-05-10", status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": "861007",
                                                      "display": "metformin hydrochloride 500 MG Oral Tablet"}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": authored}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if resources:
        bundle["entry"] = [{"resource": r} for r in resources]
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


ALL_KEYS = ("patient", "medicationRequests", "medicationStatements", "medicationDispenses",
            "medicationAdministrations", "conditions", "procedures", "b12Labs", "otherLabs", "otherObservations")


def full_prefetch(pid: str = "p1", birth: str = "1950-01-01", **keys: Any) -> dict[str, Any]:
    """Every declared key: the given values, a Patient, and ``null`` (known-empty) for the rest."""
    prefetch: dict[str, Any] = {k: None for k in ALL_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": pid, "birthDate": birth}
    prefetch.update(keys)
    return prefetch


def request_body(hook: str = "patient-view", pid: str = "p1", prefetch: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/u1", "patientId": pid}
    if hook == "order-sign":
        context["draftOrders"] = extra.pop("draft_orders", {"resourceType": "Bundle", "type": "collection"})
    if hook == "order-select":  # by default a selected draft metformin order
        draft = {**metformin_request("draft-met", pid), "status": "draft"}
        context["selections"] = extra.pop("selections", ["MedicationRequest/draft-met"])
        context["draftOrders"] = extra.pop("draft_orders", {"resourceType": "Bundle", "type": "collection",
                                                            "entry": [{"resource": draft}]})
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def metformin_patient(pid: str = "p1") -> dict[str, Any]:
    """Full prefetch for a 76-year-old on metformin since 2019 (MET-2, medium)."""
    return full_prefetch(pid, medicationRequests=searchset(metformin_request("m1", pid)))


def empty_fields(value: Any, path: str = "$") -> list[str]:
    """Paths of every ``null``, ``""``, ``[]`` or ``{}`` in a JSON value (CDS Hooks forbids them)."""
    found: list[str] = []
    if value is None or value == "" or value == [] or value == {}:
        found.append(path)
    elif isinstance(value, dict):
        for k, v in value.items():
            found += empty_fields(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += empty_fields(v, f"{path}[{i}]")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_health(sock: socket.socket) -> bytes:
    """Send ``GET /health`` on an open keep-alive connection and read the whole answer."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(65536)
        assert chunk, "closed before the answer"
        answer += chunk
    return answer


@contextmanager
def running_server(app: Any, port: int | None = None, **settings: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 (on ``port``, else a free one) in a thread; yields the
    base URL, then stops it."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on",
                            **settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    else:  # pragma: no cover
        server.should_exit = True
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def send_fhir_json(handler: Any, body: Any) -> None:
    """Answer a request with ``body`` as FHIR JSON (200; bytes sent as they are), or 404 with an
    OperationOutcome when None."""
    payload = body if isinstance(body, bytes) else \
        json.dumps(body if body is not None else {"resourceType": "OperationOutcome"}).encode()
    handler.send_response(200 if body is not None else 404)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class Redirect(str):
    """A ``stub_http_server`` route answering 302 to this URL prefix plus the request's path and query."""


@contextmanager
def stub_http_server(routes: dict[str, Any] | Callable[[str], Any], redirect_all: Redirect | None = None,
                     ) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server answering GET ``path`` (query ignored) with ``routes[path]`` as JSON, or
    with ``routes(path with query)`` when ``routes`` is a function (None: 404), or every GET with a 302 to
    ``redirect_all`` + path; yields (base URL, list of {path, authorization} seen)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization") or ""})
            if redirect_all is not None:
                self.send_response(302)
                self.send_header("Location", redirect_all + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            send_fhir_json(self, routes(self.path) if callable(routes) else routes.get(path))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
