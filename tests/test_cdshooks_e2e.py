"""End to end: the service under a real uvicorn on 127.0.0.1, called over HTTP with signed JWTs; the
EHR's JWK Set and FHIR server are loopback HTTP servers too (test mode)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import pytest
import requests
from cdshooks_helpers import (
    AS_OF,
    MockEhr,
    Redirect,
    empty_fields,
    free_port,
    full_prefetch,
    metformin_request,
    request_body,
    running_server,
    searchset,
    stub_http_server,
)

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.plugins import get_plugin_manager

PV = "/cds-services/b12screen-patient-view"
OS = "/cds-services/b12screen-order-sign"


@cache
def ehr() -> MockEhr:
    return MockEhr()


@pytest.fixture(scope="module")
def ehr_servers() -> Iterator[dict[str, Any]]:
    """The EHR side: a JWKS endpoint and a FHIR server with one patient on metformin."""
    fhir_routes = {
        "/fhir/Patient/p1": {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
        "/fhir/MedicationRequest": searchset(metformin_request("m1", "p1")),
        "/fhir/Condition": searchset(), "/fhir/Procedure": searchset(), "/fhir/Observation": searchset(),
        "/fhir/MedicationStatement": searchset(), "/fhir/MedicationDispense": searchset(),
        "/fhir/MedicationAdministration": searchset(),
    }
    with stub_http_server({"/jwks.json": ehr().jwks(), **fhir_routes}) as (base, seen):
        yield {"base": base, "jku": f"{base}/jwks.json", "fhir": f"{base}/fhir", "seen": seen,
               "routes": fhir_routes}


@pytest.fixture(scope="module")
def service(ehr_servers: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    config = ServiceConfig(
        test_mode=True, fhir_servers=(ehr_servers["fhir"],), cors_origins=("https://ehr.example.org",),
        issuers=(ehr().issuer(jwks=None, jku=(ehr_servers["jku"],)),), public_base_url=f"http://127.0.0.1:{port}",
    )
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    with running_server(create_app(config, screener=screener, today=lambda: AS_OF), port) as base:
        yield base


def call(service: str, path: str, body: Any, jku: str) -> requests.Response:
    headers = ehr().auth(service + path, jku=jku)
    return requests.post(service + path, json=body, headers=headers, timeout=10)



@contextmanager
def serve_subprocess(*options: str, ready: str = "/health") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``b12screen serve --insecure-no-auth`` in a subprocess on a free loopback port, once ``ready``
    answers 200; yields (base URL, process) and stops it after (its stderr stays readable)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "b12screen", "serve", "--insecure-no-auth", "--port", str(port), *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(base + ready, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("b12screen serve did not start")
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=10)

def test_discovery_over_http(service: str, ehr_servers: dict[str, Any]) -> None:
    headers = ehr().auth(service + "/cds-services", jku=ehr_servers["jku"], alg="RS384")
    response = requests.get(service + "/cds-services", headers=headers, timeout=10)
    assert response.status_code == 200
    assert len(response.json()["services"]) == 3
    assert requests.get(service + "/cds-services", timeout=10).status_code == 401


def test_patient_view_with_fallback_fetch_over_http(service: str, ehr_servers: dict[str, Any]) -> None:
    seen = ehr_servers["seen"]
    seen.clear()
    body = request_body(fhirServer=ehr_servers["fhir"], fhirAuthorization={
        "access_token": "loopback-token", "token_type": "Bearer", "expires_in": 60, "scope": "user/*.read",
        "subject": "b12screen"})
    response = call(service, PV, body, ehr_servers["jku"])
    assert response.status_code == 200, response.text
    [card] = response.json()["cards"]
    assert len(card["summary"]) < 140 and not empty_fields(response.json())
    fhir_calls = [s for s in seen if s["path"].startswith("/fhir/")]
    assert len(fhir_calls) == 10
    assert all(s["authorization"] == "Bearer loopback-token" for s in fhir_calls)
    replay = requests.post(service + PV, json=body, headers={"Authorization": response.request.headers[
        "Authorization"]}, timeout=10)
    assert replay.status_code == 401 and "diagnostics" not in replay.text


def test_redirects_to_a_host_off_the_allow_list_send_nothing_there(ehr_servers: dict[str, Any]) -> None:
    """A real allow-listed server answering 302 to a second listener: nothing reaches the second one."""
    with stub_http_server(dict(ehr_servers["routes"])) as (other, other_seen), \
            stub_http_server({}, redirect_all=Redirect(other)) as (redirecting, redirect_seen):
        port = free_port()
        config = ServiceConfig(test_mode=True, fhir_servers=(f"{redirecting}/fhir",),
                               issuers=(ehr().issuer(jwks=None, jku=(ehr_servers["jku"],)),),
                               public_base_url=f"http://127.0.0.1:{port}")
        screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
        with running_server(create_app(config, screener=screener, today=lambda: AS_OF), port) as service:
            body = request_body(fhirServer=f"{redirecting}/fhir", fhirAuthorization={
                "access_token": "loopback-token", "token_type": "Bearer", "expires_in": 60,
                "scope": "user/*.read", "subject": "b12screen"})
            response = call(service, PV, body, ehr_servers["jku"])
    assert response.status_code == 412, response.text
    assert "Patient" in response.text or "patient" in response.text
    assert redirect_seen and all(s["path"].startswith("/fhir/") for s in redirect_seen)
    assert other_seen == []


def test_order_sign_over_http(service: str, ehr_servers: dict[str, Any]) -> None:
    prefetch = full_prefetch(medicationRequests=searchset(metformin_request("m1", "p1")))
    response = call(service, OS, request_body("order-sign", prefetch=prefetch), ehr_servers["jku"])
    assert response.status_code == 200 and len(response.json()["cards"]) == 1
    draft_test = {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
        "subject": {"reference": "Patient/p1"}}}]}
    response = call(service, OS, request_body("order-sign", prefetch=prefetch, draft_orders=draft_test),
                    ehr_servers["jku"])
    assert response.json() == {"cards": []}


def test_feedback_and_cors_over_http(service: str, ehr_servers: dict[str, Any]) -> None:
    feedback = {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z",
                              "acceptedSuggestions": [{"id": "s"}]}]}
    assert call(service, PV + "/feedback", feedback, ehr_servers["jku"]).status_code == 200
    preflight = requests.options(service + PV, headers={"Origin": "https://ehr.example.org",
                                                        "Access-Control-Request-Method": "POST"}, timeout=10)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"


@pytest.mark.slow
def test_b12screen_serve_runs_uvicorn(tmp_path: Any) -> None:
    """``b12screen serve`` for real, in a subprocess on a loopback port, stopped by the test."""
    with serve_subprocess("--log-level", "warning") as (base, process):
        prefetch = full_prefetch(medicationRequests=searchset(metformin_request("m1", "p1")))
        response = requests.post(base + PV, json=request_body(prefetch=prefetch), timeout=10)
        assert response.status_code == 200 and len(response.json()["cards"]) == 1
    assert b"Traceback" not in process.stderr.read()


def test_serve_on_a_port_in_use_is_one_line_and_exit_2() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "b12screen", "serve", "--insecure-no-auth", "--port", str(port)],
                              capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().strip() == f"b12screen: error: cannot bind 127.0.0.1:{port}: the port is in use"


@pytest.mark.slow
def test_serve_log_format_json_writes_only_json_lines() -> None:
    import json

    with serve_subprocess("--log-format", "json", ready="/ready") as (base, process):
        prefetch = full_prefetch(medicationRequests=searchset(metformin_request("m1", "p1")))
        assert requests.post(base + PV, json=request_body(prefetch=prefetch), timeout=10).status_code == 200
    lines = [json.loads(line) for line in process.stderr.read().decode().splitlines() if line.strip()
             and not line.startswith("b12screen: warning: JWT verification is OFF")]
    assert lines and all({"ts", "level", "event"} <= set(line) for line in lines)
    assert any(str(line["event"]).startswith("b12screen CDS service: issuers none") for line in lines)
    [call] = [line for line in lines if line.get("event") == "request" and line.get("service") != "unknown"]
    assert call["status"] == 200 and call["service"] == "b12screen-patient-view"
