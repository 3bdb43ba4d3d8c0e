"""order-sign: the record plus the draft orders."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from cdshooks_helpers import AS_OF, RX, full_prefetch, metformin_request, searchset

from b12screen import Screener
from b12screen.cdshooks.orders import analyse_drafts
from b12screen.plugins import get_plugin_manager


@cache
def screener() -> Screener:
    return Screener(plugin_manager=get_plugin_manager(load_entry_points=False))


def drafts(*resources: dict[str, Any], bundle_type: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    if bundle_type:
        bundle["type"] = bundle_type
    return bundle


def service_request(code: str, system: str = "http://loinc.org") -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
            "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": "Patient/p1"}}


def medication_request(concept: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "MedicationRequest", "status": "draft",
                                "subject": {"reference": "Patient/p1"}, **extra}
    if concept is not None:
        resource["medicationCodeableConcept"] = concept
    return resource


def analyse(bundle: dict[str, Any]) -> Any:
    return analyse_drafts(bundle, screener().terminology, "p1", AS_OF)


@pytest.mark.parametrize("code", ["2132-9", "14685-2", "72160-5", "13964-2"])
def test_a_draft_b12_status_test_suppresses(code: str) -> None:
    assert analyse(drafts(service_request(code))).suppress


@pytest.mark.parametrize("concept", [
    {"coding": [{"system": RX, "code": "317106"}]},
    {"coding": [{"system": RX, "code": "11248", "display": "cyanocobalamin"}]},
    {"text": "Hydroxocobalamin injection 1 mg/ml"},
    {"text": "oral vitamin B12 1000 microgram tablet"},
])
def test_a_draft_b12_therapy_suppresses(concept: dict[str, Any]) -> None:
    assert analyse(drafts(medication_request(concept), bundle_type="collection")).suppress


def test_b12_therapy_through_a_contained_medication_suppresses() -> None:
    contained = {"resourceType": "Medication", "id": "m", "code": {"coding": [{"system": RX, "code": "309594"}]}}
    draft = medication_request(None, contained=[contained], medicationReference={"reference": "#m"})
    assert analyse(drafts(draft)).suppress


def test_other_drafts_become_active_use_at_the_as_of_date() -> None:
    out = analyse(drafts(medication_request({"coding": [{"system": RX, "code": "7646"}]}),
                         service_request("718-7")))
    assert out.suppress is None
    [copy] = out.resources
    assert copy["status"] == "active" and copy["intent"] == "order"
    assert copy["authoredOn"] == AS_OF.isoformat() and copy["id"] == "draft-1"


def call(hook_drafts: dict[str, Any], prefetch: dict[str, Any]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from cdshooks_helpers import request_body

    from b12screen.cdshooks.config import ServiceConfig
    from b12screen.cdshooks.declarations import ORDER_SIGN
    from b12screen.cdshooks.handler import CardRegistry, HookHandler
    from b12screen.cdshooks.security import ANONYMOUS

    with ThreadPoolExecutor(2) as pool:
        handler = HookHandler(ServiceConfig(insecure_no_auth=True), screener(), lambda: AS_OF, pool, CardRegistry())
        body = request_body("order-sign", prefetch=prefetch, draft_orders=hook_drafts)
        return handler.call(ORDER_SIGN, body, ANONYMOUS, float("inf")).body


def _flag_of(card: dict) -> dict:
    """The Flag a card's "Record B12 risk flag" suggestion would create (its extensions name rules and evidence)."""
    return card["suggestions"][-1]["actions"][0]["resource"]


def _named(card: dict, url_end: str) -> set[str]:
    found = set()
    for ext in _flag_of(card)["extension"]:
        if ext["url"].endswith(url_end):
            found.add(ext.get("valueCoding", {}).get("code") or ext.get("valueReference", {}).get("reference"))
    return found


def test_a_draft_metformin_renewal_contributes() -> None:
    old = metformin_request("old", "p1", authored="2020-01-01", status="completed")
    prefetch = full_prefetch(birth="1955-01-01", medicationRequests=searchset(old))
    assert call(drafts(), prefetch) == {"cards": []}
    renewal = metformin_request("draft", "p1", status="draft")
    del renewal["authoredOn"], renewal["intent"]
    [card] = call(drafts(renewal), prefetch)["cards"]
    assert "MET-2" in _named(card, "flag-reason") and "MedicationRequest/draft" in _named(card, "flag-detail")


def test_a_draft_ppi_adds_a_risk_factor() -> None:
    metformin = metformin_request("m1", "p1", authored="2026-01-01")
    prefetch = full_prefetch(birth="1970-01-01", medicationRequests=searchset(metformin))
    [card] = call(drafts(), prefetch)["cards"]
    assert _named(card, "flag-reason") == {"MET-1"}
    ppi = medication_request({"coding": [{"system": RX, "code": "7646", "display": "omeprazole"}]})
    [card] = call(drafts(ppi), prefetch)["cards"]
    assert "MET-2" in _named(card, "flag-reason") and "active PPI or H2RA" in card["detail"]


def test_a_draft_b12_test_means_no_card_for_a_patient_at_risk() -> None:
    prefetch = full_prefetch(medicationRequests=searchset(metformin_request("m1", "p1")))
    assert call(drafts(), prefetch)["cards"]
    assert call(drafts(service_request("2132-9")), prefetch) == {"cards": []}
