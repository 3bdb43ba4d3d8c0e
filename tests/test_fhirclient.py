"""The FHIR REST client and ``b12screen fetch``, against FHIR server behaviour and faults played by
``responses``: timeouts, 429 with Retry-After, 500, malformed JSON, paging loops, cross-host redirects,
SMART Backend Services, conditional create."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import jwt
import pytest
import requests
import responses
from cdshooks_helpers import metformin_request, searchset
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from b12screen.cli import cli
from b12screen.sources.fhirclient import (
    ASSERTION_TYPE,
    BearerToken,
    FhirClient,
    FhirError,
    SmartBackendAuth,
    retry_after_seconds,
)

BASE = "https://fhir.example.org/r4"
TOKEN = "s3cret-token"


def client(**kw: Any) -> tuple[FhirClient, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("auth", BearerToken(TOKEN))
    return FhirClient(BASE, sleep=sleeps.append, **kw), sleeps


@responses.activate
def test_read_sends_the_token_and_handles_404() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    responses.add(responses.GET, f"{BASE}/Patient/none", status=404, json={"resourceType": "OperationOutcome"})
    fhir, _ = client()
    assert fhir.read("Patient", "p1") == {"resourceType": "Patient", "id": "p1"}
    assert fhir.read("Patient", "none") is None
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert responses.calls[0].request.headers["Accept"] == "application/fhir+json"


@responses.activate
def test_search_follows_next_links() -> None:
    responses.add(responses.GET, f"{BASE}/MedicationRequest",
                  json=searchset(metformin_request("a", "p1"), next_url=f"{BASE}?_getpages=x&p=2"))
    responses.add(responses.GET, BASE, json=searchset(metformin_request("b", "p1"), next_url="MedicationRequest?p=3"))
    responses.add(responses.GET, f"{BASE}/MedicationRequest", json=searchset(metformin_request("c", "p1")))
    result = client()[0].search("MedicationRequest", {"patient": "p1"})
    assert [r["id"] for r in result.resources] == ["a", "b", "c"]
    assert result.complete and result.pages == 3
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in responses.calls)


@responses.activate
def test_a_paging_loop_is_stopped() -> None:
    loop = f"{BASE}/Condition?patient=p1&page=2"
    responses.add(responses.GET, f"{BASE}/Condition", json=searchset({"resourceType": "Condition", "id": "x"},
                                                                   next_url=loop))
    result = client()[0].search("Condition", {"patient": "p1"})
    assert not result.complete and result.reason == "paging loop"
    assert len(responses.calls) == 2


@responses.activate
def test_page_and_resource_limits() -> None:
    counter = iter(range(1000))

    def endless(request: Any) -> tuple[int, dict[str, str], str]:
        n = next(counter)
        page = searchset({"resourceType": "Condition", "id": f"c{n}"}, next_url=f"{BASE}/Condition?page={n + 1}")
        return 200, {}, json.dumps(page)

    responses.add_callback(responses.GET, re.compile(f"{re.escape(BASE)}/Condition.*"), callback=endless)
    result = client(max_pages=5)[0].search("Condition", {"patient": "p1"})
    assert not result.complete and result.reason == "page limit reached" and result.pages == 5
    result = client(max_resources=2)[0].search("Condition", {"patient": "p1"})
    assert not result.complete and len(result.resources) == 2


@responses.activate
def test_429_honours_retry_after_seconds_and_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "7"})
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=503, headers={"Retry-After": later})
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    fhir, sleeps = client()
    assert fhir.read("Patient", "p1") is not None
    assert sleeps[0] == 7 and 15 <= sleeps[1] <= 20


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(past) == 0


@responses.activate
def test_5xx_backs_off_exponentially_then_gives_up() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=500)
    fhir, sleeps = client(retries=3, backoff=0.5)
    with pytest.raises(FhirError, match="HTTP 500"):
        fhir.read("Patient", "p1")
    assert sleeps == [0.5, 1.0, 2.0] and len(responses.calls) == 4


@responses.activate
def test_retry_after_is_clamped() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "86400"})
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    fhir, sleeps = client(max_retry_after=30)
    fhir.read("Patient", "p1")
    assert sleeps == [30]


@responses.activate
def test_timeouts_are_retried() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", body=requests.Timeout("read timed out"))
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    fhir, sleeps = client()
    assert fhir.read("Patient", "p1") is not None and len(sleeps) == 1
    responses.add(responses.GET, f"{BASE}/Patient/p2", body=requests.ConnectionError("refused"))
    with pytest.raises(FhirError, match="connection failed"):
        client(retries=1)[0].read("Patient", "p2")


@responses.activate
def test_the_deadline_bounds_retries() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "5"})
    now = [0.0]
    fhir = FhirClient(BASE, deadline=2.0, clock=lambda: now[0], sleep=lambda s: None)
    with pytest.raises(FhirError):
        fhir.read("Patient", "p1")
    assert len(responses.calls) == 1


@responses.activate
def test_malformed_json_is_an_error() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", body=b"{oops", content_type="application/fhir+json")
    with pytest.raises(FhirError, match="malformed JSON"):
        client()[0].read("Patient", "p1")
    responses.add(responses.GET, f"{BASE}/Condition", json={"resourceType": "OperationOutcome"})
    with pytest.raises(FhirError, match="Bundle"):
        client()[0].search("Condition", {})


@responses.activate
def test_a_redirect_to_another_host_never_gets_the_token() -> None:
    responses.add(responses.GET, f"{BASE}/Observation", status=307,
                  headers={"Location": "https://cdn.example.net/files/obs.json"})
    responses.add(responses.GET, "https://cdn.example.net/files/obs.json", json=searchset())
    responses.add(responses.GET, f"{BASE}/Condition", status=302, headers={"Location": f"{BASE}/Condition2"})
    responses.add(responses.GET, f"{BASE}/Condition2", json=searchset())
    fhir, _ = client(allowed_bases=(BASE, "https://cdn.example.net/files"))  # off the base only when allowed
    fhir.search("Observation", {"patient": "p1"})
    fhir.search("Condition", {"patient": "p1"})
    first, moved, _same, same_moved = responses.calls
    assert first.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in moved.request.headers
    assert same_moved.request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_a_redirect_must_stay_https_and_within_the_allowed_bases() -> None:
    responses.add(responses.GET, f"{BASE}/Observation", status=302,
                  headers={"Location": "http://cdn.example.net/obs.json"})
    with pytest.raises(FhirError, match="not https"):
        client()[0].search("Observation", {"patient": "p1"})
    responses.add(responses.GET, f"{BASE}/Condition", status=302,
                  headers={"Location": "https://cdn.example.net/Condition"})
    fhir, _ = client()
    fhir.allowed_bases = (BASE, "https://cdn.example.net/other")
    with pytest.raises(FhirError, match="outside the FHIR server"):
        fhir.search("Condition", {"patient": "p1"})
    assert [c.request.url.split("?")[0] for c in responses.calls] == [f"{BASE}/Observation", f"{BASE}/Condition"]


@responses.activate
def test_next_links_to_another_host_are_not_followed() -> None:
    responses.add(responses.GET, f"{BASE}/Condition", json=searchset(next_url="https://evil.example/steal?page=2"))
    result = client()[0].search("Condition", {})
    assert not result.complete and len(responses.calls) == 1


def test_plain_http_only_on_loopback() -> None:
    with pytest.raises(FhirError):
        FhirClient("http://fhir.example.org/r4")
    FhirClient("http://127.0.0.1:8080/fhir")
    with pytest.raises(FhirError):
        FhirClient("http://127.0.0.1:8080/fhir", allow_http_loopback=False)


@responses.activate
def test_an_expired_bearer_token_is_not_sent() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    now = [0.0]
    auth = BearerToken(TOKEN, expires_in=10, clock=lambda: now[0])
    now[0] = 11
    FhirClient(BASE, auth=auth).read("Patient", "p1")
    assert "Authorization" not in responses.calls[0].request.headers
    assert "s3cret" not in repr(auth)


# -- SMART Backend Services ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@responses.activate
def test_smart_backend_services_token(backend_key: ec.EllipticCurvePrivateKey) -> None:
    token_url = "https://auth.example.org/token"
    responses.add(responses.GET, f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": token_url})
    issued = iter(["tok-1", "tok-2", "tok-3"])

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        form = dict(x.split("=", 1) for x in request.body.split("&"))
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == requests.utils.quote(ASSERTION_TYPE, safe="")
        assertion = jwt.decode(form["client_assertion"], backend_key.public_key(), algorithms=["ES384"],
                               audience=token_url, leeway=600)
        assert assertion["iss"] == assertion["sub"] == "b12-client"
        assert assertion["exp"] - assertion["iat"] <= 300 and assertion["jti"]
        assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"
        return 200, {}, json.dumps({"access_token": next(issued), "token_type": "bearer", "expires_in": 300})

    responses.add_callback(responses.POST, token_url, callback=token_endpoint)
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    now = [time.time()]
    auth = SmartBackendAuth("b12-client", backend_key, algorithm="ES384", kid="k1", clock=lambda: now[0])
    fhir = FhirClient(BASE, auth=auth, sleep=lambda s: None)
    fhir.read("Patient", "p1")
    fhir.read("Patient", "p1")
    reads = [c for c in responses.calls if c.request.url.endswith("/Patient/p1")]
    assert [c.request.headers["Authorization"] for c in reads] == ["Bearer tok-1", "Bearer tok-1"]
    now[0] += 280  # within the refresh margin: re-authenticate
    fhir.read("Patient", "p1")
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer tok-2"
    smart_config = responses.calls[0].request
    assert "Authorization" not in smart_config.headers


@responses.activate
def test_a_401_renews_the_backend_token_once(backend_key: ec.EllipticCurvePrivateKey) -> None:
    token_url = "https://auth.example.org/token"
    responses.add(responses.POST, token_url, json={"access_token": "old", "expires_in": 300})
    responses.add(responses.POST, token_url, json={"access_token": "new", "expires_in": 300})
    responses.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    responses.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    auth = SmartBackendAuth("c", backend_key, algorithm="ES384", token_url=token_url)
    assert FhirClient(BASE, auth=auth).read("Patient", "p1") is not None
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer new"


# -- conditional create and the fetch command ------------------------------------------------------


class FakeServer:
    """A FHIR server holding one patient on metformin, with conditional create for Flags."""

    def __init__(self) -> None:
        self.flags: list[dict[str, Any]] = []

    def install(self, rs: Any) -> None:
        rs.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1",
                                                           "birthDate": "1950-01-01"})
        rs.add(responses.GET, f"{BASE}/MedicationRequest", json=searchset(metformin_request("m1", "p1")))
        rs.add(responses.GET, f"{BASE}/MedicationStatement", status=404, json={"resourceType": "OperationOutcome"})
        for kind in ("MedicationDispense", "MedicationAdministration", "Condition", "Procedure", "Observation"):
            rs.add(responses.GET, f"{BASE}/{kind}", json=searchset())
        rs.add_callback(responses.POST, f"{BASE}/Flag", callback=self.create)
        rs.add_callback(responses.GET, f"{BASE}/Flag", callback=lambda request: (
            200, {}, json.dumps(searchset(*self.flags))))

    def create(self, request: Any) -> tuple[int, dict[str, str], str]:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        flag = json.loads(request.body)
        assert "id" not in flag
        condition = request.headers["If-None-Exist"]
        system, value = condition.removeprefix("identifier=").split("|")
        if any(i["system"] == system and i["value"] == value for f in self.flags for i in f["identifier"]):
            return 200, {}, ""
        self.flags.append({**flag, "id": str(len(self.flags) + 1), "meta": {"versionId": "1"}})
        return 201, {"Location": f"{BASE}/Flag/{len(self.flags)}/_history/1"}, ""


@responses.activate
def test_conditional_create_is_idempotent() -> None:
    server = FakeServer()
    server.install(responses)
    fhir, _ = client()
    flag = {"resourceType": "Flag", "id": "x", "identifier": [{"system": "s", "value": "v"}]}
    first = fhir.create(flag, if_none_exist="identifier=s|v")
    second = fhir.create(flag, if_none_exist="identifier=s|v")
    assert first.created and first.status == 201 and first.location
    assert not second.created and second.status == 200
    assert len(server.flags) == 1


@responses.activate
def test_conditional_create_with_several_matches_is_an_error() -> None:
    responses.add(responses.POST, f"{BASE}/Flag", status=412)
    with pytest.raises(FhirError, match="several"):
        client()[0].create({"resourceType": "Flag"}, if_none_exist="identifier=s|v")


def run_fetch(*args: str, token: str | None = TOKEN) -> Any:
    env = {"B12SCREEN_FHIR_TOKEN": token} if token else {}
    return CliRunner().invoke(cli, ["fetch", "--fhir-server", BASE, "--as-of", "2026-11-24", *args], env=env)


@responses.activate
def test_fetch_screens_and_writes_back_once() -> None:
    server = FakeServer()
    server.install(responses)
    first = run_fetch("--patient", "p1", "--write-back")
    assert first.exit_code == 1, first.output  # MedicationStatement unavailable: partial
    report = json.loads(first.stdout)
    assert report[0]["outcome"] == "suggest-b12-test" and report[0]["rules"] == ["MET-2"]
    assert "Flag created (HTTP 201)" in first.stderr
    second = run_fetch("--patient", "p1", "--write-back", "--format", "ndjson")
    assert "write-back: Flag/1 already says this; not written again" in second.stderr
    assert len(server.flags) == 1
    assert json.loads(second.stdout)["resourceType"] == "Flag"
    assert TOKEN not in first.output + second.output
    searches = [c.request for c in responses.calls if c.request.method == "GET"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in searches)
    assert any("code=http://loinc.org%7C13776-0" in r.url for r in searches)


@responses.activate
def test_fetch_unknown_patient_and_bad_options() -> None:
    responses.add(responses.GET, f"{BASE}/Patient/nobody", status=404)
    result = run_fetch("--patient", "nobody")
    assert result.exit_code == 2 and "not found" in result.stderr
    assert run_fetch("--patient", "../x").exit_code == 2
    assert run_fetch("--patient", "p1", "--client-id", "c").exit_code == 2


@responses.activate
def test_fetch_with_smart_backend_services(tmp_path: Any, backend_key: ec.EllipticCurvePrivateKey) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(backend_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    FakeServer().install(responses)
    responses.add(responses.POST, "https://auth.example.org/token", json={"access_token": TOKEN, "expires_in": 300})
    result = run_fetch("--patient", "p1", "--client-id", "c", "--private-key", str(key_file), "--alg", "ES384",
                       "--token-url", "https://auth.example.org/token", token=None)
    assert result.exit_code == 1, result.output
    scope = next(c.request.body for c in responses.calls if c.request.method == "POST")
    assert "system%2FMedicationRequest.read" in scope
