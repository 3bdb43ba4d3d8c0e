"""Each hook on its own (b12screen_rules, b12screen_value_sets), hook validation, install-order
independence, entry-point loading and its controls, and rule failures through the CLI."""

from __future__ import annotations

import json
import logging
import types
from datetime import date

import pytest
from click.testing import CliRunner
from conftest import AS_OF, bundle, metformin_request, patient

from b12screen import Finding, Priority, Rule, RuleContext, Screener, hookimpl
from b12screen.cli import cli
from b12screen.errors import DuplicateRuleError, PluginError
from b12screen.plugins import HOOK_NAMES, collect_rules, describe_plugins, get_plugin_manager
from b12screen.sinks.flag import flag_json
from b12screen.testing import fresh_plugin_manager, screen_resources

SITE = "https://hospital.example.org/fhir/CodeSystem/formulary"


def _rule(rule_id: str, stage: int = 1, evaluate=lambda ctx: None, **extra) -> Rule:
    return Rule(id=rule_id, title=rule_id, version="1.0.0", basis="test", evaluate=evaluate, stage=stage, **extra)


def _rules_plugin(*rules: Rule) -> object:
    class Plugin:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            return list(rules)

    return Plugin()


def _value_sets_plugin(*value_sets: dict) -> object:
    class Plugin:
        @hookimpl
        def b12screen_value_sets(self) -> list[dict]:
            return list(value_sets)

    return Plugin()


def _local_vs(vs_id: str, code: str, *terms: str) -> dict:
    return {
        "resourceType": "ValueSet", "id": vs_id,
        "extension": [{"url": "https://b12screen.org/fhir/StructureDefinition/valueset-match-text", "valueString": t}
                      for t in terms],
        "compose": {"include": [{"system": SITE, "concept": [{"code": code}]}]},
    }


def _site_drug_rule(ctx: RuleContext) -> Finding | None:
    uses = ctx.record.active_uses(("site-drug",), ctx.as_of)
    return Finding("SITE-DRUG", "on the site drug", tuple(u.ref for u in uses)) if uses else None


# -- b12screen_rules ----------------------------------------------------------------------------------


def test_b12screen_rules_hook_is_specified_and_collected_sorted_by_stage_then_id() -> None:
    assert {"b12screen_rules", "b12screen_value_sets"} == HOOK_NAMES
    manager = fresh_plugin_manager()
    manager.register(_rules_plugin(_rule("ZZ-B", stage=0), _rule("ZZ-A", stage=3), _rule("AA-Z", stage=1)), "site")
    collected = collect_rules(manager)
    keys = [(r.stage, r.id) for _, r in collected]
    assert keys == sorted(keys)
    owners = {r.id: plugin for plugin, r in collected}
    assert owners["ZZ-B"] == owners["ZZ-A"] == "site" and owners["MET-1"] == "b12screen.rules.medication"


def test_b12screen_rules_are_evaluated_in_stage_then_id_order_whatever_the_registration_order() -> None:
    def order(*registrations: tuple[str, object]) -> list[str]:
        seen: list[str] = []

        def recorder(rule_id: str):
            return lambda ctx: seen.append(rule_id)

        manager = fresh_plugin_manager(builtins=False)
        for name, ids in registrations:
            manager.register(_rules_plugin(*(_rule(i, stage=s, evaluate=recorder(i)) for i, s in ids)), name)
        screen_resources(patient("p1"), as_of=AS_OF, plugin_manager=manager)
        return seen

    a = ("a", [("Z-1", 0), ("B-1", 2)])
    b = ("b", [("A-1", 1), ("C-1", 0)])
    assert order(a, b) == order(b, a) == ["C-1", "Z-1", "A-1", "B-1"]


def test_b12screen_rules_duplicate_ids_name_both_plugins_in_either_registration_order() -> None:
    messages = []
    for names in (("alpha", "beta"), ("beta", "alpha")):
        manager = fresh_plugin_manager(builtins=False)
        for name in names:
            manager.register(_rules_plugin(_rule("SITE-1")), name)
        with pytest.raises(DuplicateRuleError) as excinfo:
            Screener(plugin_manager=manager)
        messages.append(str(excinfo.value))
    assert messages[0] == messages[1] == "rule id 'SITE-1' is defined by both 'alpha' and 'beta'"


