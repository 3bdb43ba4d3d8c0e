"""The b12screen_modifiers hook and the modifier records: the engine runs the outcome order of
docs/reference/clinical-rules.md section 4 as the list, plugin modifiers join it at their step."""

from __future__ import annotations

import re

import pytest
from conftest import AS_OF, ROOT, bundle, metformin_request, patient

from b12screen import Screener, hookimpl
from b12screen.core.decision import Decision, DecisionContext
from b12screen.core.explain import explain
from b12screen.core.labs import Bands
from b12screen.core.modifiers import MODIFIERS, STEPS, Modifier, in_order
from b12screen.core.outcome import NOT_EVALUATED, SUPPRESSED
from b12screen.errors import DuplicateRuleError, PluginError
from b12screen.plugins import HOOK_NAMES, collect_modifiers
from b12screen.testing import fresh_plugin_manager

ITEM = re.compile(r"^(\d)\. (.*?)(?=^\d\. |^\n)", re.S | re.M)


def _plugin(*modifiers: Modifier) -> object:
    class Plugin:
        @hookimpl
        def b12screen_modifiers(self) -> list[Modifier]:
            return list(modifiers)

    return Plugin()


def _metformin_patient() -> dict:
    return bundle(patient("p1"), metformin_request("r1", "p1", "2020-01-01"))


def _screen(*plugins: object) -> tuple[Screener, object]:
    screener = Screener(plugin_manager=fresh_plugin_manager(*plugins))
    [result] = screener.screen(_metformin_patient(), AS_OF)
    return screener, result


def _drop_all(ctx: DecisionContext) -> None:
    if ctx.candidates:
        ctx.modifiers["SITE-DROP"] = []
        ctx.candidates.clear()


def test_the_modifier_list_is_the_outcome_order_of_the_clinical_rules() -> None:
    page = (ROOT / "docs" / "reference" / "clinical-rules.md").read_text(encoding="utf-8")
    section = page.split("## 4.")[1].split("## 5.")[0]
    documented = [(int(step), mod) for step, text in ITEM.findall(section)
                  for mod in re.findall(r"MOD-[A-Z0-9-]*[A-Z0-9]", text)]
    assert len(documented) >= 10
    by_id = {m.id: m for m in MODIFIERS}
    assert [(by_id[mod].step, mod) for _, mod in documented] == documented
    listed = [m.id for m in MODIFIERS if m.id in {mod for _, mod in documented}]
    assert listed == [mod for _, mod in documented]
    assert [m.step for m in MODIFIERS] == sorted(m.step for m in MODIFIERS) and set(STEPS) == set(range(1, 9))
    assert in_order() == MODIFIERS


def test_modifiers_rules_note_themselves_have_no_apply_and_the_rest_do() -> None:
    assert [m.id for m in MODIFIERS if m.apply is None] == ["MOD-STOPPED"]


def test_b12screen_modifiers_hook_is_specified_and_collected_sorted_by_id() -> None:
    assert "b12screen_modifiers" in HOOK_NAMES
    manager = fresh_plugin_manager()
    manager.register(_plugin(Modifier("SITE-B", 3, "b", _drop_all), Modifier("SITE-A", 8, "a", _drop_all)), "site")
    assert [(owner, m.id) for owner, m in collect_modifiers(manager)] == [("site", "SITE-A"), ("site", "SITE-B")]
    ids = [m.id for m in Screener(plugin_manager=manager).modifiers]
    assert ids.index("SITE-B") == ids.index("MOD-TX-IM") + 1 and ids[-1] == "SITE-A"


def test_b12screen_modifiers_run_at_their_step_after_the_builtins_and_in_id_order() -> None:
    seen: list[tuple[str, list[str], list[str]]] = []

    def record(name: str):
        def apply(ctx: DecisionContext) -> None:
            seen.append((name, sorted(ctx.candidates), sorted(ctx.modifiers)))
        return apply

    for order in ((("Z", 5), ("A", 5)), (("A", 5), ("Z", 5))):
        seen.clear()
        _screen(*(_plugin(Modifier(f"SITE-{n}", step, n, record(n))) for n, step in order))
        assert [name for name, _, _ in seen] == ["A", "Z"]
    assert seen[0][1] == ["MET-2"]


def test_b12screen_modifiers_decide_the_outcome_at_their_step() -> None:
    _, plain = _screen()
    assert plain.outcome == "suggest-b12-test" and plain.rules == ["MET-2"]

    def not_evaluated(ctx: DecisionContext) -> Decision:
        return Decision(NOT_EVALUATED, modifiers={"SITE-STOP": []}, test=None)

    _, stopped = _screen(_plugin(Modifier("SITE-STOP", 1, "stop", not_evaluated)))
    assert (stopped.outcome, stopped.modifiers, stopped.recommended_test) == (NOT_EVALUATED, ["SITE-STOP"], None)
    # removing every candidate at step 6 leads to the step's own check: suppressed
    _, dropped = _screen(_plugin(Modifier("SITE-DROP", 6, "drop", _drop_all)))
    assert (dropped.outcome, dropped.modifiers, dropped.rules) == (SUPPRESSED, ["SITE-DROP"], [])
    # at step 5 the same modifier meets the step's own check "no rule triggered"
    _, early = _screen(_plugin(Modifier("SITE-DROP", 5, "drop", _drop_all)))
    assert (early.outcome, early.modifiers) == ("no-suggestion", ["SITE-DROP"])


