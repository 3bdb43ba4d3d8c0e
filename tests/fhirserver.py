"""A small FHIR R4 REST server on loopback, written for the tests of ``fetch --write-back``.

It holds resources in memory and answers what ``fetch`` asks: an instance read, a search by ``patient``
(every resource of the type about that patient: a superset of a search by code, which the screening
filters anyway), a search of Flags by ``subject`` and ``identifier`` (``system|`` or ``system|value``),
a conditional create (``If-None-Exist``) and an update (``PUT``) that checks ``If-Match`` against the
current ``meta.versionId`` (412 with an OperationOutcome when it is stale), as FHIR R4 servers that
support versioning do. ``changes_before_put`` plays another writer that changes a Flag just before our
update arrives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Store:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, If-Match)
    #: called with the stored Flag before an update is checked (another writer); once per Flag id
    changes_before_put: Callable[[dict[str, Any]], None] | None = None
    changed: set[str] = field(default_factory=set)

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        stored = {**resource, "meta": {"versionId": "1"}}
        self.resources[(resource["resourceType"], resource["id"])] = stored
        return stored

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for (t, _), r in self.resources.items() if t == rtype]

    def flags(self, patient: str) -> list[dict[str, Any]]:
        return [f for f in self.of_type("Flag") if f.get("subject", {}).get("reference") == f"Patient/{patient}"]


def bump(resource: dict[str, Any], **changes: Any) -> None:
    """Another writer's update: the changes and a new version."""
    resource.update(changes)
    resource["meta"] = {"versionId": str(int(resource["meta"]["versionId"]) + 1)}


def _about(resource: dict[str, Any], patient: str) -> bool:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return ref == patient or ref == f"Patient/{patient}"


def _has_identifier(resource: dict[str, Any], token: str) -> bool:
    system, _, value = token.partition("|")
    return any(i.get("system") == system and (not value or i.get("value") == value)
               for i in resource.get("identifier") or [])


class FhirServer:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.server_port}/fhir"

    def __enter__(self) -> FhirServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.shutdown()
        self.http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        store = self.store

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def outcome(self, status: int, code: str, text: str) -> None:
                self.send(status, {"resourceType": "OperationOutcome",
                                   "issue": [{"severity": "error", "code": code, "diagnostics": text}]})

            def parts(self) -> tuple[list[str], list[tuple[str, str]]]:
                url = urlsplit(self.path)
                store.log.append((self.command, url.path, self.headers.get("If-Match")))
                return url.path.removeprefix("/fhir/").split("/"), parse_qsl(url.query)

            def do_GET(self) -> None:
                path, query = self.parts()
                params = dict(query)
                with server.lock:
                    if len(path) == 2:
                        found = store.resources.get((path[0], path[1]))
                        return self.send(200, found) if found else self.outcome(404, "not-found", "unknown")
                    hits = store.of_type(path[0])
                    if "patient" in params or "subject" in params:
                        hits = [r for r in hits if _about(r, params.get("patient") or params["subject"])]
                    if "identifier" in params:
                        hits = [r for r in hits if _has_identifier(r, params["identifier"])]
                    self.send(200, {"resourceType": "Bundle", "type": "searchset",
                                    "entry": [{"resource": r} for r in hits]})

            def do_POST(self) -> None:
                path, _ = self.parts()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    condition = self.headers.get("If-None-Exist", "").removeprefix("identifier=")
                    if condition and any(_has_identifier(r, condition) for r in store.of_type(path[0])):
                        return self.send(200)
                    body["id"] = f"f{len(store.resources) + 1}"
                    store.add(body)
                self.send(201, headers={"Location": f"{server.base}/{path[0]}/{body['id']}/_history/1"})

            def do_PUT(self) -> None:
                path, _ = self.parts()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    current = store.resources.get((path[0], path[1]))
                    if current is None:
                        return self.outcome(404, "not-found", "unknown")
                    if store.changes_before_put and path[1] not in store.changed:
                        store.changed.add(path[1])
                        store.changes_before_put(current)
                    version = current["meta"]["versionId"]
                    if self.headers.get("If-Match") not in (f'W/"{version}"', None):
                        return self.outcome(412, "conflict", f"version {version} is the current one")
                    body["meta"] = {"versionId": str(int(version) + 1)}
                    store.resources[(path[0], path[1])] = body
                self.send(200)

        return Handler
