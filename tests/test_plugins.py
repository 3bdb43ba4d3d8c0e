"""The plugin system: registration, value-set contributions, duplicates, failing imports, listing."""

from __future__ import annotations

import json
import sys
import types
from importlib import metadata

import pytest
from click.testing import CliRunner
from conftest import AS_OF, bundle, patient

from b12screen import Finding, Priority, Rule, Screener, hookimpl
from b12screen.cli import cli
from b12screen.errors import DuplicateRuleError, PluginError
from b12screen.plugins import describe_plugins, get_plugin_manager

LOCAL_VS = {
    "resourceType": "ValueSet", "id": "local-test-drug", "url": "https://example.org/ValueSet/local-test-drug",
    "status": "active",
    "compose": {"include": [{"system": "https://example.org/formulary", "concept": [{"code": "X1"}]}]},
}


def _local_rule(ctx) -> Finding | None:
    uses = ctx.record.active_uses(("local-test-drug",), ctx.as_of)
    return Finding("LOCAL-1", "on the local test drug", tuple(u.ref for u in uses)) if uses else None


class LocalPlugin:
    @hookimpl
    def b12screen_rules(self) -> list[Rule]:
        return [Rule(id="LOCAL-1", title="Local test drug", version="0.1", basis="test", evaluate=_local_rule,
                     priority=Priority.HIGH, window_months=12)]

    @hookimpl
    def b12screen_value_sets(self) -> list[dict]:
        return [LOCAL_VS]


def _local_drug_bundle() -> dict:
    request = {
        "resourceType": "MedicationRequest", "id": "local-req", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "https://example.org/formulary", "code": "X1"}]},
        "subject": {"reference": "Patient/local"}, "authoredOn": "2026-01-01",
    }
    return bundle(patient("local"), request)


@pytest.fixture
def local_plugin(plugin_manager):
    plugin_manager.register(LocalPlugin(), name="local-test-plugin")
    yield plugin_manager
    plugin_manager.unregister("local-test-plugin")


def test_registered_plugin_rule_and_value_set_are_used(local_plugin) -> None:
    screener = Screener(plugin_manager=local_plugin)
    assert "LOCAL-1" in screener.rules_by_id
    [result] = screener.screen(_local_drug_bundle(), AS_OF)
    assert result.outcome == "suggest-b12-test"
    assert result.rules == ["LOCAL-1"] and result.priority == "high"
    assert result.evidence == ["MedicationRequest/local-req"]


def test_without_the_plugin_the_same_data_gives_no_suggestion(plugin_manager) -> None:
    [result] = Screener(plugin_manager=plugin_manager).screen(_local_drug_bundle(), AS_OF)
    assert result.outcome == "no-suggestion"


def test_plugin_adds_codes_to_a_builtin_value_set(plugin_manager) -> None:
    class LocalCodes:
        @hookimpl
        def b12screen_value_sets(self) -> list[dict]:
            return [{"resourceType": "ValueSet", "id": "metformin", "compose": {"include": [
                {"system": "https://example.org/formulary", "concept": [{"code": "MET-LOCAL"}]}]}}]

    plugin_manager.register(LocalCodes(), name="local-codes")
    screener = Screener(plugin_manager=plugin_manager)
    assert screener.terminology.match_code("https://example.org/formulary", "MET-LOCAL") == {"metformin"}
    assert screener.terminology.match_code("http://www.nlm.nih.gov/research/umls/rxnorm", "6809") == {"metformin"}


def test_duplicate_rule_ids_are_refused_naming_both_plugins(plugin_manager) -> None:
    class Clash:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            return [Rule(id="MET-1", title="clash", version="1", basis="x", evaluate=lambda ctx: None)]

    plugin_manager.register(Clash(), name="clashing-plugin")
    with pytest.raises(DuplicateRuleError) as excinfo:
        Screener(plugin_manager=plugin_manager)
    assert "b12screen.rules.medication" in str(excinfo.value) and "clashing-plugin" in str(excinfo.value)


def test_hook_returning_wrong_type_is_a_plugin_error(plugin_manager) -> None:
    class Wrong:
        @hookimpl
        def b12screen_rules(self):
            return "MET-9"

    plugin_manager.register(Wrong(), name="wrong")
    with pytest.raises(PluginError, match="wrong"):
        Screener(plugin_manager=plugin_manager)


