"""The modifiers of docs/clinical-rules.md section 4, in the order the outcome is decided.

Each record names the modifier, the step of the outcome order it belongs to and its effect; the
explanation (:mod:`b12screen.core.explain`) walks this list, so it reads as the outcome order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modifier:
    """One modifier: ``id`` (``MOD-…``), ``step`` (1-8 of section 4) and its ``effect`` in words."""

    id: str
    step: int
    effect: str


MODIFIERS: tuple[Modifier, ...] = (
    Modifier("MOD-DECEASED", 1, "deceased patient: not evaluated (unless evaluate_deceased)"),
    Modifier("MOD-AGE-MIN", 1, "younger than min_age: not evaluated"),
    Modifier("MOD-DX", 2, "B12 deficiency diagnosed: suppressed when treated, else deficiency without treatment"),
    Modifier("MOD-TX-IM", 3, "parenteral B12 within parenteral_months: suppressed"),
    Modifier("MOD-LOW", 4, "latest B12 deficient with nothing done after it: unactioned low B12"),
    Modifier("MOD-STOPPED", 5, "medication class stopped: its rules do not trigger"),
    Modifier("MOD-DX-HIST", 5, "past B12 deficiency: a risk factor"),
    Modifier("MOD-TX-ORAL-HI", 6, "high-dose oral B12: suppresses or reduces rules as each rule says"),
    Modifier("MOD-TX-ORAL-LO", 6, "low-dose oral B12: suppresses rules marked suppress-any"),
    Modifier("MOD-PREG", 6, "pregnant: active B12 is suggested instead of total B12"),
    Modifier("MOD-INDET", 7, "latest B12 indeterminate without MMA after it: MMA suggested"),
    Modifier("MOD-RENAL", 7, "eGFR below renal_egfr: MMA may be falsely high"),
    Modifier("MOD-RECENT", 8, "a B12 test inside the rule's window: that rule is satisfied"),
)

#: What each step of section 4 decides.
STEPS: dict[int, str] = {
    1: "age and deceased check",
    2: "recorded B12 deficiency (MOD-DX)",
    3: "parenteral therapy (MOD-TX-IM)",
    4: "unactioned low B12 (MOD-LOW)",
    5: "rules whose triggers are met",
    6: "oral therapy",
    7: "indeterminate B12 (MOD-INDET)",
    8: "recent test (MOD-RECENT) and the suggestion",
}
