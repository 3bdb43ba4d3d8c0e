"""Whole requests in the shapes real clients send (fixtures/cdshooks/, see fixtures/README.md), each
with its expected status and cards in fixtures/cdshooks/expected.json."""

from __future__ import annotations

import json
import re
import warnings
from datetime import date
from functools import cache
from typing import Any

import pytest
import responses
from cdshooks_helpers import FIXTURES, MockEhr, empty_fields, load

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.plugins import get_plugin_manager

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

EXPECTED = load("expected.json")
BASE = "https://cds.example.org"


@cache
def ehr() -> MockEhr:
    return MockEhr()


@cache
def client() -> TestClient:
    config = ServiceConfig(issuers=(ehr().issuer(),), public_base_url=BASE,
                           fhir_servers=tuple(EXPECTED["fhir_servers"]))
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    return TestClient(create_app(config, screener=screener, today=lambda: date.fromisoformat(EXPECTED["as_of"])))


def fhir_server(rs: responses.RequestsMock, name: str) -> str:
    server = load(name)
    base = server["base"]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        assert request.headers.get("Authorization") == f"Bearer {server['token']}"
        relative = request.url[len(base):].lstrip("/")
        body = server["routes"].get(relative if relative.startswith("?") else relative.split("?")[0])
        if body is None:
            return 404, {}, "{}"
        body = dict(body)
        return body.pop("_status", 200), {"Content-Type": "application/fhir+json"}, json.dumps(body)

    rs.add_callback(responses.GET, re.compile(re.escape(base) + r".*"), callback=answer)
    return base


def rules_of(card: dict[str, Any]) -> list[str]:
    flag = next(s for s in card["suggestions"] if s["label"] == "Record B12 risk flag")["actions"][0]["resource"]
    return sorted(e["valueCoding"]["code"] for e in flag["extension"]
                  if e["url"].endswith("flag-reason") and not e["valueCoding"]["code"].startswith("MOD-"))


def test_every_fixture_is_listed() -> None:
    files = {p.name for p in FIXTURES.glob("*.json")} - {"expected.json"}
    listed = set(EXPECTED["cases"]) | {c["server"] for c in EXPECTED["cases"].values() if "server" in c}
    assert files == listed
    readme = (FIXTURES.parent / "README.md").read_text(encoding="utf-8")
    for name in files:
        assert f"cdshooks/{name}" in readme, name


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_real_world_request(name: str) -> None:
    case = EXPECTED["cases"][name]
    body = load(name)
    path = f"/cds-services/b12screen-{body['hook']}"
    alg = "RS384" if name.startswith("epic") else "ES384"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        if "server" in case:
            fhir_server(rs, case["server"])
        response = client().post(path, json=body, headers=ehr().auth(BASE + path, alg=alg))
        assert len(rs.calls) == case["fetches"]
    assert response.status_code == case["status"], response.text
    payload = response.json()
    if response.status_code != 200:
        assert payload["resourceType"] == "OperationOutcome"
        return
    assert len(payload["cards"]) == len(case["cards"])
    for card, want in zip(payload["cards"], case["cards"], strict=True):
        assert card["indicator"] == want["indicator"]
        assert card["source"]["topic"]["code"] == want["outcome"]
        assert rules_of(card) == want["rules"]
        assert len(card["summary"]) < 140
        assert not empty_fields(card)
