"""The decision context of docs/reference/clinical-rules.md section 4 and the effect of each built-in modifier.

An effect takes the :class:`DecisionContext` of one patient and either returns the :class:`Decision`
(the outcome is decided) or records what it found (modifiers, notes, candidates) and returns ``None``.
A step may open with a check (:data:`STEP_STARTS`) and ends with one (:data:`STEP_ENDS`). No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from .abnormal import answering_tests, unactioned, unanswered_note
from .clinical import breastfeeding, pregnancy
from .dates import DAYS_PER_MONTH
from .labs import B12Result, Band, Bands, latest_b12, latest_egfr, mma_after
from .model import SINCE_ONSET, Finding, Priority, Rule
from .outcome import (
    DEFICIENCY_WITHOUT_TREATMENT,
    NO_SUGGESTION,
    NOT_EVALUATED,
    SUGGEST_B12_TEST,
    SUGGEST_MMA,
    SUPPRESSED,
    UNACTIONED_LOW_B12,
)
from .record import PatientRecord
from .therapy import Therapy, therapy_at


@dataclass
class Decision:
    """The outcome of one patient: outcome, priority, deciding rules, modifiers, test key and notes."""

    outcome: str
    priority: Priority | None = None
    rules: list[str] = field(default_factory=list)
    modifiers: dict[str, list[str]] = field(default_factory=dict)
    test: str | None = "total-b12"
    notes: list[str] = field(default_factory=list)
    #: The step of section 4 that decided, and plugin modifiers that raised (set by
    #: :func:`b12screen.core.modifiers.decide`).
    step: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Candidate:
    """A triggered rule on its way to the outcome, with its effective priority and window."""

    finding: Finding
    priority: Priority
    window: float | None


@dataclass
class DecisionContext:
    """One patient at one as-of date on the way through section 4.

    ``candidates`` are the triggered rules with a priority still in play; effects add to ``modifiers``
    (id → evidence) and ``notes``; ``mma_priority`` is set when MMA is to be suggested (step 7).
    """

    record: PatientRecord
    as_of: date
    settings: Mapping[str, Any]
    profile: str
    bands: Bands
    rules: Mapping[str, Rule]
    candidates: dict[str, Candidate]
    modifiers: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mma_priority: Priority | None = None
    remaining: dict[str, Candidate] = field(default_factory=dict)

    @cached_property
    def therapy(self) -> Therapy:
        return therapy_at(self.record, self.as_of, self.settings)

    @cached_property
    def latest(self) -> B12Result | None:
        return latest_b12(self.record, self.as_of, self.settings["latest_b12_months"], self.bands)

    @cached_property
    def pregnant(self) -> list[str]:
        return pregnancy(self.record, self.as_of)

    def done(self, outcome: str, priority: Priority | None = None, rules: list[str] | None = None,
             test: str | None = None) -> Decision:
        """The decision with the modifiers and notes gathered so far."""
        return Decision(outcome, priority, rules or [], dict(self.modifiers), test, list(self.notes))

    def suggesting(self) -> dict[str, Candidate]:
        """The candidates whose rule may suggest a new test in this profile."""
        return {rid: c for rid, c in self.candidates.items() if self.rules[rid].suggests_in(self.profile)}


Effect = Callable[[DecisionContext], "Decision | None"]


def _highest(candidates: Mapping[str, Candidate]) -> Priority:
    return max((c.priority for c in candidates.values()), key=lambda p: p.rank)


# -- step 1 ---------------------------------------------------------------------------------------


def deceased(ctx: DecisionContext) -> Decision | None:
    if ctx.record.is_deceased(ctx.as_of) and not ctx.settings["evaluate_deceased"]:
        return Decision(NOT_EVALUATED, modifiers={"MOD-DECEASED": []}, test=None)
    return None


def too_young(ctx: DecisionContext) -> Decision | None:
    age = ctx.record.age(ctx.as_of)
    if age is not None and age < ctx.settings["min_age"]:
        return Decision(NOT_EVALUATED, modifiers={"MOD-AGE-MIN": []}, test=None)
    return None


# -- steps 2-4 ------------------------------------------------------------------------------------


def diagnosed(ctx: DecisionContext) -> Decision | None:
    conditions = ctx.record.conditions_in(("b12-deficiency-dx",), ctx.as_of)
    if not conditions:
        return None
    diagnoses = [c.ref for c in conditions]
    treated = {k: v for k, v in (("MOD-TX-IM", ctx.therapy.parenteral), ("MOD-TX-ORAL-HI", ctx.therapy.high_oral))
               if v}
    if treated:
        return Decision(SUPPRESSED, modifiers={"MOD-DX": diagnoses, **treated}, test=None)
    recorded = "; ".join((c.label or "B12 deficiency") + (f" (recorded {c.onset.isoformat()})" if c.onset else "")
                         for c in conditions)
    return Decision(DEFICIENCY_WITHOUT_TREATMENT, Priority.HIGH, modifiers={"MOD-DX": diagnoses}, test=None,
                    notes=[f"Diagnosis: {recorded}; no parenteral or high-dose oral B12 "
                           "is recorded: consider starting replacement or recording it"])


def parenteral(ctx: DecisionContext) -> Decision | None:
    if ctx.therapy.parenteral:
        return Decision(SUPPRESSED, modifiers={"MOD-TX-IM": ctx.therapy.parenteral}, test=None)
    return None


def unactioned_low(ctx: DecisionContext) -> Decision | None:
    found = unactioned(ctx.record, ctx.as_of, ctx.settings, ctx.bands, ctx.therapy)
    if found is None:
        return None
    return Decision(UNACTIONED_LOW_B12, found.priority, modifiers={"MOD-LOW": [found.ref]}, test=None,
                    notes=[found.note()])


# -- step 5 ---------------------------------------------------------------------------------------


def past_deficiency(ctx: DecisionContext) -> None:
    history = [c.ref for c in ctx.record.condition_history(("b12-deficiency-dx",), ctx.as_of)]
    if history:
        ctx.modifiers["MOD-DX-HIST"] = history


# -- step 6 ---------------------------------------------------------------------------------------


#: What high-dose oral B12 makes of a rule that it reduces
#: (docs/reference/clinical-rules.md 7.6: bariatric rules MEDIUM).
REDUCED = {"reduce": Priority.LOW, "reduce-medium": Priority.MEDIUM}


def high_dose_oral(ctx: DecisionContext) -> None:
    high = ctx.therapy.high_oral
    if not high:
        return
    for rid in list(ctx.candidates):
        effect = ctx.rules[rid].oral_therapy
        if effect in ("suppress-high", "suppress-any"):
            del ctx.candidates[rid]
        elif effect in REDUCED:
            ctx.candidates[rid] = Candidate(ctx.candidates[rid].finding, REDUCED[effect], 12.0)
        else:
            continue
        ctx.modifiers["MOD-TX-ORAL-HI"] = high


def low_dose_oral(ctx: DecisionContext) -> None:
    low = ctx.therapy.low_oral
    for rid in list(ctx.candidates):
        if low and ctx.rules[rid].oral_therapy == "suppress-any":
            del ctx.candidates[rid]
            ctx.modifiers["MOD-TX-ORAL-LO"] = low


def pregnant(ctx: DecisionContext) -> None:
    if ctx.candidates and ctx.pregnant:
        ctx.modifiers["MOD-PREG"] = ctx.pregnant


# -- step 7 (as in the default profile whatever the profile: any triggered rule counts) ------------


def indeterminate(ctx: DecisionContext) -> None:
    latest = ctx.latest
    if latest is None or latest.band is not Band.INDETERMINATE or mma_after(ctx.record, latest.when, ctx.as_of):
        return
    if not ctx.candidates:
        return
    ctx.modifiers["MOD-INDET"] = [latest.ref]
    symptomatic = any(c.finding.symptomatic for c in ctx.candidates.values())
    ctx.mma_priority = Priority.HIGH if symptomatic else _highest(ctx.candidates)
    ctx.notes.append(f"Latest B12 {latest.text} on {latest.when.isoformat()} is indeterminate; "
                     "MMA tells whether it is functionally low")


def renal(ctx: DecisionContext) -> None:
    if ctx.mma_priority is None:
        return
    egfr = latest_egfr(ctx.record, ctx.as_of)
    limit = ctx.settings["renal_egfr"]
    if egfr is not None and egfr.value is not None and egfr.value < limit:
        ctx.modifiers["MOD-RENAL"] = [egfr.ref]
        ctx.notes.append(f"eGFR {egfr.value:g} (< {limit}): MMA may be falsely high")


# -- step 8 ---------------------------------------------------------------------------------------


def satisfying_test(candidate: Candidate, tests: list[tuple[date, str]], as_of: date) -> str | None:
    """The reference of a B12 status test inside the rule's window (MOD-RECENT), if any."""
    window, finding = candidate.window, candidate.finding
    if window is None:
        return None
    for when, ref in reversed(tests):
        if finding.test_after is not None and when < finding.test_after:
            continue
        if window == SINCE_ONSET or (as_of - when).days <= window * DAYS_PER_MONTH:
            return ref
    return None