def test_rule_that_raises_becomes_an_error_for_that_patient_only(plugin_manager) -> None:
    class Faulty:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def boom(ctx):
                if ctx.record.key == "Patient/bad":
                    raise RuntimeError("boom")
                return None

            return [Rule(id="ZZ-FAULTY", title="faulty", version="1", basis="x", evaluate=boom)]

    plugin_manager.register(Faulty(), name="faulty")
    data = bundle(patient("bad"), patient("good"))
    results = {r.patient: r for r in Screener(plugin_manager=plugin_manager).screen(data, AS_OF)}
    assert results["Patient/bad"].rule_errors == [{"rule": "ZZ-FAULTY", "error": "RuntimeError: boom"}]
    assert results["Patient/good"].rule_errors == []


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: metadata.EntryPoint) -> None:
    real = metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == "b12screen":
            return metadata.EntryPoints(eps)
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", fake)


@pytest.fixture
def installed_plugins(monkeypatch: pytest.MonkeyPatch):
    """Two entry points: one importable module, one that raises on import."""
    monkeypatch.delenv("B12SCREEN_LOAD_PLUGINS", raising=False)
    good = types.ModuleType("b12screen_test_good_plugin")
    exec(
        "from b12screen import hookimpl\n"
        "@hookimpl\n"
        "def b12screen_value_sets():\n"
        "    return []\n",
        good.__dict__,
    )
    monkeypatch.setitem(sys.modules, "b12screen_test_good_plugin", good)
    _fake_entry_points(
        monkeypatch,
        metadata.EntryPoint("good", "b12screen_test_good_plugin", "b12screen"),
        metadata.EntryPoint("broken", "b12screen_module_that_does_not_exist", "b12screen"),
    )


def test_failing_plugin_is_reported_and_the_rest_load(installed_plugins) -> None:
    manager = get_plugin_manager()
    assert [f.name for f in manager.failures] == ["broken"]
    assert "ModuleNotFoundError" in manager.failures[0].error
    assert manager.pm.has_plugin("good")
    rows = {row["name"]: row for row in describe_plugins(manager)}
    assert rows["broken"]["status"] == "failed"
    assert rows["good"]["hooks"] == ["b12screen_value_sets"]
    assert rows["b12screen.rules.medication"]["rules"] == ["ACID-1", "ACID-2", "MET-1", "MET-2", "MET-3"]


def test_strict_mode_makes_a_failing_plugin_fatal(installed_plugins) -> None:
    with pytest.raises(PluginError, match="broken"):
        get_plugin_manager(strict=True)


def test_environment_selects_and_blocks_plugins(installed_plugins, monkeypatch) -> None:
    monkeypatch.setenv("B12SCREEN_LOAD_PLUGINS", "good")
    manager = get_plugin_manager()
    assert manager.failures == [] and manager.pm.has_plugin("good")
    monkeypatch.delenv("B12SCREEN_LOAD_PLUGINS")
    monkeypatch.setenv("B12SCREEN_DISABLE_PLUGINS", "broken,good")
    manager = get_plugin_manager()
    assert manager.failures == [] and not manager.pm.has_plugin("good")


def test_cli_plugins_and_rules_list_what_is_loaded(installed_plugins) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} >= {"b12screen.rules.medication", "good", "broken"}
    assert "broken" in result.stderr
    strict = runner.invoke(cli, ["plugins", "--strict"])
    assert strict.exit_code == 1 and "broken" in strict.stderr
    rules = runner.invoke(cli, ["rules", "--json"])
    assert rules.exit_code == 0
    listed = {r["id"]: r for r in json.loads(rules.stdout)}
    assert set(listed) >= {"MET-1", "MET-2", "ACID-1", "ACID-2"}
    assert listed["MET-2"]["basis"] and listed["MET-2"]["status"] == "suggests"
    nice = {r["id"]: r for r in json.loads(runner.invoke(cli, ["rules", "--json", "--profile", "nice"]).stdout)}
    assert nice["MET-2"]["status"] == "risk factor only"
    off = {r["id"]: r for r in json.loads(runner.invoke(cli, ["rules", "--json", "--disable", "MET-1"]).stdout)}
    assert off["MET-1"]["status"] == "disabled" and off["MET-1"]["enabled"] is False