def test_b12screen_rules_returning_none_or_empty_adds_nothing() -> None:
    class Quiet:
        @hookimpl
        def b12screen_rules(self):
            return None

    manager = fresh_plugin_manager(Quiet(), _rules_plugin())
    assert [r.id for r in Screener(plugin_manager=manager).rules] == [r.id for r in Screener(
        plugin_manager=fresh_plugin_manager()).rules]


def test_b12screen_rules_that_raise_are_a_plugin_error_naming_the_plugin() -> None:
    class Raises:
        @hookimpl
        def b12screen_rules(self):
            raise KeyError("oops")

    manager = fresh_plugin_manager(Raises())
    with pytest.raises(PluginError, match=r"plugin 'Raises': b12screen_rules\(\) raised KeyError"):
        Screener(plugin_manager=manager)
    rows = {row["name"]: row for row in describe_plugins(manager)}
    assert rows["Raises"]["status"] == "error" and "KeyError" in rows["Raises"]["error"]


def test_b12screen_rules_is_called_once_per_screener() -> None:
    calls = []

    class Counting:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            calls.append(1)
            return [_rule("SITE-1")]

    screener = Screener(plugin_manager=fresh_plugin_manager(Counting()))
    screener.screen(bundle(patient("a"), patient("b")), AS_OF)
    assert len(calls) == 1


# -- b12screen_value_sets -----------------------------------------------------------------------------


def test_b12screen_value_sets_new_set_is_used_by_a_plugin_rule() -> None:
    plugin = _value_sets_plugin(_local_vs("site-drug", "D1", "sitedrugamine"))
    rules = _rules_plugin(_rule("SITE-DRUG", evaluate=_site_drug_rule, priority=Priority.HIGH, window_months=12))
    coded = metformin_request("r1", "p1", "2026-01-01")
    coded["medicationCodeableConcept"] = {"coding": [{"system": SITE, "code": "D1"}]}
    by_text = metformin_request("r2", "p2", "2026-01-01")
    by_text["medicationCodeableConcept"] = {"text": "Sitedrugamine 5 mg tablet"}
    results = screen_resources(patient("p1"), coded, patient("p2"), by_text, as_of=AS_OF, plugins=[plugin, rules])
    assert [(r.patient, r.rules, r.priority) for r in results] == [
        ("Patient/p1", ["SITE-DRUG"], "high"), ("Patient/p2", ["SITE-DRUG"], "high")]


def test_b12screen_value_sets_with_a_builtin_id_add_codes_to_it() -> None:
    plugin = _value_sets_plugin(_local_vs("metformin", "MET-LOCAL"))
    terminology = Screener(plugin_manager=fresh_plugin_manager(plugin)).terminology
    assert terminology.match_code(SITE, "MET-LOCAL") == {"metformin"}
    assert terminology.match_code("http://www.nlm.nih.gov/research/umls/rxnorm", "6809") == {"metformin"}
    assert terminology.sets["metformin"].contributors == ["b12screen", "Plugin"]


def test_b12screen_value_sets_are_merged_in_plugin_name_order() -> None:
    for names in (("site-b", "site-a"), ("site-a", "site-b")):
        manager = fresh_plugin_manager(builtins=False)
        for name in names:
            manager.register(_value_sets_plugin(_local_vs("shared", f"code-{name}")), name)
        info = Screener(plugin_manager=manager).terminology.sets["shared"]
        assert info.contributors == ["site-a", "site-b"]
        assert info.codes[SITE] == {"code-site-a", "code-site-b"}


