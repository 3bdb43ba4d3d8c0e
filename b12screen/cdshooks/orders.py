"""``order-sign``: what the draft orders mean for the screen.

- a draft ServiceRequest for a B12 status test (value sets ``b12-total``, ``b12-active``, ``mma``) or a
  draft MedicationRequest for B12 therapy (``b12-parenteral``, ``b12-ingredient``, ``b12-oral``)
  **suppresses** the card: the clinician is already acting on B12;
- every other draft MedicationRequest (metformin, PPI, H2RA, ...) is screened as active use at the as-of
  date: a copy with ``status: active``, ``authoredOn`` defaulting to the as-of date, ``intent`` to
  ``order`` and ``subject`` to the patient (the sandbox omits ``intent``; drafts rarely carry dates).

Codes are matched with the screener's terminology, never hard-coded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..core.terminology import Terminology
from ..sources import read_value

B12_TEST_SETS = frozenset({"b12-total", "b12-active", "mma"})
B12_THERAPY_SETS = frozenset({"b12-parenteral", "b12-ingredient", "b12-oral"})


@dataclass
class DraftOrders:
    """The drafts' effect: a suppression reason, or resources to screen with the record."""

    suppress: str | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)


def _medication_concepts(resource: Mapping[str, Any], terminology: Terminology,
                         medications: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    concepts = terminology.match_concept(resource.get("medicationCodeableConcept"))
    reference = resource.get("medicationReference")
    if isinstance(reference, Mapping):
        target = reference.get("reference")
        medication = None
        if isinstance(target, str) and target.startswith("#"):
            medication = next((c for c in resource.get("contained") or []
                               if isinstance(c, Mapping) and c.get("id") == target[1:]), None)
        elif isinstance(target, str):
            medication = medications.get(target)
        if isinstance(medication, Mapping):
            concepts |= terminology.match_concept(medication.get("code"))
            for ingredient in medication.get("ingredient") or []:
                if isinstance(ingredient, Mapping):
                    concepts |= terminology.match_concept(ingredient.get("itemCodeableConcept"))
        if not concepts:
            concepts |= terminology.match_text(reference.get("display"))
    return concepts


def analyse_drafts(draft_orders: Any, terminology: Terminology, patient_id: str, as_of: date) -> DraftOrders:
    """Read the ``draftOrders`` Bundle (any or no ``type``) of an order-sign request."""
    out = DraftOrders()
    resources = [e.resource for e in read_value(draft_orders, "draftOrders") if hasattr(e, "resource")]
    medications = {f"Medication/{r.get('id')}": r for r in resources
                   if isinstance(r, Mapping) and r.get("resourceType") == "Medication"}
    for index, resource in enumerate(resources):
        if not isinstance(resource, Mapping):
            continue
        kind = resource.get("resourceType")
        if kind == "ServiceRequest":
            if terminology.match_concept(resource.get("code")) & B12_TEST_SETS:
                return DraftOrders(suppress="a B12 status test is among the draft orders")
        elif kind == "MedicationRequest":
            concepts = _medication_concepts(resource, terminology, medications)
            if concepts & B12_THERAPY_SETS:
                return DraftOrders(suppress="B12 therapy is among the draft orders")
            out.resources.append(_as_active(resource, index, patient_id, as_of))
        elif kind == "Medication":
            out.resources.append(dict(resource))
    return out


def _as_active(resource: Mapping[str, Any], index: int, patient_id: str, as_of: date) -> dict[str, Any]:
    copy = dict(resource)
    copy["status"] = "active"
    copy.setdefault("intent", "order")
    copy.setdefault("authoredOn", as_of.isoformat())
    if not isinstance(copy.get("id"), str) or not copy["id"]:
        copy["id"] = f"draft-{index + 1}"
    subject = copy.get("subject")
    if not isinstance(subject, Mapping) or not isinstance(subject.get("reference"), str):
        copy["subject"] = {"reference": f"Patient/{patient_id}"}
    return copy
