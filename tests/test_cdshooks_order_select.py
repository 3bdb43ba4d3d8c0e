"""``b12screen-order-select``: fixture requests shaped as EHRs send them (a ``collection`` Bundle of
draft orders, ``selections`` naming the order being picked, RxNorm/LOINC codes, no dates on drafts)."""

from __future__ import annotations

import warnings
from typing import Any

from cdshooks_helpers import AS_OF, full_prefetch, metformin_request, searchset

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.plugins import get_plugin_manager

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

OSEL = "/cds-services/b12screen-order-select"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def client() -> TestClient:
    app = create_app(ServiceConfig(insecure_no_auth=True),
                     screener=Screener(plugin_manager=get_plugin_manager(load_entry_points=False)),
                     today=lambda: AS_OF)
    return TestClient(app)


def draft_medication(rid: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "proposal",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": code, "display": display}],
                                          "text": display},
            "subject": {"reference": "Patient/p1"}}


def draft_b12_test(rid: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": "Patient/p1"}}


def b12_result(value: float, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "b12-old", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "pg/mL", "system": "http://unitsofmeasure.org",
                              "code": "pg/mL"}}


def body(selections: list[str], *drafts: dict[str, Any], **prefetch: Any) -> dict[str, Any]:
    return {"hook": "order-select", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "PractitionerRole/123", "patientId": "p1", "encounterId": "e1",
                        "selections": selections,
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": d} for d in drafts]}},
            "prefetch": full_prefetch(**prefetch)}


OMEPRAZOLE = draft_medication("mr-ppi", "7646", "omeprazole")
METFORMIN = draft_medication("mr-met", "6809", "metformin")


def test_selecting_a_ppi_for_a_patient_on_metformin_gives_one_concise_info_card() -> None:
    response = client().post(OSEL, json=body(
        ["MedicationRequest/mr-ppi"], OMEPRAZOLE,
        medicationRequests=searchset(metformin_request("m1", "p1")),
        b12Labs=searchset(b12_result(310, "2018-03-02"))))
    assert response.status_code == 200, response.text
    [card] = response.json()["cards"]
    assert card["indicator"] == "info"
    assert card["summary"] == "Selected a proton-pump inhibitor: consider a vitamin B12 check"
    assert card["detail"].startswith("Why: ") and "\n\nLatest B12 on file: 310 pg/mL on 2018-03-02." in card["detail"]


def test_selecting_metformin_that_itself_meets_a_rule_gives_a_card_without_a_result_on_file() -> None:
    [card] = client().post(OSEL, json=body(["MedicationRequest/mr-met"], METFORMIN)).json()["cards"]
    assert card["summary"].startswith("Selected metformin") and card["detail"].endswith("No B12 result on file.")


def test_only_selected_drafts_count() -> None:
    lisinopril = draft_medication("mr-ace", "29046", "lisinopril")
    response = client().post(OSEL, json=body(["MedicationRequest/mr-ace"], lisinopril, METFORMIN))
    assert response.json() == {"cards": []}


def test_selecting_a_b12_test_or_b12_therapy_gives_no_card() -> None:
    on_metformin = {"medicationRequests": searchset(metformin_request("m1", "p1"))}
    test = client().post(OSEL, json=body(["ServiceRequest/sr-b12", "MedicationRequest/mr-ppi"],
                                         draft_b12_test("sr-b12"), OMEPRAZOLE, **on_metformin))
    assert test.json() == {"cards": []}
    cyanocobalamin = draft_medication("mr-b12", "3055", "cyanocobalamin")
    therapy = client().post(OSEL, json=body(["MedicationRequest/mr-b12", "MedicationRequest/mr-ppi"],
                                            cyanocobalamin, OMEPRAZOLE, **on_metformin))
    assert therapy.json() == {"cards": []}


def test_selections_are_required_and_the_service_is_discovered() -> None:
    bad = body(["MedicationRequest/mr-ppi"], OMEPRAZOLE)
    del bad["context"]["selections"]
    response = client().post(OSEL, json=bad)
    assert response.status_code == 400 and "context.selections" in response.text
    services = {s["id"]: s for s in client().get("/cds-services").json()["services"]}
    assert services["b12screen-order-select"]["hook"] == "order-select"
    assert services["b12screen-order-select"]["prefetch"] == services["b12screen-order-sign"]["prefetch"]