@pytest.mark.parametrize("bad, message", [
    ({"resourceType": "CodeSystem", "id": "x"}, "must be a FHIR ValueSet"),
    ({"resourceType": "ValueSet"}, "without an id"),
    ({"resourceType": "ValueSet", "id": "x", "compose": {"include": [{"concept": [{"code": "1"}]}]}},
     "include without a system"),
])
def test_b12screen_value_sets_malformed_is_a_plugin_error_naming_the_plugin(bad: dict, message: str) -> None:
    manager = fresh_plugin_manager(builtins=False)
    manager.register(_value_sets_plugin(bad), "site-codes")
    with pytest.raises(PluginError, match=message) as excinfo:
        Screener(plugin_manager=manager)
    assert "site-codes" in str(excinfo.value)


def test_b12screen_value_sets_returning_a_dict_instead_of_a_list_is_a_plugin_error() -> None:
    class Wrong:
        @hookimpl
        def b12screen_value_sets(self):
            return _local_vs("x", "1")

    with pytest.raises(PluginError, match=r"b12screen_value_sets\(\) must return a list"):
        Screener(plugin_manager=fresh_plugin_manager(Wrong()))


# -- hook validation -----------------------------------------------------------------------------------


def test_a_misspelt_hook_is_refused_with_a_suggestion() -> None:
    class Typo:
        @hookimpl
        def b12screen_rule(self):
            return []

    with pytest.raises(PluginError, match=r"b12screen_rule\(\) is marked @hookimpl .*did you mean b12screen_rules"):
        fresh_plugin_manager(Typo())


def test_a_hook_function_without_hookimpl_is_refused() -> None:
    class Unmarked:
        def b12screen_rules(self):
            return []

    with pytest.raises(PluginError, match=r"b12screen_rules\(\) is not marked with @hookimpl"):
        fresh_plugin_manager(Unmarked())


def test_a_hook_with_a_wrong_signature_is_refused() -> None:
    class WrongArgs:
        @hookimpl
        def b12screen_rules(self, profile):
            return []

    with pytest.raises(PluginError, match="WrongArgs"):
        fresh_plugin_manager(WrongArgs())


# -- output never depends on install order ----------------------------------------------------------------


def test_screening_output_is_identical_whatever_the_registration_order() -> None:
    drug = _value_sets_plugin(_local_vs("site-drug", "D1"))
    extra = _value_sets_plugin(_local_vs("metformin", "MET-LOCAL"))
    rules = _rules_plugin(_rule("SITE-DRUG", evaluate=_site_drug_rule, priority=Priority.MEDIUM, window_months=24))
    request = metformin_request("r1", "p1", "2020-01-01")
    local = metformin_request("r2", "p1", "2025-01-01")
    local["medicationCodeableConcept"] = {"coding": [{"system": SITE, "code": "D1"}]}
    data = bundle(patient("p1"), request, local)

    def run(order: list[tuple[str, object]]) -> str:
        manager = fresh_plugin_manager()
        for name, plugin in order:
            manager.register(plugin, name)
        results = Screener(plugin_manager=manager).screen(data, AS_OF)
        return json.dumps([[r.report(), flag_json(r)] for r in results], sort_keys=True)

    plugins = [("drug", drug), ("extra", extra), ("rules", rules)]
    assert run(plugins) == run(list(reversed(plugins))) == run([plugins[1], plugins[2], plugins[0]])


# -- entry points and their controls ----------------------------------------------------------------------


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, value in hooks.items():
        module.__dict__[hook] = hookimpl(lambda value=value: value)
    return module


def test_entry_point_plugins_are_discovered_with_distribution_and_version(fake_entry_points) -> None:
    fake_entry_points(site=_module("site", b12screen_rules=[_rule("SITE-1")]),
                      dists={"site": ("b12screen-site", "1.2.3")})
    rows = {row["name"]: row for row in describe_plugins(get_plugin_manager())}
    assert rows["site"] == {"name": "site", "distribution": "b12screen-site", "version": "1.2.3", "builtin": False,
                            "hooks": ["b12screen_rules"], "rules": ["SITE-1"], "status": "loaded"}


def test_an_entry_point_plugin_with_a_misspelt_hook_is_reported_as_failed(fake_entry_points) -> None:
    fake_entry_points(typo=types.SimpleNamespace(b12screen_rulez=hookimpl(lambda: [])))
    manager = get_plugin_manager()
    [failure] = manager.failures
    assert failure.name == "typo" and "b12screen_rulez" in failure.error
    with pytest.raises(PluginError, match="typo"):
        get_plugin_manager(strict=True)