def test_b12screen_modifiers_change_the_ruleset_version_and_explain_lists_them() -> None:
    plain, _ = _screen()
    screener, _ = _screen(_plugin(Modifier("SITE-DROP", 6, "drop every rule", _drop_all)))
    assert screener.ruleset_version != plain.ruleset_version
    assert screener.modifier_owners == {"SITE-DROP": "Plugin"}
    [record] = _records(screener)
    listed = explain(screener, record, AS_OF)["modifiers"]
    assert [m["id"] for m in listed] == [m.id for m in screener.modifiers]
    site = next(m for m in listed if m["id"] == "SITE-DROP")
    assert site == {"id": "SITE-DROP", "step": 6, "effect": "drop every rule", "applied": True, "figures": []}


def _records(screener: Screener) -> list:
    from b12screen.screening import group
    from b12screen.sources import read_value
    from b12screen.sources.validation import ALL

    return [p.record() for p in group(screener, read_value(_metformin_patient(), "t"), ALL).patients.values()]


@pytest.mark.parametrize("names", [("alpha", "beta"), ("beta", "alpha")])
def test_b12screen_modifiers_duplicate_ids_name_both_plugins(names: tuple[str, str]) -> None:
    manager = fresh_plugin_manager()
    for name in names:
        manager.register(_plugin(Modifier("SITE-1", 2, "x", _drop_all)), name)
    with pytest.raises(DuplicateRuleError, match="modifier id 'SITE-1' is defined by both 'alpha' and 'beta'"):
        Screener(plugin_manager=manager)


def test_b12screen_modifiers_may_not_reuse_a_builtin_id() -> None:
    with pytest.raises(DuplicateRuleError, match="'MOD-LOW' is defined by both 'b12screen' and 'Plugin'"):
        Screener(plugin_manager=fresh_plugin_manager(_plugin(Modifier("MOD-LOW", 4, "x", _drop_all))))


@pytest.mark.parametrize("bad, message", [
    (Modifier("SITE-1", 0, "x", _drop_all), "needs a step 1-8"),
    (Modifier("SITE-1", 9, "x", _drop_all), "needs a step 1-8"),
    (Modifier("SITE-1", 3, "x"), "and an apply function"),
    ("SITE-1", "returned str, not a Modifier"),
])
def test_b12screen_modifiers_malformed_is_a_plugin_error_naming_the_plugin(bad: object, message: str) -> None:
    manager = fresh_plugin_manager()
    manager.register(_plugin(bad), "site-mods")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=message) as excinfo:
        Screener(plugin_manager=manager)
    assert "site-mods" in str(excinfo.value)


def test_explain_names_the_step_a_plugin_modifier_decided_at() -> None:
    def suppress(ctx: DecisionContext) -> Decision:
        return ctx.done(SUPPRESSED)

    screener, result = _screen(_plugin(Modifier("SITE-HOLD", 3, "hold", suppress)))
    [record] = _records(screener)
    assert result.outcome == SUPPRESSED
    assert explain(screener, record, AS_OF)["decided_at"] == {"step": 3, "what": STEPS[3]}
    plain = Screener(plugin_manager=fresh_plugin_manager())
    assert explain(plain, record, AS_OF)["decided_at"]["step"] == 8


def test_b12screen_modifiers_that_raise_are_reported_and_skipped_like_a_failing_rule() -> None:
    def broken(ctx: DecisionContext) -> None:
        raise KeyError("oops")

    _, plain = _screen()
    _, result = _screen(_plugin(Modifier("SITE-BROKEN", 6, "broken", broken)))
    assert result.rule_errors == [{"rule": "SITE-BROKEN", "error": "KeyError: 'oops'"}]
    assert (result.outcome, result.rules, result.modifiers) == (plain.outcome, plain.rules, plain.modifiers)
    assert plain.rule_errors == []


def test_mod_preg_is_noted_only_while_a_rule_is_still_in_play() -> None:
    from b12screen.core import decision
    from b12screen.core.model import Finding, Priority
    from b12screen.testing import make_condition, make_patient, record_from

    screener = Screener(plugin_manager=fresh_plugin_manager())
    record = record_from(make_patient("p1", "1990-01-01", gender="female"),
                         make_condition("77386006", onset="2026-09-01"))

    def context(candidates: dict) -> DecisionContext:
        return DecisionContext(record, AS_OF, screener.settings, "default", Bands(), screener.rules_by_id, candidates)

    empty = context({})
    decision.pregnant(empty)
    assert empty.modifiers == {}
    busy = context({"MET-2": decision.Candidate(Finding("MET-2", "x", ()), Priority.MEDIUM, 24.0)})
    decision.pregnant(busy)
    assert list(busy.modifiers) == ["MOD-PREG"] and busy.modifiers["MOD-PREG"]