def recent_test(ctx: DecisionContext) -> None:
    mma_limit = float(ctx.settings["mma_raised_umol_l"])
    status = answering_tests(ctx.record, ctx.as_of, ctx.bands, mma_limit)
    satisfied_by: list[str] = []
    for rid, candidate in list(ctx.remaining.items()):
        kinds = candidate.finding.answered_by
        tests = answering_tests(ctx.record, ctx.as_of, ctx.bands, mma_limit, kinds).tests if kinds else status.tests
        test = satisfying_test(candidate, tests, ctx.as_of)
        if test is not None:
            del ctx.remaining[rid]
            satisfied_by.append(test)
    if satisfied_by:
        ctx.modifiers["MOD-RECENT"] = sorted(set(satisfied_by))
    if ctx.remaining and "MOD-INDET" not in ctx.modifiers:
        for result in status.unanswered:
            if any(satisfying_test(c, [(result.when, result.ref)], ctx.as_of) for c in ctx.remaining.values()):
                ctx.notes.append(unanswered_note(result))


# -- the end of each step -------------------------------------------------------------------------


def _after_triggers(ctx: DecisionContext) -> Decision | None:
    return None if ctx.candidates else ctx.done(NO_SUGGESTION)


def _after_oral(ctx: DecisionContext) -> Decision | None:
    return None if ctx.candidates else ctx.done(SUPPRESSED)


