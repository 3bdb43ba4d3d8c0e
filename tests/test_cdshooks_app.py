"""The CDS Hooks service over starlette's TestClient: request validation, status codes, the prefetch
contract, fallback fetch (``responses`` plays the FHIR server), cards, feedback, CORS, logs."""

from __future__ import annotations

import json
import logging
import re
import threading
import warnings
from functools import cache
from typing import Any

import pytest
import responses
from cdshooks_helpers import (
    AS_OF,
    MockEhr,
    empty_fields,
    full_prefetch,
    metformin_patient,
    metformin_request,
    request_body,
    searchset,
)
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.servicerequest import ServiceRequest

from b12screen import Screener
from b12screen.cdshooks.app import INLINE_MAX_BYTES, create_app
from b12screen.cdshooks.config import IssuerConfig, ServiceConfig
from b12screen.plugins import get_plugin_manager
from b12screen.sinks.flag import flag_json

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BASE = "https://cds.example.org/b12"
PV = "/cds-services/b12screen-patient-view"
OS = "/cds-services/b12screen-order-sign"
FHIR = "https://fhir.example.org/r4"
TOKEN = "fhir-access-token-secret"


@cache
def ehr() -> MockEhr:
    return MockEhr()


@cache
def screener() -> Screener:
    return Screener(plugin_manager=get_plugin_manager(load_entry_points=False))


def make_client(**changes: Any) -> TestClient:
    settings: dict[str, Any] = {"issuers": (ehr().issuer(),), "public_base_url": BASE, "fhir_servers": (FHIR,)}
    settings.update(changes)
    app = create_app(ServiceConfig(**settings).checked(), screener=screener(), today=lambda: AS_OF)
    return TestClient(app)


@pytest.fixture
def client() -> TestClient:
    return make_client()


def post(client: TestClient, path: str, body: Any, token: bool = True, **kw: Any) -> Any:
    headers = dict(kw.pop("headers", {}))
    if token:
        headers.update(ehr().auth(BASE + path))
    response = client.post(path, json=body, headers=headers, **kw)
    assert response.headers["content-type"].split(";")[0] in ("application/json", "application/fhir+json")
    assert not empty_fields(response.json()) or response.json() == {"cards": []}
    return response


def is_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text
    return body


# -- discovery ----------------------------------------------------------------------------------


def test_discovery_requires_a_jwt_whose_aud_is_the_discovery_url(client: TestClient) -> None:
    is_outcome(client.get("/cds-services"), 401)
    is_outcome(client.get("/cds-services", headers=ehr().auth(BASE + PV)), 401)
    response = client.get("/cds-services", headers=ehr().auth(BASE + "/cds-services"))
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert set(services) == {"b12screen-patient-view", "b12screen-order-sign", "b12screen-order-select"}
    assert services["b12screen-order-sign"]["hook"] == "order-sign"
    for service in services.values():
        assert {"hook", "id", "title", "description", "usageRequirements", "prefetch", "version",
                "hookVersion"} <= set(service)
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert not empty_fields(service)


def test_public_discovery_option() -> None:
    assert make_client(public_discovery=True).get("/cds-services").status_code == 200


# -- request validation --------------------------------------------------------------------------