def test_two_distributions_with_one_entry_point_name_are_resolved_by_name_not_install_order(
        fake_entry_points, monkeypatch) -> None:
    first = _module("first", b12screen_rules=[_rule("SITE-A")])
    second = _module("second", b12screen_rules=[_rule("SITE-B")])
    from importlib import metadata

    eps = [metadata.EntryPoint("site", "b12screen_test_first", "b12screen")._for(
               types.SimpleNamespace(name="b12screen-zzz", version="1")),
           metadata.EntryPoint("site", "b12screen_test_second", "b12screen")._for(
               types.SimpleNamespace(name="b12screen-aaa", version="1"))]
    fake_entry_points(first=first, second=second)
    for ordering in (eps, list(reversed(eps))):
        monkeypatch.setattr(metadata, "entry_points",
                            lambda ordering=ordering, **kw: metadata.EntryPoints(ordering))
        manager = get_plugin_manager()
        assert [r.id for _, r in collect_rules(manager) if r.id.startswith("SITE")] == ["SITE-B"]
        [failure] = manager.failures
        assert failure.distribution == "b12screen-zzz" and "already used by b12screen-aaa" in failure.error


def test_load_plugins_selects_by_entry_point_or_distribution_name(fake_entry_points, monkeypatch, caplog) -> None:
    fake_entry_points(one=_module("one", b12screen_rules=[_rule("ONE-1")]),
                      two=_module("two", b12screen_rules=[_rule("TWO-1")]),
                      dists={"two": ("b12screen-two", "0.1")})
    monkeypatch.setenv("B12SCREEN_LOAD_PLUGINS", "one")
    assert get_plugin_manager().pm.has_plugin("one") and not get_plugin_manager().pm.has_plugin("two")
    monkeypatch.setenv("B12SCREEN_LOAD_PLUGINS", "b12screen-two, nosuch")
    with caplog.at_level(logging.WARNING, logger="b12screen.plugins"):
        manager = get_plugin_manager()
    assert manager.pm.has_plugin("two") and not manager.pm.has_plugin("one")
    assert "'nosuch'" in caplog.text
    monkeypatch.setenv("B12SCREEN_LOAD_PLUGINS", "")
    manager = get_plugin_manager()
    assert not manager.pm.has_plugin("one") and not manager.pm.has_plugin("two")


def test_disable_plugins_blocks_installed_and_builtin_plugins(fake_entry_points, monkeypatch) -> None:
    fake_entry_points(one=_module("one", b12screen_rules=[_rule("ONE-1")]), broken="cannot load")
    monkeypatch.setenv("B12SCREEN_DISABLE_PLUGINS", "one,broken,b12screen.rules.diet")
    manager = get_plugin_manager()
    assert manager.failures == []
    ids = {r.id for _, r in collect_rules(manager)}
    assert "ONE-1" not in ids and "DIET-V" not in ids and "MET-1" in ids


def test_strict_plugins_from_the_environment(fake_entry_points, monkeypatch) -> None:
    fake_entry_points(broken="cannot load")
    assert [f.name for f in get_plugin_manager().failures] == ["broken"]
    monkeypatch.setenv("B12SCREEN_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken' failed to load: RuntimeError: cannot load"):
        get_plugin_manager()
    assert get_plugin_manager(strict=False).failures  # an explicit argument wins over the variable


# -- the CLI ---------------------------------------------------------------------------------------------


def _boom_for_bad_patient(ctx: RuleContext) -> Finding | None:
    if ctx.record.key == "Patient/bad":
        raise RuntimeError("boom")
    return None


