"""``read_patient`` (library, ``b12screen fetch``) and the CDS fallback fetch ask a FHIR server the same
questions; optional data that fails is a named problem, required data that fails raises."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import pytest
import responses
from cdshooks_helpers import metformin_request, searchset

import b12screen
from b12screen import Screener
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.declarations import PATIENT_VIEW
from b12screen.cdshooks.prefetch import FhirAccess, Gatherer
from b12screen.sources.fhirclient import FhirClient, FhirError
from b12screen.sources.fhirqueries import RECORD_PREFETCH
from b12screen.sources.fhirread import is_valid_id, medication_ids_to_read, read_patient

BASE = "https://fhir.example.org/r4"
SEARCHED = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration",
            "Condition", "Procedure", "Observation")


def serve(rs: Any, statements_fail: bool = False, patient: bool = True) -> None:
    """One patient on metformin; the MedicationRequest names its drug by a Medication resource too."""
    if patient:
        rs.add(responses.GET, f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1",
                                                           "birthDate": "1950-01-01"})
    else:
        rs.add(responses.GET, f"{BASE}/Patient/p1", status=404, json={"resourceType": "OperationOutcome"})
    by_reference = {"resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
                    "medicationReference": {"reference": "Medication/met"}, "subject": {"reference": "Patient/p1"},
                    "authoredOn": "2020-01-01"}
    rs.add(responses.GET, f"{BASE}/MedicationRequest", json=searchset(metformin_request("m1", "p1"), by_reference))
    rs.add(responses.GET, f"{BASE}/Medication/met", json={"resourceType": "Medication", "id": "met", "code": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "861007"}]}})
    for kind in SEARCHED[1:]:
        if kind == "MedicationStatement" and statements_fail:
            rs.add(responses.GET, f"{BASE}/{kind}", status=404, json={"resourceType": "OperationOutcome"})
        else:
            rs.add(responses.GET, f"{BASE}/{kind}", json=searchset())


def client() -> FhirClient:
    return FhirClient(BASE, retries=0, sleep=lambda _: None)


def requested() -> list[str]:
    return sorted(call.request.url for call in responses.calls)


@responses.activate
def test_read_patient_reads_every_declaration_and_referenced_medications() -> None:
    serve(responses)
    resources, problems = b12screen.read_patient(client(), "p1", Screener().terminology)
    assert problems == []
    kinds = sorted(r["resourceType"] for r in resources)
    assert kinds == ["Medication", "MedicationRequest", "MedicationRequest", "Patient"]
    paths = [call.request.path_url.split("?")[0] for call in responses.calls]
    assert paths.count("/r4/Observation") == 3 and "/r4/Medication/met" in paths
    assert len(responses.calls) == len(RECORD_PREFETCH) + 1
    observation_codes = [c.request.url for c in responses.calls if "/Observation" in c.request.url]
    assert any("2132-9" in url for url in observation_codes)  # codes come from the value sets
    result = Screener().screen(resources, date(2026, 11, 24))[0]
    assert result.rules == ["MET-2"]


@responses.activate
def test_optional_data_that_fails_is_a_problem_required_data_raises() -> None:
    serve(responses, statements_fail=True)
    resources, problems = read_patient(client(), "p1", Screener().terminology)
    assert len(problems) == 1 and problems[0].startswith("medication statements: ")
    assert {r["resourceType"] for r in resources} == {"Patient", "MedicationRequest", "Medication"}
    responses.reset()
    serve(responses, patient=False)
    with pytest.raises(FhirError, match="Patient p1 not found"):
        read_patient(client(), "p1", Screener().terminology)


@responses.activate
def test_fetch_and_the_cds_fallback_fetch_ask_the_same_questions() -> None:
    serve(responses)
    terminology = Screener().terminology
    read_patient(client(), "p1", terminology)
    by_fetch = requested()
    responses.calls.reset()
    with ThreadPoolExecutor(2) as pool:
        gathered = Gatherer(PATIENT_VIEW, terminology, ServiceConfig(), pool).gather(
            {}, {"patientId": "p1"}, lambda: FhirAccess(client()), server=BASE)
    assert gathered.unavailable == [] and gathered.incomplete == []
    assert requested() == by_fetch
    assert len(by_fetch) == len(RECORD_PREFETCH) + 1


def test_ids_and_medication_references() -> None:
    assert is_valid_id("p-1.a") and not is_valid_id("../x") and not is_valid_id("a/b") and not is_valid_id("")
    data = [{"resourceType": "MedicationRequest", "medicationReference": {"reference": ref}}
            for ref in ("Medication/a", f"{BASE}/Medication/b/_history/2", "#c", "https://other.org/Medication/d",
                        "Medication/a", "Medication/../e")]
    data.append({"resourceType": "Medication", "id": "held"})
    data.append({"resourceType": "MedicationStatement", "medicationReference": {"reference": "Medication/held"}})
    assert medication_ids_to_read(data, BASE) == ["a", "b"]


@responses.activate
def test_referenced_medications_are_read_up_to_the_cap_and_more_is_a_problem() -> None:
    serve(responses)
    orders = [{"resourceType": "MedicationRequest", "id": f"r{i}", "status": "active", "intent": "order",
               "medicationReference": {"reference": f"Medication/x{i}"}, "subject": {"reference": "Patient/p1"},
               "authoredOn": "2020-01-01"} for i in range(3)]
    responses.replace(responses.GET, f"{BASE}/MedicationRequest", json=searchset(*orders))
    for i in range(3):
        responses.add(responses.GET, f"{BASE}/Medication/x{i}", json={"resourceType": "Medication", "id": f"x{i}"})
    resources, problems = read_patient(client(), "p1", Screener().terminology, max_medication_reads=2)
    assert problems == ["referenced Medication resources: incomplete (3 to read, the first 2 read)"]
    assert sorted(r["id"] for r in resources if r["resourceType"] == "Medication") == ["x0", "x1"]
    assert not any(url.endswith("/Medication/x2") for url in requested())
    _, problems = read_patient(client(), "p1", Screener().terminology, max_medication_reads=3)
    assert problems == []
