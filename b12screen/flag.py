"""Build the FHIR R4 Flag of a screening result (interfaces.md, "The Flag")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.flag import Flag

from . import __version__
from .model import Priority
from .outcome import FLAGGED_OUTCOMES, OUTCOME_DISPLAY

if TYPE_CHECKING:
    from .model import Rule
    from .outcome import ScreeningResult

BASE = "https://b12screen.org/fhir"
OUTCOME_SYSTEM = f"{BASE}/CodeSystem/outcome"
RULE_SYSTEM = f"{BASE}/CodeSystem/rule"
IDENTIFIER_SYSTEM = f"{BASE}/Flag/identifier"
REASON_EXTENSION = f"{BASE}/StructureDefinition/flag-reason"
TEST_EXTENSION = f"{BASE}/StructureDefinition/recommended-test"
RULESET_EXTENSION = f"{BASE}/StructureDefinition/ruleset-version"
PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
DETAIL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-detail"
PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"


def flag_identifier(result: ScreeningResult) -> str:
    """Stable identifier: the same patient, outcome, reasons and ruleset version give the same value."""
    blob = "|".join([result.patient, result.outcome, ",".join(result.rules), ",".join(result.modifiers),
                     result.ruleset_version])
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _subject(patient: str) -> dict[str, str]:
    return {"reference": patient}


def _evidence_reference(ref: str) -> dict[str, str]:
    if ("/" in ref and " " not in ref) or ref.startswith("urn:"):
        return {"reference": ref}
    return {"display": ref}


def flag_text(result: ScreeningResult, rules: Mapping[str, Rule]) -> str:
    """The sentence a clinician reads: what to do, why, and which test."""
    test = result.recommended_test
    reasons = "; ".join(f"{result.reasons[r]} [{r}]" for r in result.rules if r in result.reasons)
    head = {
        "suggest-b12-test": "Consider checking vitamin B12",
        "suggest-mma": "Consider a methylmalonic acid (MMA) test: the last B12 result was indeterminate",
        "unactioned-low-b12": "Low vitamin B12 result with no recorded diagnosis or treatment: please review",
        "deficiency-without-treatment": "Vitamin B12 deficiency recorded without B12 treatment: please review",
    }[result.outcome]
    parts = [head]
    if reasons:
        parts.append(f"Reasons: {reasons}")
    if test:
        parts.append(f"Suggested test: {test['display']} (LOINC {test['code']})")
    parts.extend(result.notes)
    parts.append(f"Screened as of {result.as_of.isoformat()} by b12screen {__version__}; not a diagnosis")
    return ". ".join(p.rstrip(".") for p in parts) + "."


def flag_dict(result: ScreeningResult, rules: Mapping[str, Rule]) -> dict[str, Any]:
    """The Flag as FHIR JSON."""
    assert result.priority is not None
    ident = flag_identifier(result)
    priority = Priority(result.priority)
    extensions: list[dict[str, Any]] = [{
        "url": PRIORITY_EXTENSION,
        "valueCodeableConcept": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority.flag_code,
                                            "display": priority.flag_display}]},
    }]
    for ref in result.evidence:
        extensions.append({"url": DETAIL_EXTENSION, "valueReference": _evidence_reference(ref)})
    for rule_id in result.rules:
        rule = rules.get(rule_id)
        coding = {"system": RULE_SYSTEM, "code": rule_id}
        if rule is not None:
            coding["display"] = rule.title
        extensions.append({"url": REASON_EXTENSION, "valueCoding": coding})
    for modifier in result.modifiers:
        extensions.append({"url": REASON_EXTENSION, "valueCoding": {"system": RULE_SYSTEM, "code": modifier}})
    if result.recommended_test:
        extensions.append({"url": TEST_EXTENSION, "valueCoding": dict(result.recommended_test)})
    extensions.append({"url": RULESET_EXTENSION, "valueString": result.ruleset_version})
    return {
        "resourceType": "Flag",
        "id": f"b12-{ident[:32]}",
        "contained": [{
            "resourceType": "Device",
            "id": "b12screen",
            "deviceName": [{"name": "b12screen", "type": "user-friendly-name"}],
            "version": [{"value": __version__}],
        }],
        "extension": extensions,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": ident}],
        "status": "active",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "clinical", "display": "Clinical"}]}],
        "code": {
            "coding": [{"system": OUTCOME_SYSTEM, "code": result.outcome,
                        "display": OUTCOME_DISPLAY[result.outcome]}],
            "text": flag_text(result, rules),
        },
        "subject": _subject(result.patient),
        "period": {"start": result.as_of.isoformat()},
        "author": {"reference": "#b12screen", "display": f"b12screen {__version__}"},
    }


def build_flag(result: ScreeningResult, rules: Mapping[str, Rule]) -> Flag | None:
    """The validated R4B Flag for a flagged outcome, else None."""
    if result.outcome not in FLAGGED_OUTCOMES or result.priority is None:
        return None
    return Flag.model_validate(flag_dict(result, rules))
