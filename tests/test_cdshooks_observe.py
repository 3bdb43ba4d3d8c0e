"""Observability: JSON log lines (RFC 3339 UTC, no patient data or tokens) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Any

import pytest
from cdshooks_helpers import AS_OF, MockEhr, full_prefetch, metformin_request, request_body, searchset
from prometheus_client.parser import text_string_to_metric_families

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.observe import JsonFormatter, rejection_reason
from b12screen.plugins import get_plugin_manager

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BASE = "https://cds.example.org"
PV = "/cds-services/b12screen-patient-view"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EHR = MockEhr()


def client() -> TestClient:
    config = ServiceConfig(issuers=(EHR.issuer(),), public_base_url=BASE)
    app = create_app(config, screener=Screener(plugin_manager=get_plugin_manager(load_entry_points=False)),
                     today=lambda: AS_OF)
    return TestClient(app)


def metformin_call(cds: TestClient, pid: str = "patient-secret-id") -> Any:
    prefetch = full_prefetch(pid=pid, medicationRequests=searchset(metformin_request("m1", pid)))
    return cds.post(PV, json=request_body(pid=pid, prefetch=prefetch), headers=EHR.auth(BASE + PV))


def samples(cds: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = cds.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_json_log_lines_have_the_fields_and_no_patient_data_or_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="b12screen")
    cds = client()
    headers = EHR.auth(BASE + PV)
    assert metformin_call(cds).status_code == 200
    cds.post(PV, json={}, headers={"Authorization": "Bearer not-a-jwt"})
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name.startswith("b12screen")]
    parsed = [json.loads(line) for line in lines]
    [ok] = [p for p in parsed if p.get("event") == "request" and p["status"] == 200]
    assert RFC3339_UTC.match(ok["ts"]) and ok["level"] == "info"
    assert ok["service"] == "b12screen-patient-view" and ok["cards"] == 1 and ok["duration_ms"] >= 0
    assert ok["request_id"] and ok["iss"] == EHR.issuer().iss
    [rejected] = [p for p in parsed if p.get("event") == "request" and p["status"] == 401]
    assert rejected["service"] == "b12screen-patient-view"
    text = "\n".join(lines)
    assert "patient-secret-id" not in text and "not-a-jwt" not in text
    assert headers["Authorization"].split()[1] not in text


def test_metrics_count_requests_cards_and_jwt_rejections() -> None:
    cds = client()
    metformin_call(cds)
    metformin_call(cds)
    cds.post(PV, json={}, headers={"Authorization": "Bearer not-a-jwt"})
    cds.post("/cds-services/made-up-service-123", json={}, headers=EHR.auth(BASE + "/cds-services/x"))
    got = samples(cds)
    service = ("service", "b12screen-patient-view")
    assert got[("b12screen_cds_requests_total", (service, ("status", "200")))] == 2
    assert got[("b12screen_cds_requests_total", (service, ("status", "401")))] == 1
    assert got[("b12screen_cds_requests_total", (("service", "unknown"), ("status", "404")))] == 1
    assert got[("b12screen_cds_cards_total", (("outcome", "card"), service))] == 2
    assert got[("b12screen_cds_request_seconds_count", (service,))] == 3
    assert got[("b12screen_cds_jwt_rejections_total", (("reason", "unreadable JWT (not three segments)"),))] == 1
    assert not any("made-up" in str(labels) for _, labels in got)


def test_rejection_reasons_drop_caller_chosen_text() -> None:
    assert rejection_reason("algorithm 'HS256xxxxx' not allowed") == "algorithm … not allowed"