def test_unknown_service_wrong_method_wrong_type_and_bad_json(client: TestClient) -> None:
    is_outcome(post(client, "/cds-services/nope", request_body()), 404)
    is_outcome(client.get(PV), 405)
    is_outcome(client.get("/no/such/path"), 404)
    headers = ehr().auth(BASE + PV)
    is_outcome(client.post(PV, content=b"hook=x", headers={**headers, "Content-Type": "text/plain"}), 415)
    headers = ehr().auth(BASE + PV)
    is_outcome(client.post(PV, content=b"{not json", headers={**headers, "Content-Type": "application/json"}), 400)
    headers = ehr().auth(BASE + PV)
    is_outcome(client.post(PV, content=b"[1, 2]", headers={**headers, "Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("change", [
    lambda b: b.pop("hook"),
    lambda b: b.pop("hookInstance"),
    lambda b: b.pop("context"),
    lambda b: b["context"].pop("patientId"),
    lambda b: b["context"].pop("userId"),
    lambda b: b.update(hook="order-sign"),
    lambda b: b.update(fhirAuthorization={"access_token": "x", "token_type": "Bearer"}),
    lambda b: b.update(fhirServer=FHIR, fhirAuthorization={"token_type": "Bearer"}),
    lambda b: b["context"].update(patientId="../../etc/passwd"),
    lambda b: b["context"].update(patientId="Observation/1"),
    lambda b: b.update(prefetch=["x"]),
])
def test_malformed_requests_are_400_with_an_operation_outcome(client: TestClient, change: Any) -> None:
    body = request_body(prefetch=metformin_patient())
    change(body)
    outcome = is_outcome(post(client, PV, body), 400)
    assert outcome["issue"][0]["diagnostics"]


def test_order_sign_needs_draft_orders(client: TestClient) -> None:
    body = request_body("order-sign", prefetch=metformin_patient())
    del body["context"]["draftOrders"]
    is_outcome(post(client, OS, body), 400)


def test_oversized_bodies_are_413() -> None:
    client = make_client(max_request_bytes=2_000)
    body = request_body(prefetch=metformin_patient())
    body["padding"] = "x" * 5_000
    is_outcome(post(client, PV, body), 413)

    def chunks():  # no Content-Length: the limit applies while streaming
        yield json.dumps(body).encode()

    headers = {**ehr().auth(BASE + PV), "Content-Type": "application/json"}
    is_outcome(client.post(PV, content=chunks(), headers=headers), 413)


def test_lenient_with_real_world_shapes(client: TestClient) -> None:
    pid = "abc"
    body = request_body(pid=f"Patient/{pid}", prefetch=metformin_patient(pid), extension={
        "org.example.trace": {"id": "1"}}, unknownTopLevel=True)
    body["context"]["extension"] = {"org.example.ctx": "x"}
    response = post(client, PV, body)
    assert response.status_code == 200
    assert len(response.json()["cards"]) == 1


# -- responses -----------------------------------------------------------------------------------


def test_card_for_a_patient_at_risk(client: TestClient) -> None:
    body = request_body(prefetch=metformin_patient())
    response = post(client, PV, body)
    assert response.status_code == 200
    [card] = response.json()["cards"]
    assert len(card["summary"]) < 140
    assert card["indicator"] == "info"
    assert card["source"]["label"] == "b12screen"
    assert card["source"]["topic"]["code"] == "suggest-b12-test"
    # readable names with dates; rule and resource ids stay out of what the clinician reads (7.10)
    assert "Metformin with long use" in card["detail"] and "Basis:" in card["detail"]
    assert "MET-2" not in card["detail"] + card["summary"] and "MedicationRequest/m1" not in card["detail"]
    assert "- metformin hydrochloride 500 MG Oral Tablet, 2019-05-10, active" in card["detail"].splitlines()
    assert card["selectionBehavior"] == "any"
    order, flag = card["suggestions"]
    assert order["isRecommended"] is True
    for suggestion in card["suggestions"]:
        assert suggestion["label"] and suggestion["uuid"]
        for action in suggestion["actions"]:
            assert action["type"] == "create" and isinstance(action["resource"], dict) and action["description"]
    service_request = order["actions"][0]["resource"]
    ServiceRequest.model_validate(service_request)
    assert service_request["code"]["coding"][0]["code"] == "2132-9"
    assert service_request["status"] == "draft" and service_request["intent"] == "order"
    assert service_request["subject"] == {"reference": "Patient/p1"}
    flag_resource = flag["actions"][0]["resource"]
    Flag.model_validate(flag_resource)
    assert "id" not in flag_resource
    assert flag_resource["identifier"][0]["system"] == "https://b12screen.org/fhir/Flag/identifier"
    for reason in card["overrideReasons"]:
        assert reason["system"] and reason["code"] and reason["display"]
    # the uuid is stable for the same hookInstance (retries) and differs for another
    again = post(client, PV, body).json()["cards"][0]
    assert again["uuid"] == card["uuid"]
    body["hookInstance"] = "another"
    assert post(client, PV, body).json()["cards"][0]["uuid"] != card["uuid"]


def test_high_priority_is_a_warning(client: TestClient) -> None:
    low = {"resourceType": "Observation", "id": "b12", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-09-01",
           "valueQuantity": {"value": 120, "unit": "ng/L", "code": "ng/L"}}
    response = post(client, PV, request_body(prefetch=full_prefetch(b12Labs=searchset(low))))
    [card] = response.json()["cards"]
    assert card["indicator"] == "warning"
    assert card["source"]["topic"]["code"] == "unactioned-low-b12"
    assert [s["label"] for s in card["suggestions"]] == ["Record B12 risk flag"]


def test_no_risk_gives_an_empty_card_list(client: TestClient) -> None:
    response = post(client, PV, request_body(prefetch=full_prefetch(birth="1990-01-01")))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_auto_write_flag_adds_a_system_action() -> None:
    response = post(make_client(auto_write_flag=True), PV, request_body(prefetch=metformin_patient()))
    [action] = response.json()["systemActions"]
    assert action["type"] == "create" and action["resource"]["resourceType"] == "Flag"


def test_source_url_is_included_when_configured() -> None:
    card = post(make_client(source_url="https://b12screen.org/rules"), PV,
                request_body(prefetch=metformin_patient())).json()["cards"][0]
    assert card["source"]["url"] == "https://b12screen.org/rules"


# -- prefetch contract and fallback fetch -------------------------------------------------------------


def fhir_routes(rs: responses.RequestsMock, data: dict[str, Any] | None = None, status: int = 200) -> None:
    """A FHIR server at FHIR: ``data`` maps a resource type (or ``Patient/p1``) to its JSON."""
    data = data or {}

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        path = request.path_url.split("?")[0][len("/r4/"):]
        body = data.get(path) or data.get(path.split("/")[0])
        if body is None:
            body = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"} if path.startswith(
                "Patient/") else searchset()
        return status, {"Content-Type": "application/fhir+json"}, json.dumps(body)

    rs.add_callback(responses.GET, re.compile(re.escape(FHIR) + r"/.*"), callback=answer)


