"""The services and their prefetch declarations: the one place both discovery and the handlers read.

Templates keep to the CDS Hooks 2.0 query subset (instance read, type-level search, ``patient=`` with a
context token, token equality, no ``_include``, no FHIRPath). Observation code lists are generated from
the screener's value sets, so a site that adds LOINC codes through a plugin gets them prefetched too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.terminology import LOINC, Terminology

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
TOKEN_RE = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


@dataclass(frozen=True)
class Codes:
    """A token parameter value: every ``system|code`` of the named value sets in ``system``."""

    value_sets: tuple[str, ...]
    system: str = LOINC

    def render(self, terminology: Terminology) -> str:
        codes: set[str] = set()
        for vs_id in self.value_sets:
            info = terminology.sets.get(vs_id)
            if info is not None:
                codes |= info.codes.get(self.system, set())
        return ",".join(f"{self.system}|{c}" for c in sorted(codes))


ParamValue = str | Codes


@dataclass(frozen=True)
class PrefetchDecl:
    """One prefetch key: the query it stands for and whether the screen can run without it."""

    key: str
    resource_type: str
    params: tuple[tuple[str, ParamValue], ...] = ()
    read_id: str | None = None  # a token: makes this an instance read (``Patient/{{context.patientId}}``)
    required: bool = False
    label: str = ""  # what the data is, for "not available" notes

    def parts(self, terminology: Terminology) -> tuple[str, list[tuple[str, str]]]:
        """(path, [(name, value)]) with tokens still in place."""
        if self.read_id is not None:
            return f"{self.resource_type}/{self.read_id}", []
        return self.resource_type, [
            (name, value.render(terminology) if isinstance(value, Codes) else value) for name, value in self.params
        ]

    def template(self, terminology: Terminology) -> str:
        path, params = self.parts(terminology)
        if not params:
            return path
        return path + "?" + "&".join(f"{name}={value}" for name, value in params)

    def tokens(self, terminology: Terminology) -> list[str]:
        return TOKEN_RE.findall(self.template(terminology))

    @property
    def is_read(self) -> bool:
        return self.read_id is not None


@dataclass(frozen=True)
class ServiceDecl:
    """One CDS service as discovery describes it."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchDecl, ...]
    usage_requirements: str

    def prefetch_key(self, key: str) -> PrefetchDecl:
        for decl in self.prefetch:
            if decl.key == key:
                return decl
        raise KeyError(key)

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


PATIENT = "{{context.patientId}}"

#: What the rules read (docs/clinical-rules.md): the same list for both hooks and for ``b12screen fetch``.
RECORD_PREFETCH: tuple[PrefetchDecl, ...] = (
    PrefetchDecl("patient", "Patient", read_id=PATIENT, required=True, label="the Patient (age, deceased)"),
    PrefetchDecl("medicationRequests", "MedicationRequest", (("patient", PATIENT),), required=True,
                 label="medication orders"),
    PrefetchDecl("medicationStatements", "MedicationStatement", (("patient", PATIENT),),
                 label="medication statements"),
    PrefetchDecl("medicationDispenses", "MedicationDispense", (("patient", PATIENT),), label="dispensed medication"),
    PrefetchDecl("medicationAdministrations", "MedicationAdministration", (("patient", PATIENT),),
                 label="administered medication (e.g. B12 injections)"),
    PrefetchDecl("conditions", "Condition", (("patient", PATIENT),), required=True, label="conditions"),
    PrefetchDecl("procedures", "Procedure", (("patient", PATIENT),), label="procedures (surgery)"),
    PrefetchDecl("b12Labs", "Observation", (("patient", PATIENT), ("code", Codes(("b12-total", "b12-active", "mma")))),
                 label="B12, holotranscobalamin and MMA results"),
    PrefetchDecl("otherLabs", "Observation", (
        ("patient", PATIENT),
        ("code", Codes(("haemoglobin", "mcv", "egfr", "homocysteine", "pregnancy-status", "breastfeeding-status"))),
    ), label="haemoglobin, MCV, eGFR and homocysteine results"),
    PrefetchDecl("otherObservations", "Observation", (
        ("patient", PATIENT), ("category", "social-history,exam,survey"),
    ), label="diet, symptom and social-history observations"),
)

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


def fill_tokens(text: str, context: Mapping[str, Any]) -> str:
    """Replace ``{{context.x}}`` tokens with (already validated) context values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name.startswith("context."):
            raise KeyError(name)
        found = context.get(name[len("context."):])
        if not isinstance(found, str):
            raise KeyError(name)
        return found

    return TOKEN_RE.sub(value, text)
