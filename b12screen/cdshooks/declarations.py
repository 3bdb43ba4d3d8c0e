"""The CDS services as discovery describes them: the one place both discovery and the handlers read.

Their prefetch templates are the FHIR queries of :mod:`b12screen.sources.fhirqueries`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.terminology import Terminology
from ..sources.fhirqueries import RECORD_PREFETCH, PrefetchDecl

SPEC_VERSION = "2.0"
HOOK_VERSION = "1.0"

#: Per hook: context fields that must be present, and the root-level primitive fields usable as tokens.
HOOK_CONTEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "patient-view": {"required": ("userId", "patientId"), "tokens": ("userId", "patientId", "encounterId")},
    "order-sign": {"required": ("userId", "patientId", "draftOrders"),
                   "tokens": ("userId", "patientId", "encounterId")},
    "order-select": {"required": ("userId", "patientId", "selections", "draftOrders"),
                     "tokens": ("userId", "patientId", "encounterId")},
}


@dataclass(frozen=True)
class ServiceDecl:
    """One CDS service as discovery describes it."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchDecl, ...]
    usage_requirements: str

    def required_context(self) -> tuple[str, ...]:
        return HOOK_CONTEXT[self.hook]["required"]

    def discovery_entry(self, terminology: Terminology) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "usageRequirements": self.usage_requirements,
            "prefetch": {p.key: p.template(terminology) for p in self.prefetch},
            "version": SPEC_VERSION,
            "hookVersion": HOOK_VERSION,
        }


_USAGE = ("Needs prefetch or a reachable, allow-listed fhirServer. Reads Patient, MedicationRequest, "
          "MedicationStatement, MedicationDispense, MedicationAdministration, Condition, Procedure and "
          "Observation (B12 and related labs, diet, symptoms); Patient, MedicationRequest and Condition are required.")

PATIENT_VIEW = ServiceDecl(
    id="b12screen-patient-view",
    hook="patient-view",
    title="Vitamin B12 deficiency risk",
    description="Suggests a vitamin B12 check when the record shows risk (metformin, acid suppression, "
                "gastric or bowel disease or surgery, diet, age, symptoms) and no recent test or treatment.",
    prefetch=RECORD_PREFETCH,
    usage_requirements=_USAGE,
)
ORDER_SIGN = ServiceDecl(
    id="b12screen-order-sign",
    hook="order-sign",
    title="Vitamin B12 deficiency risk at order signing",
    description="Screens the record together with the draft orders: a draft metformin, PPI or H2RA order counts "
                "as active use; a draft B12 test or B12 therapy means no card.",
    prefetch=RECORD_PREFETCH,
    usage_requirements=_USAGE + " Reads draftOrders (MedicationRequest, ServiceRequest) from the context.",
)

ORDER_SELECT = ServiceDecl(
    id="b12screen-order-select",
    hook="order-select",
    title="Vitamin B12 deficiency risk when metformin or acid suppression is selected",
    description="When a selected draft order is metformin, a PPI or an H2RA and the patient meets a rule (with "
                "the new order), one info card with the reason and the latest B12 result on file; a selected "
                "B12 test or B12 therapy means no card.",
    prefetch=RECORD_PREFETCH,
    usage_requirements=_USAGE + " Reads selections and draftOrders (MedicationRequest, ServiceRequest).",
)

SERVICES: tuple[ServiceDecl, ...] = (PATIENT_VIEW, ORDER_SIGN, ORDER_SELECT)


def services_by_id(services: Iterable[ServiceDecl] = SERVICES) -> dict[str, ServiceDecl]:
    return {s.id: s for s in services}


def discovery(terminology: Terminology, services: Iterable[ServiceDecl] = SERVICES) -> dict[str, Any]:
    """The discovery document (``GET /cds-services``)."""
    return {"services": [s.discovery_entry(terminology) for s in services]}
