"""Unit tests of :mod:`b12screen.core.decision`: each effect of docs/clinical-rules.md section 4 over a
:class:`DecisionContext` built from facts, and the checks that open and end the steps."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from unit_helpers import AS_OF, b12_total, cond, days_before, med, obs, person, record

from b12screen.core import decision as d
from b12screen.core import outcome as o
from b12screen.core.config import DEFAULT_SETTINGS, SETTINGS
from b12screen.core.decision import Candidate, DecisionContext
from b12screen.core.facts import Dose
from b12screen.core.labs import Bands
from b12screen.core.model import SINCE_ONSET, Finding, Priority, Rule
from b12screen.core.record import PatientRecord


def rule(rid: str, oral_therapy: str = "keep", suggest_in: frozenset[str] | None = None) -> Rule:
    return Rule(rid, rid, "1", "test", lambda ctx: None, oral_therapy=oral_therapy, suggest_in=suggest_in)


def candidate(rid: str, priority: Priority = Priority.MEDIUM, window: float | None = 12.0, **finding: Any
              ) -> Candidate:
    return Candidate(Finding(rid, "reason", (f"Condition/{rid}",), **finding), priority, window)


def context(rec: PatientRecord, *candidates: Candidate, rules: tuple[Rule, ...] = (), profile: str = "default",
            **settings: Any) -> DecisionContext:
    """The context of ``rec`` at :data:`AS_OF` with default settings (less ``settings``); a rule that no
    ``rules`` entry describes keeps oral therapy and suggests in every profile."""
    by_id = {c.finding.rule_id: rule(c.finding.rule_id) for c in candidates} | {r.id: r for r in rules}
    return DecisionContext(rec, AS_OF, {**DEFAULT_SETTINGS, **settings}, profile, Bands(), by_id,
                           {c.finding.rule_id: c for c in candidates})


def oral_b12_total(micrograms: float) -> Any:
    return med("b12-oral", resource_type="MedicationStatement", start=days_before(30),
               doses=(Dose(micrograms, "ug", 1),), ref="MedicationStatement/oral")


INJECTION = med("b12-parenteral", resource_type="MedicationAdministration", status="completed",
                start=days_before(20), ref="MedicationAdministration/im")

# -- step 1 -----------------------------------------------------------------------------------------


def test_a_deceased_patient_is_not_evaluated_unless_the_setting_says_so() -> None:
    died = record(patient=person(deceased=True, deceased_date=days_before(3)))
    decided = d.deceased(context(died))
    assert decided is not None and (decided.outcome, decided.modifiers, decided.test) == (
        o.NOT_EVALUATED, {"MOD-DECEASED": []}, None)
    assert d.deceased(context(died, evaluate_deceased=True)) is None
    assert d.deceased(context(record(patient=person(deceased=True, deceased_date=days_before(-1))))) is None


def test_min_age_is_the_first_age_evaluated() -> None:
    eighteen = record(patient=person(date(2008, 11, 24)))
    day_short = record(patient=person(date(2008, 11, 25)))
    assert d.too_young(context(eighteen)) is None
    decided = d.too_young(context(day_short))
    assert decided is not None and (decided.outcome, decided.modifiers) == (o.NOT_EVALUATED, {"MOD-AGE-MIN": []})
    assert d.too_young(context(day_short, min_age=17)) is None
    assert d.too_young(context(record(patient=person(None)))) is None  # no birthDate: evaluated


# -- steps 2-4 --------------------------------------------------------------------------------------


def test_an_untreated_diagnosis_is_deficiency_without_treatment_naming_the_diagnosis() -> None:
    dx = cond("b12-deficiency-dx", onset=date(2025, 2, 3), label="Pernicious anaemia", ref="Condition/dx")
    decided = d.diagnosed(context(record(dx)))
    assert decided is not None
    assert (decided.outcome, decided.priority, decided.modifiers) == (
        o.DEFICIENCY_WITHOUT_TREATMENT, Priority.HIGH, {"MOD-DX": ["Condition/dx"]})
    assert decided.notes[0].startswith("Diagnosis: Pernicious anaemia (recorded 2025-02-03); no parenteral")


def test_a_treated_diagnosis_is_suppressed_with_the_therapy_as_evidence() -> None:
    dx = cond("b12-deficiency-dx", ref="Condition/dx")
    by_injection = d.diagnosed(context(record(dx, INJECTION)))
    assert by_injection is not None and (by_injection.outcome, by_injection.modifiers) == (
        o.SUPPRESSED, {"MOD-DX": ["Condition/dx"], "MOD-TX-IM": ["MedicationAdministration/im"]})
    by_mouth = d.diagnosed(context(record(dx, oral_b12_total(1000))))
    assert by_mouth is not None and by_mouth.modifiers["MOD-TX-ORAL-HI"] == ["MedicationStatement/oral"]
    low_dose = d.diagnosed(context(record(dx, oral_b12_total(999))))
    assert low_dose is not None and low_dose.outcome == o.DEFICIENCY_WITHOUT_TREATMENT
    assert d.diagnosed(context(record(cond("b12-deficiency-dx", clinical="resolved")))) is None


def test_parenteral_therapy_suppresses() -> None:
    decided = d.parenteral(context(record(INJECTION)))
    assert decided is not None and (decided.outcome, decided.modifiers) == (
        o.SUPPRESSED, {"MOD-TX-IM": ["MedicationAdministration/im"]})
    assert d.parenteral(context(record(oral_b12_total(5000)))) is None


def test_an_unactioned_deficient_b12_decides_with_its_note() -> None:
    decided = d.unactioned_low(context(record(b12_total(150, 30))))
    assert decided is not None and (decided.outcome, decided.priority, decided.modifiers) == (
        o.UNACTIONED_LOW_B12, Priority.HIGH, {"MOD-LOW": ["Observation/b12"]})
    assert "is in the deficient range" in decided.notes[0]
    assert d.unactioned_low(context(record(b12_total(150, 30), b12_total(400, 10, "Observation/repeat")))) is None


# -- steps 5 and 6 ------------------------------------------------------------------------------------


def test_past_deficiency_is_noted_from_resolved_diagnoses_only() -> None:
    ctx = context(record(cond("b12-deficiency-dx", clinical="resolved", ref="Condition/old")))
    d.past_deficiency(ctx)
    assert ctx.modifiers == {"MOD-DX-HIST": ["Condition/old"]}
    ctx = context(record(cond("b12-deficiency-dx")))
    d.past_deficiency(ctx)
    assert ctx.modifiers == {}


def test_high_dose_oral_suppresses_or_reduces_each_rule_as_it_says() -> None:
    rules = (rule("SUP", "suppress-high"), rule("ANY", "suppress-any"), rule("RED", "reduce"),
             rule("MED", "reduce-medium"), rule("KEEP"))
    ctx = context(record(oral_b12_total(1000)), *(candidate(r.id, Priority.HIGH, 60.0) for r in rules), rules=rules)
    d.high_dose_oral(ctx)
    assert sorted(ctx.candidates) == ["KEEP", "MED", "RED"]
    assert (ctx.candidates["RED"].priority, ctx.candidates["RED"].window) == (Priority.LOW, 12.0)
    assert (ctx.candidates["MED"].priority, ctx.candidates["MED"].window) == (Priority.MEDIUM, 12.0)
    assert (ctx.candidates["KEEP"].priority, ctx.candidates["KEEP"].window) == (Priority.HIGH, 60.0)
    assert ctx.modifiers == {"MOD-TX-ORAL-HI": ["MedicationStatement/oral"]}


def test_high_dose_oral_is_noted_only_when_it_changed_a_rule() -> None:
    ctx = context(record(oral_b12_total(1000)), candidate("KEEP"))
    d.high_dose_oral(ctx)
    assert ctx.modifiers == {} and list(ctx.candidates) == ["KEEP"]
    low = context(record(oral_b12_total(999)), candidate("SUP"), rules=(rule("SUP", "suppress-high"),))
    d.high_dose_oral(low)
    assert list(low.candidates) == ["SUP"]


def test_low_dose_oral_suppresses_only_suppress_any_rules() -> None:
    rules = (rule("ANY", "suppress-any"), rule("SUP", "suppress-high"))
    ctx = context(record(oral_b12_total(50)), candidate("ANY"), candidate("SUP"), rules=rules)
    d.low_dose_oral(ctx)
    assert list(ctx.candidates) == ["SUP"] and ctx.modifiers == {"MOD-TX-ORAL-LO": ["MedicationStatement/oral"]}
    untreated = context(record(), candidate("ANY"), rules=rules)
    d.low_dose_oral(untreated)
    assert list(untreated.candidates) == ["ANY"] and untreated.modifiers == {}


def test_pregnancy_is_noted_while_a_rule_is_in_play() -> None:
    pregnant = record(cond("pregnancy", onset=days_before(60), ref="Condition/preg"))
    ctx = context(pregnant, candidate("R"))
    d.pregnant(ctx)
    assert ctx.modifiers == {"MOD-PREG": ["Condition/preg"]}
    ctx = context(pregnant)
    d.pregnant(ctx)
    assert ctx.modifiers == {}


# -- step 7 -----------------------------------------------------------------------------------------


def test_an_indeterminate_b12_suggests_mma_at_the_highest_priority() -> None:
    ctx = context(record(b12_total(250, 30)), candidate("A", Priority.LOW), candidate("B", Priority.MEDIUM))
    d.indeterminate(ctx)
    assert ctx.modifiers == {"MOD-INDET": ["Observation/b12"]} and ctx.mma_priority is Priority.MEDIUM
    assert "is indeterminate" in ctx.notes[0]
    decided = d.STEP_ENDS[7](ctx)
    assert decided is not None and (decided.outcome, decided.priority, decided.rules, decided.test) == (
        o.SUGGEST_MMA, Priority.MEDIUM, ["A", "B"], "mma")


def test_a_symptomatic_rule_makes_the_mma_suggestion_high() -> None:
    ctx = context(record(b12_total(250, 30)), candidate("A", Priority.LOW, symptomatic=True))
    d.indeterminate(ctx)
    assert ctx.mma_priority is Priority.HIGH


@pytest.mark.parametrize("value", [180, 350])
def test_the_indeterminate_band_includes_both_its_limits(value: float) -> None:
    ctx = context(record(b12_total(value, 30)), candidate("A"))
    d.indeterminate(ctx)
    assert ctx.modifiers == {"MOD-INDET": ["Observation/b12"]}


@pytest.mark.parametrize("value", [179, 351])
def test_a_b12_outside_the_indeterminate_band_suggests_no_mma(value: float) -> None:
    ctx = context(record(b12_total(value, 30)), candidate("A"))
    d.indeterminate(ctx)
    assert ctx.mma_priority is None and ctx.modifiers == {}
    assert d.STEP_ENDS[7](ctx) is None


def test_an_indeterminate_b12_answered_by_mma_or_with_no_rule_in_play_suggests_no_mma() -> None:
    answered = context(record(b12_total(250, 30), obs("mma", effective=days_before(30), value=0.2, unit="umol/L")),
                       candidate("A"))
    d.indeterminate(answered)
    assert answered.mma_priority is None
    nothing = context(record(b12_total(250, 30)))
    d.indeterminate(nothing)
    assert nothing.mma_priority is None and nothing.modifiers == {}


def test_renal_is_noted_below_the_egfr_limit_only() -> None:
    def renal(egfr: float, mma: Priority | None = Priority.MEDIUM) -> DecisionContext:
        ctx = context(record(obs("egfr", effective=days_before(5), value=egfr, ref="Observation/egfr")))
        ctx.mma_priority = mma
        d.renal(ctx)
        return ctx

    below = renal(29)
    assert below.modifiers == {"MOD-RENAL": ["Observation/egfr"]}
    assert below.notes == ["eGFR 29 (< 30): MMA may be falsely high"]
    assert renal(30).modifiers == {}
    assert renal(10, mma=None).modifiers == {}  # no MMA suggested: nothing to warn about


# -- step 8 -----------------------------------------------------------------------------------------


def test_a_test_satisfies_a_window_up_to_its_last_day() -> None:
    fifty_months = 1522  # 50 x 30.44 days
    win = candidate("R", window=50.0)
    assert d.satisfying_test(win, [(days_before(fifty_months), "Observation/t")], AS_OF) == "Observation/t"
    assert d.satisfying_test(win, [(days_before(fifty_months + 1), "Observation/t")], AS_OF) is None
    year = candidate("R", window=12.0)
    assert d.satisfying_test(year, [(days_before(365), "Observation/t")], AS_OF) == "Observation/t"
    assert d.satisfying_test(year, [(days_before(366), "Observation/t")], AS_OF) is None
    assert d.satisfying_test(candidate("R", window=None), [(AS_OF, "Observation/t")], AS_OF) is None
    assert d.satisfying_test(year, [], AS_OF) is None


def test_only_tests_from_the_onset_answer_a_rule_with_test_after() -> None:
    onset = days_before(100)
    since = candidate("R", window=SINCE_ONSET, test_after=onset)
    assert d.satisfying_test(since, [(days_before(4000), "Observation/old")], AS_OF) is None
    assert d.satisfying_test(since, [(onset, "Observation/on")], AS_OF) == "Observation/on"
    assert d.satisfying_test(since, [(days_before(101), "Observation/before")], AS_OF) is None
    newest = [(days_before(50), "Observation/a"), (days_before(20), "Observation/b")]
    assert d.satisfying_test(since, newest, AS_OF) == "Observation/b"


def test_a_recent_normal_test_satisfies_a_rule_and_a_deficient_one_does_not() -> None:
    ctx = context(record(b12_total(500, 30)), candidate("A"), candidate("B", window=0.5))
    ctx.remaining = dict(ctx.candidates)
    d.recent_test(ctx)
    assert list(ctx.remaining) == ["B"] and ctx.modifiers == {"MOD-RECENT": ["Observation/b12"]}
    low = context(record(b12_total(150, 30)), candidate("A"))
    low.remaining = dict(low.candidates)
    d.recent_test(low)
    assert list(low.remaining) == ["A"] and low.modifiers == {}


def test_an_unanswered_indeterminate_test_in_the_window_is_named_in_a_note() -> None:
    ctx = context(record(b12_total(250, 300)), candidate("A"))
    ctx.remaining = dict(ctx.candidates)
    d.recent_test(ctx)
    assert list(ctx.remaining) == ["A"]
    assert len(ctx.notes) == 1 and "was indeterminate and not followed up" in ctx.notes[0]


def test_a_rule_answered_by_metabolites_is_satisfied_by_them_only() -> None:
    n2o = candidate("N2O", answered_by=("homocysteine", "mma"))
    ctx = context(record(b12_total(500, 30)), n2o)
    ctx.remaining = dict(ctx.candidates)
    d.recent_test(ctx)
    assert list(ctx.remaining) == ["N2O"]
    hcy = obs("homocysteine", effective=days_before(30), value=10, unit="umol/L", ref="Observation/hcy")
    ctx = context(record(hcy), n2o)
    ctx.remaining = dict(ctx.candidates)
    d.recent_test(ctx)
    assert ctx.remaining == {} and ctx.modifiers == {"MOD-RECENT": ["Observation/hcy"]}


def test_the_suggestion_takes_the_highest_priority_and_every_remaining_rule() -> None:
    ctx = context(record(), candidate("B", Priority.LOW), candidate("A", Priority.HIGH), candidate("C"))
    assert d.STEP_STARTS[8](ctx) is None
    decided = d.STEP_ENDS[8](ctx)
    assert decided is not None and (decided.outcome, decided.priority, decided.rules, decided.test) == (
        o.SUGGEST_B12_TEST, Priority.HIGH, ["A", "B", "C"], "total-b12")


def test_a_rule_that_does_not_suggest_in_the_profile_leaves_no_suggestion() -> None:
    nice_only = (rule("R", suggest_in=frozenset({"nice"})),)
    decided = d.STEP_STARTS[8](context(record(), candidate("R"), rules=nice_only))
    assert decided is not None and decided.outcome == o.NO_SUGGESTION
    assert d.STEP_STARTS[8](context(record(), candidate("R"), rules=nice_only, profile="nice")) is None


def test_the_suggested_test_follows_the_rule_then_pregnancy() -> None:
    n2o = context(record(), candidate("N2O", recommended_test="homocysteine"))
    n2o.remaining = dict(n2o.candidates)
    decided = d.STEP_ENDS[8](n2o)
    assert decided.test == "homocysteine" and "Nitrous oxide inactivates B12" in decided.notes[0]
    pregnant = context(record(cond("pregnancy", onset=days_before(30))), candidate("R"))
    pregnant.remaining = dict(pregnant.candidates)
    decided = d.STEP_ENDS[8](pregnant)
    assert decided.test == "active-b12" and decided.notes[0].startswith("Pregnant:")


def test_a_vegan_who_breastfeeds_is_told_the_infant_is_at_risk() -> None:
    ctx = context(record(cond("breastfeeding", onset=days_before(100))), candidate("DIET-V"))
    ctx.remaining = dict(ctx.candidates)
    assert d.STEP_ENDS[8](ctx).notes == ["Breastfeeding on a vegan diet: the infant is at risk of B12 deficiency too"]


def test_the_ends_of_steps_five_six_and_eight_when_nothing_is_left() -> None:
    empty = context(record())
    assert d.STEP_ENDS[5](empty).outcome == o.NO_SUGGESTION  # type: ignore[union-attr]
    assert d.STEP_ENDS[6](empty).outcome == o.SUPPRESSED  # type: ignore[union-attr]
    assert d.STEP_ENDS[8](empty).outcome == o.SUPPRESSED
    left = context(record(), candidate("R"))
    assert d.STEP_ENDS[5](left) is None and d.STEP_ENDS[6](left) is None


def test_done_carries_a_copy_of_what_was_gathered() -> None:
    ctx = context(record())
    ctx.modifiers["MOD-X"] = ["Observation/o"]
    ctx.notes.append("a note")
    decided = ctx.done(o.SUGGEST_B12_TEST, Priority.LOW, ["R"], "total-b12")
    ctx.modifiers.clear()
    ctx.notes.clear()
    assert (decided.modifiers, decided.notes, decided.rules) == ({"MOD-X": ["Observation/o"]}, ["a note"], ["R"])


def test_the_settings_describe_the_band_limits_as_the_bands_apply_them() -> None:
    """350 ng/L and 70 pmol/L are still indeterminate (docs/clinical-rules.md section 1: normal is above them)."""
    assert SETTINGS["total_b12_normal_ng_l"].description == "total B12 above this is normal"
    assert SETTINGS["active_b12_normal_pmol_l"].description == "active B12 above this is normal"
    active = obs("b12-active", effective=days_before(10), value=70, unit="pmol/L", ref="Observation/active")
    ctx = context(record(active), candidate("A"))
    d.indeterminate(ctx)
    assert ctx.modifiers == {"MOD-INDET": ["Observation/active"]}
