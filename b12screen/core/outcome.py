"""Outcome codes, recommended tests and the result of screening one patient."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

SUGGEST_B12_TEST = "suggest-b12-test"
SUGGEST_MMA = "suggest-mma"
UNACTIONED_LOW_B12 = "unactioned-low-b12"
DEFICIENCY_WITHOUT_TREATMENT = "deficiency-without-treatment"
NO_SUGGESTION = "no-suggestion"
SUPPRESSED = "suppressed"
NOT_EVALUATED = "not-evaluated"

OUTCOME_DISPLAY = {
    SUGGEST_B12_TEST: "Vitamin B12 test suggested",
    SUGGEST_MMA: "Methylmalonic acid test suggested (indeterminate B12)",
    UNACTIONED_LOW_B12: "Low vitamin B12 result without diagnosis or treatment",
    DEFICIENCY_WITHOUT_TREATMENT: "Vitamin B12 deficiency without recorded treatment",
    NO_SUGGESTION: "No B12 check suggested",
    SUPPRESSED: "B12 check not needed (recent test, treatment or diagnosis)",
    NOT_EVALUATED: "Not evaluated",
}
OUTCOMES = tuple(OUTCOME_DISPLAY)
#: What a suggestion of homocysteine (N2O-1) is called where the clinician reads it
#: (docs/reference/clinical-rules.md 7.2).
HOMOCYSTEINE_OR_MMA = "Homocysteine or MMA test suggested"
#: Outcomes that produce a FHIR Flag (docs/reference/clinical-rules.md section 4).
FLAGGED_OUTCOMES = frozenset({SUGGEST_B12_TEST, SUGGEST_MMA, UNACTIONED_LOW_B12, DEFICIENCY_WITHOUT_TREATMENT})

LOINC = "http://loinc.org"
#: Recommended tests (LOINC), docs/reference/clinical-rules.md section 4 and docs/reference/terminology.md.
TESTS: dict[str, dict[str, str]] = {
    "total-b12": {"system": LOINC, "code": "2132-9",
                  "display": "Cobalamin (Vitamin B12) [Mass/volume] in Serum or Plasma"},
    "active-b12": {"system": LOINC, "code": "72160-5",
                   "display": "Holo-transcobalamin II [Moles/volume] in Serum"},
    "mma": {"system": LOINC, "code": "13964-2", "display": "Methylmalonate [Moles/volume] in Serum or Plasma"},
    "homocysteine": {"system": LOINC, "code": "13965-9",
                     "display": "Homocysteine [Moles/volume] in Serum or Plasma"},
}

def outcome_display(outcome: str, test: dict[str, str] | None) -> str:
    """The outcome as the clinician reads it, naming the test actually suggested (never "B12 test suggested"
    when the test is homocysteine or MMA)."""
    if outcome == SUGGEST_B12_TEST and test and test.get("code") == TESTS["homocysteine"]["code"]:
        return HOMOCYSTEINE_OR_MMA
    return OUTCOME_DISPLAY[outcome]


@dataclass
class ScreeningResult:
    """The outcome for one patient, with everything needed to explain it."""

    patient: str
    outcome: str
    priority: str | None
    rules: list[str]
    triggered: list[str]  # every rule whose trigger was met (the report's "risk_factors")
    modifiers: list[str]
    recommended_test: dict[str, str] | None
    evidence: list[str]
    as_of: date
    profile: str
    ruleset_version: str
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rule_errors: list[dict[str, str]] = field(default_factory=list)
    #: Titles of the rules in ``rules`` (the Flag names them); filled by the engine.
    rule_titles: dict[str, str] = field(default_factory=dict)
    #: The latest banded B12 result on file (value, unit, date, band), or None.
    latest_b12: dict[str, Any] | None = None
    #: The B12, MMA and homocysteine results among the evidence, as read (section 7 point 10).
    results: list[str] = field(default_factory=list)
    #: Age, age band, sex and deceased status at the as-of date (the analyst rows); filled by the front door.
    demographics: dict[str, Any] | None = None

    @property
    def flagged(self) -> bool:
        """True when the outcome produces a Flag (see :mod:`b12screen.sinks.flag`)."""
        return self.outcome in FLAGGED_OUTCOMES and self.priority is not None

    def report(self) -> dict[str, Any]:
        """The report entry of docs/reference/interfaces.md (exactly its keys; plus ``errors`` only when a rule failed
        for this patient, so a failure is never silent)."""
        entry: dict[str, Any] = {
            "patient": self.patient,
            "outcome": self.outcome,
            "priority": self.priority,
            "rules": list(self.rules),
            "risk_factors": list(self.triggered),
            "modifiers": list(self.modifiers),
            "recommended_test": dict(self.recommended_test) if self.recommended_test else None,
            "latest_b12": dict(self.latest_b12) if self.latest_b12 else None,
            "evidence": list(self.evidence),
            "as_of": self.as_of.isoformat(),
            "profile": self.profile,
            "ruleset_version": self.ruleset_version,
        }
        if self.rule_errors:
            entry["errors"] = [dict(e) for e in self.rule_errors]
        return entry