def _after_indeterminate(ctx: DecisionContext) -> Decision | None:
    if ctx.mma_priority is not None:
        return ctx.done(SUGGEST_MMA, ctx.mma_priority, sorted(ctx.candidates), "mma")
    return None


def _profile_rules(ctx: DecisionContext) -> Decision | None:
    ctx.remaining = ctx.suggesting()
    return None if ctx.remaining else ctx.done(NO_SUGGESTION)


def _suggestion(ctx: DecisionContext) -> Decision:
    remaining = ctx.remaining
    if not remaining:
        return ctx.done(SUPPRESSED)
    test_key = "total-b12"
    if any(c.finding.recommended_test for c in remaining.values()):
        test_key = next(c.finding.recommended_test for c in remaining.values() if c.finding.recommended_test)
        if test_key == "homocysteine":
            ctx.notes.append("Nitrous oxide inactivates B12: serum B12 may be normal; homocysteine or MMA "
                             "shows functional deficiency")
    elif ctx.pregnant:
        test_key = "active-b12"
        ctx.notes.append("Pregnant: total B12 falls in pregnancy, so active B12 (holotranscobalamin) is suggested")
    if "DIET-V" in remaining and breastfeeding(ctx.record, ctx.as_of):
        ctx.notes.append("Breastfeeding on a vegan diet: the infant is at risk of B12 deficiency too")
    return ctx.done(SUGGEST_B12_TEST, _highest(remaining), sorted(remaining), test_key)


#: What opens a step before its modifiers run: a decision, or ``None`` to go on.
STEP_STARTS: dict[int, Effect] = {8: _profile_rules}
#: What ends each step once its modifiers have run: a decision, or ``None`` to go on.
STEP_ENDS: dict[int, Effect] = {5: _after_triggers, 6: _after_oral, 7: _after_indeterminate, 8: _suggestion}
