"""The FHIR queries that read one patient's record: the CDS services' prefetch templates, the CDS fallback
fetch and ``b12screen fetch`` all use these declarations.

Templates keep to the CDS Hooks 2.0 query subset (instance read, type-level search, ``patient=`` with a
context token, token equality, no ``_include``, no FHIRPath). Observation code lists are generated from
the screener's value sets, so a site that adds LOINC codes through a plugin gets them prefetched too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.terminology import LOINC, Terminology

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


PATIENT = "{{context.patientId}}"

#: What the rules read (docs/reference/clinical-rules.md): the same list for both hooks and for ``b12screen fetch``.
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