def test_cli_rule_error_for_one_patient_is_reported_the_rest_runs_and_exit_is_1(fake_entry_points, tmp_path) -> None:
    fake_entry_points(faulty=_module("faulty", b12screen_rules=[_rule("ZZ-BOOM", evaluate=_boom_for_bad_patient)]))
    path = tmp_path / "in.json"
    path.write_text(json.dumps(bundle(patient("bad", "1975-01-01"), metformin_request("r1", "bad", "2024-01-01"),
                                      patient("good", "1975-01-01"), metformin_request("r2", "good", "2024-01-01"))))
    result = CliRunner().invoke(cli, ["screen", "--as-of", AS_OF.isoformat(), "--format", "report", str(path)])
    assert result.exit_code == 1
    assert "error: rule ZZ-BOOM failed for one patient (RuntimeError: boom)" in result.stderr
    assert "1 rule error(s)" in result.stderr
    report = {entry["patient"]: entry for entry in json.loads(result.stdout)}
    assert report["Patient/bad"]["errors"] == [{"rule": "ZZ-BOOM", "error": "RuntimeError: boom"}]
    assert "errors" not in report["Patient/good"]
    for entry in report.values():  # the other rules ran for both patients
        assert entry["outcome"] == "suggest-b12-test" and entry["rules"] == ["MET-1"]
    flags = CliRunner().invoke(cli, ["screen", "--as-of", AS_OF.isoformat(), "--format", "ndjson", str(path)])
    assert flags.exit_code == 1 and len(flags.stdout.splitlines()) == 2


def test_cli_reports_a_broken_plugin_by_name_and_strict_mode_makes_it_fatal(fake_entry_points, monkeypatch,
                                                                          tmp_path) -> None:
    fake_entry_points(broken="deliberately broken", site=_module("site", b12screen_rules=[_rule("SITE-1")]))
    path = tmp_path / "in.json"
    path.write_text(json.dumps(bundle(patient("p1", "1975-01-01"), metformin_request("r1", "p1", "2024-01-01"))))
    runner = CliRunner()
    screen = runner.invoke(cli, ["screen", "--as-of", "2026-11-24", "--format", "report", str(path)])
    assert screen.exit_code == 0 and "plugin 'broken' failed to load" in screen.stderr
    assert json.loads(screen.stdout)[0]["rules"] == ["MET-1"]
    rules = runner.invoke(cli, ["rules", "--json"])
    assert rules.exit_code == 0 and {"id": "SITE-1", "plugin": "site"}.items() <= next(
        r for r in json.loads(rules.stdout) if r["id"] == "SITE-1").items()
    listing = runner.invoke(cli, ["plugins"])
    assert listing.exit_code == 0 and "broken" in listing.stdout and "FAILED: RuntimeError: deliberately broken" \
        in listing.stdout
    assert runner.invoke(cli, ["screen", "--strict-plugins", "--as-of", "2026-11-24", str(path)]).exit_code == 2
    assert runner.invoke(cli, ["rules", "--strict-plugins"]).exit_code == 2
    assert runner.invoke(cli, ["plugins", "--strict-plugins"]).exit_code == 1
    monkeypatch.setenv("B12SCREEN_STRICT_PLUGINS", "1")
    strict = runner.invoke(cli, ["screen", "--as-of", "2026-11-24", str(path)])
    assert strict.exit_code == 2 and "plugin 'broken' failed to load" in strict.stderr
    monkeypatch.setenv("B12SCREEN_DISABLE_PLUGINS", "broken")
    assert runner.invoke(cli, ["screen", "--as-of", "2026-11-24", str(path)]).exit_code == 0


def test_cli_plugins_exits_1_when_a_plugin_rules_hook_raises(fake_entry_points) -> None:
    module = types.ModuleType("raising")
    module.b12screen_rules = hookimpl(lambda: 1 / 0)
    fake_entry_points(raising=module)
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr
    row = next(r for r in json.loads(result.stdout) if r["name"] == "raising")
    assert row["status"] == "error"


def test_as_of_is_honoured_by_plugin_rules() -> None:
    rules = _rules_plugin(_rule("SITE-DATE", evaluate=lambda ctx: Finding("SITE-DATE", ctx.as_of.isoformat()),
                                priority=Priority.LOW, window_months=12))
    [result] = screen_resources(patient("p1"), as_of=date(2025, 1, 2), plugins=[rules])
    assert result.reasons == {"SITE-DATE": "2025-01-02"}