def with_server(body: dict[str, Any], **authorization: Any) -> dict[str, Any]:
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "b12screen", **authorization}
    return body


def test_null_prefetch_is_known_empty_and_not_fetched(client: TestClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs)
        response = post(client, PV, with_server(request_body(prefetch=metformin_patient())))
        assert response.status_code == 200 and len(rs.calls) == 0


def test_absent_keys_are_fetched_with_the_bearer_token(client: TestClient) -> None:
    prefetch = metformin_patient()
    for key in ("conditions", "procedures", "b12Labs"):
        del prefetch[key]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs)
        response = post(client, PV, with_server(request_body(prefetch=prefetch)))
        assert response.status_code == 200
        fetched = sorted(c.request.path_url.split("?")[0] for c in rs.calls)
        assert fetched == ["/r4/Condition", "/r4/Observation", "/r4/Procedure"]
        assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in rs.calls)
        b12 = next(c for c in rs.calls if "Observation" in c.request.path_url)
        assert "code=http://loinc.org%7C13776-0,http://loinc.org%7C13964-2," in b12.request.url
        assert "patient=p1" in b12.request.url


def test_everything_fetched_when_there_is_no_prefetch(client: TestClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs, {"MedicationRequest": searchset(metformin_request("m1", "p1"))})
        response = post(client, PV, with_server(request_body()))
        assert len(rs.calls) == 10
    assert len(response.json()["cards"]) == 1


def test_required_data_unobtainable_is_412_naming_the_key(client: TestClient) -> None:
    prefetch = metformin_patient()
    del prefetch["conditions"]
    outcome = is_outcome(post(client, PV, request_body(prefetch=prefetch)), 412)
    assert outcome["issue"][0]["code"] == "processing"
    assert "conditions" in outcome["issue"][0]["diagnostics"]


def test_missing_optional_data_is_said_in_the_detail(client: TestClient) -> None:
    prefetch = metformin_patient()
    del prefetch["procedures"]
    card = post(client, PV, request_body(prefetch=prefetch)).json()["cards"][0]
    assert "Not available to this screen" in card["detail"] and "procedures" in card["detail"]
    paragraphs = card["detail"].split("\n\n")  # the gap and the footer stay separate paragraphs
    [gap] = [p for p in paragraphs if p.startswith("**Not available to this screen:**")]
    assert "\n" not in gap and paragraphs[-1].startswith("Screened as of ")


@pytest.mark.parametrize("status", [401, 500])
def test_fhir_server_errors_for_required_data_are_412(client: TestClient, status: int) -> None:
    prefetch = metformin_patient()
    del prefetch["medicationRequests"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs, status=status)
        is_outcome(post(client, PV, with_server(request_body(prefetch=prefetch))), 412)


