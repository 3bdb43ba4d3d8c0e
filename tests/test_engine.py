"""Unit tests of :mod:`b12screen.core.engine`: the rule engine over records built from facts, with rules
of the test's own (no built-in rule runs unless a test asks for it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from unit_helpers import AS_OF, b12_total, cond, days_before, med, record

from b12screen import Config, Finding, Priority, Rule, hookimpl
from b12screen.core.engine import RuleEngine
from b12screen.core.model import RuleContext
from b12screen.errors import ConfigError
from b12screen.testing import fresh_plugin_manager

Evaluate = Callable[[RuleContext], Finding | None]


def when_coded(rid: str, concept: str, **finding: Any) -> Evaluate:
    """A rule body that fires when the record holds a countable Condition of ``concept`` at the as-of date."""
    def evaluate(ctx: RuleContext) -> Finding | None:
        found = ctx.record.conditions_in((concept,), ctx.as_of)
        return Finding(rid, f"{concept} recorded", tuple(c.ref for c in found), **finding) if found else None

    return evaluate


def engine(*rules: Rule, config: Config | None = None, profile: str = "default") -> RuleEngine:
    """An engine with only ``rules`` (no built-in rule)."""
    class Plugin:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            return list(rules)

    return RuleEngine(profile, config, fresh_plugin_manager(Plugin(), builtins=False))


def rule(rid: str, evaluate: Evaluate, **kw: Any) -> Rule:
    return Rule(**{"id": rid, "title": f"title of {rid}", "version": "1", "basis": "test", "evaluate": evaluate, **kw})


A = rule("T-A", when_coded("T-A", "a"), priority=Priority.LOW, window_months=24)
B = rule("T-B", when_coded("T-B", "b"), priority=Priority.HIGH)


# -- set-up ------------------------------------------------------------------------------------------


def test_an_unknown_profile_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'strict' \(choose from default, nice\)"):
        engine(A, profile="strict")


def test_configuration_names_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="configuration: unknown rule 'T-C'"):
        engine(A, config=Config(disabled_rules=frozenset({"T-C"})))
    with pytest.raises(ConfigError, match="unknown parameter 'years'"):
        engine(A, config=Config(rules={"T-A": {"years": 3}}))
    with pytest.raises(ConfigError, match=r"T-A\.window_months"):
        engine(A, config=Config(rules={"T-A": {"window_months": -1}}))


def test_settings_set_the_b12_bands() -> None:
    bands = engine(A, config=Config(settings={"total_b12_deficient_ng_l": 200, "active_b12_normal_pmol_l": 80})).bands
    assert (bands.total_deficient_ng_l, bands.total_normal_ng_l) == (200.0, 350.0)
    assert (bands.active_deficient_pmol_l, bands.active_normal_pmol_l) == (25.0, 80.0)


def test_the_ruleset_version_follows_the_rules_and_the_configuration() -> None:
    base = engine(A, B).ruleset_version
    assert engine(A, B).ruleset_version == base
    assert engine(A, rule("T-B", B.evaluate, version="2")).ruleset_version != base
    assert engine(A, B, config=Config(disabled_rules=frozenset({"T-B"}))).ruleset_version != base
    assert engine(A, B, config=Config(settings={"min_age": 40})).ruleset_version != base


def test_the_window_is_the_configured_one_then_the_findings_then_the_rules() -> None:
    plain = engine(A)
    assert plain.window_of(A, Finding("T-A", "r")) == 24.0
    assert plain.window_of(A, Finding("T-A", "r", window_months=6)) == 6.0
    configured = engine(A, config=Config(rules={"T-A": {"window_months": 3}}))
    assert configured.window_of(A, Finding("T-A", "r", window_months=6)) == 3.0
    assert configured.rule_titles["T-A"] == "title of T-A"


# -- running rules ------------------------------------------------------------------------------------


def test_a_rule_that_raises_costs_that_rule_only_with_the_reason() -> None:
    def broken(ctx: RuleContext) -> Finding | None:
        raise ValueError("no such code")

    eng = engine(rule("T-0", broken), B)
    findings, _, errors = eng.run_rules(record(cond("b")), AS_OF)
    assert list(findings) == ["T-B"]
    assert errors == [{"rule": "T-0", "error": "ValueError: no such code"}]
    result = eng.evaluate(record(cond("b")), AS_OF)
    assert result.rules == ["T-B"] and result.rule_errors == errors


def test_a_disabled_rule_is_not_run() -> None:
    ran: list[str] = []

    def spy(ctx: RuleContext) -> Finding | None:
        ran.append(ctx.rule.id)
        return None

    eng = engine(rule("T-S", spy), config=Config(disabled_rules=frozenset({"T-S"})))
    assert eng.run_rules(record(), AS_OF) == ({}, {}, []) and ran == []
    assert not eng.enabled(eng.rules_by_id["T-S"])


def test_later_stages_count_only_earlier_counted_rules_and_see_their_findings() -> None:
    seen: dict[str, Any] = {}

    def late(ctx: RuleContext) -> Finding | None:
        seen.update(counted=ctx.counted_rules, found=sorted(ctx.findings))
        return None

    same_stage = rule("T-SAME", when_coded("T-SAME", "a"), stage=2)
    quiet = rule("T-QUIET", when_coded("T-QUIET", "b"), counts_for_later_rules=False)
    eng = engine(A, quiet, same_stage, rule("T-Z", late, stage=2))
    eng.run_rules(record(cond("a"), cond("b", ref="Condition/b")), AS_OF)
    assert seen == {"counted": frozenset({"T-A"}), "found": ["T-A", "T-QUIET", "T-SAME"]}


def test_the_trace_holds_what_each_rule_noted() -> None:
    def noting(ctx: RuleContext) -> Finding | None:
        ctx.note("exposure 3 months, needs more than 4")
        return None

    trace: dict[str, list[str]] = {}
    engine(rule("T-N", noting), A).run_rules(record(), AS_OF, trace)
    assert trace == {"T-A": [], "T-N": ["exposure 3 months, needs more than 4"]}


def test_a_rule_that_notes_a_modifier_has_it_in_the_result() -> None:
    def stopped(ctx: RuleContext) -> Finding | None:
        ctx.note_modifier("MOD-STOPPED", "MedicationRequest/old")
        return None

    result = engine(rule("T-M", stopped)).evaluate(record(), AS_OF)
    assert result.modifiers == ["MOD-STOPPED"] and result.outcome == "no-suggestion"


# -- deciding --------------------------------------------------------------------------------------


def test_a_replacing_rule_hides_the_one_it_replaces() -> None:
    wider = rule("T-W", when_coded("T-W", "a"), replaces=("T-A",))
    eng = engine(A, wider)
    findings = {"T-A": Finding("T-A", "a"), "T-W": Finding("T-W", "w")}
    assert list(eng.triggered(findings)) == ["T-W"]
    assert list(eng.triggered({"T-A": Finding("T-A", "a")})) == ["T-A"]


def test_risk_factors_only_never_suggest() -> None:
    no_priority = rule("T-R", when_coded("T-R", "a"), priority=None)
    sidelined = rule("T-F", when_coded("T-F", "a", risk_factor_only=True))
    result = engine(no_priority, sidelined).evaluate(record(cond("a")), AS_OF)
    assert (result.outcome, result.rules, result.triggered) == ("no-suggestion", [], ["T-F", "T-R"])
    assert result.recommended_test is None and result.priority is None


def test_a_findings_priority_overrides_its_rules() -> None:
    raised = rule("T-A", when_coded("T-A", "a", priority=Priority.HIGH), priority=Priority.LOW)
    assert engine(raised).evaluate(record(cond("a")), AS_OF).priority == "high"
    assert engine(A).evaluate(record(cond("a")), AS_OF).priority == "low"


def test_a_suggestion_carries_the_rules_evidence_reasons_titles_and_test() -> None:
    eng = engine(A, B)
    rec = record(cond("a", ref="Condition/a"), cond("b", ref="Condition/b"))
    result = eng.evaluate(rec, AS_OF)
    assert (result.patient, result.outcome, result.priority) == ("Patient/p1", "suggest-b12-test", "high")
    assert result.rules == result.triggered == ["T-A", "T-B"]
    assert result.evidence == ["Condition/a", "Condition/b"]
    assert result.reasons == {"T-A": "a recorded", "T-B": "b recorded"}
    assert result.rule_titles == {"T-A": "title of T-A", "T-B": "title of T-B"}
    assert result.recommended_test is not None and result.recommended_test["code"] == "2132-9"
    assert (result.as_of, result.profile, result.ruleset_version) == (AS_OF, "default", eng.ruleset_version)


def test_nothing_dated_after_the_as_of_date_changes_the_outcome() -> None:
    eng = engine(B)
    onset = date(2026, 6, 1)
    rec = record(cond("b", onset=onset))
    assert eng.evaluate(rec, onset).outcome == "suggest-b12-test"
    assert eng.evaluate(rec, days_before(1, onset)).outcome == "no-suggestion"


def test_a_recent_test_inside_the_rules_window_satisfies_it() -> None:
    eng = engine(A)  # a 24-month window
    inside = eng.evaluate(record(cond("a"), b12_total(400, 730)), AS_OF)
    assert (inside.outcome, inside.modifiers) == ("suppressed", ["MOD-RECENT"])
    assert inside.evidence == ["Observation/b12"]
    assert inside.latest_b12 == {"value": 400, "unit": "ng/L", "date": "2024-11-24", "band": "normal"}
    assert inside.results == []  # the latest B12 is shown once, not again among the results
    outside = eng.evaluate(record(cond("a"), b12_total(400, 731)), AS_OF)
    assert outside.outcome == "suggest-b12-test"


def test_a_configured_window_moves_the_boundary() -> None:
    eng = engine(A, config=Config(rules={"T-A": {"window_months": 6}}))
    assert eng.evaluate(record(cond("a"), b12_total(400, 200)), AS_OF).outcome == "suggest-b12-test"
    assert eng.evaluate(record(cond("a"), b12_total(400, 180)), AS_OF).outcome == "suppressed"


def test_a_stale_injection_order_is_named_only_where_a_flag_is_raised() -> None:
    order = med("b12-parenteral", start=days_before(800), ref="MedicationRequest/old-im")
    eng = engine(B)
    flagged = eng.evaluate(record(cond("b"), order), AS_OF)
    assert flagged.outcome == "suggest-b12-test"
    assert flagged.notes == ["An active B12 injection order from 2024-09-15 is on file: confirm that treatment is "
                             "current"]
    assert eng.evaluate(record(order), AS_OF).notes == []


def test_the_built_in_rules_are_loaded_by_default() -> None:
    eng = RuleEngine(plugin_manager=fresh_plugin_manager())
    assert {"MET-1", "MET-2", "AGE-75"} <= set(eng.rules_by_id)
    assert eng.rule_owners["MET-1"].startswith("b12screen.rules")