def test_operation_outcome_prefetch_per_failure_mode() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    only_outcomes = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": outcome}]}
    for value in (outcome, only_outcomes):
        prefetch = metformin_patient()
        prefetch["procedures"] = value
        prefetch["conditions"] = value
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
            fhir_routes(rs)
            response = post(make_client(), PV, with_server(request_body(prefetch=prefetch)))
            assert response.status_code == 200
            assert sorted(c.request.path_url.split("?")[0] for c in rs.calls) == ["/r4/Condition", "/r4/Procedure"]
        is_outcome(post(make_client(prefetch_failure_mode="fail"), PV, request_body(prefetch=prefetch)), 412)
        is_outcome(post(make_client(prefetch_failure_mode="omit"), PV, request_body(prefetch=prefetch)), 412)
        prefetch["conditions"] = None
        card = post(make_client(prefetch_failure_mode="omit"), PV,
                    with_server(request_body(prefetch=prefetch))).json()["cards"][0]
        assert "procedures" in card["detail"]


def test_paged_prefetch_follows_next_links_on_the_fhir_server(client: TestClient) -> None:
    page2 = searchset(metformin_request("m1", "p1"))
    prefetch = full_prefetch(medicationRequests=searchset(next_url=f"{FHIR}?_getpages=x&_page=2"))
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, FHIR, json=page2)
        response = post(client, PV, with_server(request_body(prefetch=prefetch)))
        assert rs.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(response.json()["cards"]) == 1


def test_next_links_to_another_server_are_not_followed(client: TestClient) -> None:
    prefetch = metformin_patient()
    prefetch["conditions"] = searchset(next_url="https://elsewhere.example.net/fhir?page=2")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs)
        card = post(client, PV, with_server(request_body(prefetch=prefetch))).json()["cards"][0]
        assert not rs.calls
    assert "Possibly incomplete" in card["detail"] and "conditions" in card["detail"]
    [gap] = [p for p in card["detail"].split("\n\n") if p.startswith("**Possibly incomplete:**")]
    assert "\n" not in gap


def test_fhir_server_must_be_allow_listed_and_https(client: TestClient) -> None:
    prefetch = metformin_patient()
    del prefetch["conditions"]
    for server in ("https://evil.example.com/fhir", "http://fhir.example.org/r4", "http://127.0.0.1:9/fhir"):
        body = with_server(request_body(prefetch=prefetch))
        body["fhirServer"] = server
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
            rs.add_callback(responses.GET, re.compile(".*"), callback=lambda r: (200, {}, "{}"))
            is_outcome(post(client, PV, body), 412)
            assert not rs.calls


def test_expired_fhir_authorization_is_not_sent(client: TestClient) -> None:
    prefetch = metformin_patient()
    del prefetch["procedures"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs)
        post(client, PV, with_server(request_body(prefetch=prefetch), expires_in=0))
        assert rs.calls and "Authorization" not in rs.calls[0].request.headers


def test_a_redirect_is_followed_only_within_the_allow_list(client: TestClient) -> None:
    prefetch = metformin_patient()
    del prefetch["procedures"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.add(responses.GET, f"{FHIR}/Procedure", status=307,
               headers={"Location": "https://files.example.net/Procedure?patient=p1"})
        rs.add(responses.GET, "https://files.example.net/Procedure", json=searchset())
        response = post(client, PV, with_server(request_body(prefetch=prefetch)))
        assert response.status_code == 200
        assert [c.request.url.split("?")[0] for c in rs.calls] == [f"{FHIR}/Procedure"]
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, f"{FHIR}/Procedure", status=302, headers={"Location": f"{FHIR}/moved/Procedure"})
        rs.add(responses.GET, f"{FHIR}/moved/Procedure", json=searchset())
        assert post(client, PV, with_server(request_body(prefetch=prefetch))).status_code == 200
        assert rs.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_medication_reference_is_resolved_from_the_fhir_server(client: TestClient) -> None:
    request = metformin_request("m1", "p1")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": "Medication/med-1"}
    medication = {"resourceType": "Medication", "id": "med-1", "code": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6809", "display": "metformin"}]}}
    prefetch = full_prefetch(birth="1960-01-01", medicationRequests=searchset(request))
    assert post(client, PV, request_body(prefetch=prefetch)).json() == {"cards": []}
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, f"{FHIR}/Medication/med-1", json=medication)
        card = post(client, PV, with_server(request_body(prefetch=prefetch))).json()["cards"][0]
        assert rs.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert card["source"]["topic"]["code"] == "suggest-b12-test"


# -- time budget, CORS, feedback, logs ------------------------------------------------------------


def test_processing_time_is_bounded_for_work_in_the_cpu_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large request runs in the CPU pool: still stuck at the budget, it is answered 503 at once."""
    client = make_client(time_budget_seconds=0.2)
    release = threading.Event()
    slow = screener().evaluate

    def stuck(record: Any, as_of: Any) -> Any:
        release.wait(5)
        return slow(record, as_of)

    monkeypatch.setattr(client.app.state.cds.handler.screener, "evaluate", stuck)  # type: ignore[attr-defined]
    body = {**request_body(prefetch=metformin_patient()), "padding": "x" * (INLINE_MAX_BYTES + 1)}
    try:
        outcome = is_outcome(post(client, PV, body), 503)
        assert outcome["issue"][0]["code"] == "timeout"
        assert not release.is_set()  # answered while the work was still stuck
    finally:
        release.set()


def test_cors_preflight_and_headers_on_every_response() -> None:
    client = make_client(cors_origins=("https://ehr.example.org",))
    preflight = client.options(PV, headers={"Origin": "https://ehr.example.org",
                                            "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://ehr.example.org"
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "Authorization, Content-Type"
    origin = {"Origin": "https://ehr.example.org"}
    ok = post(client, PV, request_body(prefetch=metformin_patient()), headers=origin)
    unauthorized = post(client, PV, request_body(), token=False, headers=origin)
    discovery = client.get("/cds-services", headers={**origin, **ehr().auth(BASE + "/cds-services")})
    for response in (ok, unauthorized, discovery):
        assert response.headers["access-control-allow-origin"] == "https://ehr.example.org"
    other = client.options(PV, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    is_outcome(other, 403)
    assert "access-control-allow-origin" not in post(client, PV, request_body(prefetch=metformin_patient()),
                                                     headers={"Origin": "https://evil.example"}).headers


def feedback_body(card: str = "c-1", outcome: str = "accepted") -> dict[str, Any]:
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-24T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s-1"}]
    else:
        item["overrideReason"] = {"reason": {"system": "https://b12screen.org/fhir/CodeSystem/override-reason",
                                             "code": "patient-declined"}, "userComment": "free text with PHI"}
    return {"feedback": [item]}


def test_feedback_endpoint(tmp_path: Any) -> None:
    log_file = tmp_path / "feedback.ndjson"
    client = make_client(feedback_log=str(log_file))
    card = post(client, PV, request_body(prefetch=metformin_patient())).json()["cards"][0]
    path = PV + "/feedback"
    assert post(client, path, feedback_body(card["uuid"])).status_code == 200
    assert post(client, path, feedback_body(card["uuid"])).status_code == 200  # idempotent
    assert post(client, path, feedback_body(card["uuid"], "overridden")).status_code == 200
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["rules"] == ["MET-2"] and lines[1]["overrideReason"]["code"] == "patient-declined"
    assert "PHI" not in log_file.read_text() and "p1" not in log_file.read_text()
    # the JWT for the service URL is not valid for the feedback URL
    response = client.post(path, json=feedback_body(), headers=ehr().auth(BASE + PV))
    is_outcome(response, 401)
    is_outcome(post(client, "/cds-services/nope/feedback", feedback_body()), 404)


@pytest.mark.parametrize("body", [
    {},
    {"feedback": []},
    {"feedback": [{"outcome": "accepted"}]},
    {"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-11-24T10:00:00Z"}]},
    {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z"}]},
    {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
])
def test_malformed_feedback_is_400(client: TestClient, body: dict[str, Any]) -> None:
    is_outcome(post(client, PV + "/feedback", body), 400)


def test_logs_carry_no_tokens_and_no_patient_data(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prefetch = metformin_patient("secret-patient-42")
    del prefetch["procedures"]
    body = with_server(request_body(pid="secret-patient-42", prefetch=prefetch))
    jwt_token = ehr().token(BASE + PV)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs, status=500)
        client.post(PV, json=body, headers={"Authorization": f"Bearer {jwt_token}"})
        client.post(PV, json=body, headers={"Authorization": f"Bearer {jwt_token}"})  # replay -> 401
        client.post(PV, json=body, headers={"Authorization": "Bearer not-a-jwt"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "status=200" in text and "status=401" in text
    for secret in (jwt_token, TOKEN, "secret-patient-42", "1950-01-01", "metformin"):
        assert secret not in text


def test_every_response_has_no_empty_fields(client: TestClient) -> None:
    """Walk the JSON of a response of every kind the service gives."""
    responses_seen = [
        client.get("/cds-services", headers=ehr().auth(BASE + "/cds-services")),
        client.get("/health"),
        post(client, PV, request_body(prefetch=metformin_patient())),
        post(client, OS, request_body("order-sign", prefetch=metformin_patient())),
        post(client, PV, request_body(prefetch=full_prefetch(b12Labs=None))),
        post(client, PV, request_body()),
        post(client, PV, {"hook": "patient-view"}),
        post(client, PV, request_body(), token=False),
        post(client, "/cds-services/x", request_body()),
        post(client, PV + "/feedback", feedback_body()),
        post(client, PV + "/feedback", {}),
        client.get(PV),
    ]
    for response in responses_seen:
        body = response.json()
        if body != {"cards": []}:
            assert not empty_fields(body), (response.status_code, empty_fields(body))


def test_the_card_flag_is_the_flag_screen_and_batch_produce(client: TestClient) -> None:
    prefetch = metformin_patient()
    card = post(client, PV, request_body(prefetch=prefetch)).json()["cards"][0]
    flag = next(s for s in card["suggestions"] if s["label"] == "Record B12 risk flag")["actions"][0]["resource"]
    resources = [prefetch["patient"], *(e["resource"] for e in prefetch["medicationRequests"]["entry"])]
    [result] = screener().screen(resources, AS_OF)
    expected = flag_json(result)
    assert expected is not None
    del expected["id"]
    assert flag == expected


def test_ready_needs_every_issuers_keys_and_the_startup_line_names_issuers_only() -> None:
    client = make_client()
    assert client.get("/ready").json() == {"status": "ready"}
    state = client.app.state.cds  # type: ignore[attr-defined]
    line = state.startup_line()
    assert line.startswith("b12screen CDS service: issuers ") and "profile default" in line
    assert f"{len(state.handler.screener.rules)} rule(s)" in line and "keys" not in line
    unreachable = ServiceConfig(issuers=(IssuerConfig(iss="https://down.example", jwks_url="https://down.example/j"),),
                                public_base_url=BASE)
    from b12screen.cdshooks.security import JwksCache, JwtVerifier

    def refuse(url: str) -> Any:
        raise OSError("unreachable")

    verifier = JwtVerifier(unreachable, jwks=JwksCache(fetch=refuse))
    with TestClient(create_app(unreachable, screener=screener(), verifier=verifier)) as down:
        response = down.get("/ready")
    assert response.status_code == 503 and response.json()["resourceType"] == "OperationOutcome"


def test_a_call_that_needs_a_fetch_is_parsed_validated_and_planned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call is read on the event loop, and only the fetch and what follows move to the I/O pool: the body
    is not parsed, validated or its prefetch read a second time there."""
    import b12screen.cdshooks.app as app_module
    import b12screen.cdshooks.handler as handler_module
    from b12screen.cdshooks.prefetch import Gatherer

    counts = {"parse": 0, "validate": 0, "plan": 0, "complete": 0}

    def counted(name: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(app_module, "parse_json", counted("parse", app_module.parse_json))
    monkeypatch.setattr(handler_module, "validate", counted("validate", handler_module.validate))
    monkeypatch.setattr(Gatherer, "plan", counted("plan", Gatherer.plan))
    monkeypatch.setattr(Gatherer, "complete", counted("complete", Gatherer.complete))
    prefetch = metformin_patient()
    del prefetch["conditions"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        fhir_routes(rs)
        response = post(make_client(), PV, with_server(request_body(prefetch=prefetch)))
        assert [c.request.path_url.split("?")[0] for c in rs.calls] == ["/r4/Condition"]  # it did need a fetch
    assert response.status_code == 200 and response.json()["cards"]
    assert counts == {"parse": 1, "validate": 1, "plan": 1, "complete": 1}


def test_card_titles_carry_the_parameter_values_in_force() -> None:
    """After ``AGE-75.age=80`` the card names "Age 80 or over", as the Flag and the summary page do."""
    from b12screen.core.config import Config
    from b12screen.testing import make_patient

    older = Screener(config=Config().with_changes(params={"AGE-75": {"age": 80}}),
                     plugin_manager=get_plugin_manager(load_entry_points=False))
    settings: dict[str, Any] = {"issuers": (ehr().issuer(),), "public_base_url": BASE, "fhir_servers": (FHIR,)}
    app = create_app(ServiceConfig(**settings).checked(), screener=older, today=lambda: AS_OF)
    prefetch = {"patient": make_patient("p1", birth_date=f"{AS_OF.year - 85}-01-01"), "medicationRequests": None,
                "conditions": None}
    [card] = post(TestClient(app), PV, request_body(prefetch=prefetch)).json()["cards"]
    assert "Age 80 or over" in card["summary"] + card["detail"]
    assert "Age 75 or over" not in card["summary"] + card["detail"]
