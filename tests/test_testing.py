"""b12screen.testing: the helpers plugin authors use, kept in step with the engine."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import AS_OF, FIXTURES
from fhir.resources.R4B import get_fhir_model_class

from b12screen import Config, Finding, Priority, Rule, hookimpl
from b12screen.plugins import describe_plugins
from b12screen.screening import group
from b12screen.sources import read_path
from b12screen.sources.validation import ALL
from b12screen.testing import (
    ICD10CM,
    LOINC,
    fresh_plugin_manager,
    make_condition,
    make_medication_request,
    make_observation,
    make_patient,
    make_procedure,
    make_screener,
    record_from,
    run_rule,
    screen_resources,
)

EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def _fixture_cases() -> list[str]:
    return sorted(name for name in EXPECTED if (FIXTURES / name).exists())


@pytest.mark.parametrize("name", _fixture_cases())
def test_run_rule_finds_what_the_engine_finds(name: str) -> None:
    """run_rule builds the RuleContext itself; this keeps it in step with Screener.run_rules."""
    case = EXPECTED[name]
    as_of = date.fromisoformat(case.get("as_of", AS_OF.isoformat()))
    screener = make_screener(profile=case.get("profile", "default"))
    grouped = group(screener, read_path(FIXTURES / name), ALL)
    assert grouped.patients
    for record in (p.record() for p in grouped.patients.values()):
        findings, _, errors = screener.run_rules(record, as_of)
        assert not errors
        for rule in screener.rules:
            assert run_rule(rule.id, record, as_of, screener=screener) == findings.get(rule.id), (record.key, rule.id)


def test_builders_make_valid_fhir_r4_resources() -> None:
    resources = [
        make_patient("p1", "1970-01-01", gender="female"),
        make_condition("K86.1", ICD10CM, onset="2022-01-01", display="Other chronic pancreatitis"),
        make_medication_request("861007", authored="2024-01-01", display="metformin hydrochloride 500 MG Oral Tablet"),
        make_observation("2132-9", LOINC, effective="2025-01-01", value=250, unit="pg/mL"),
        make_procedure("107938000", performed="2020-05-01"),
    ]
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert resources[1]["id"] == "condition-K86.1" and resources[0]["gender"] == "female"
    record = record_from(*resources)
    assert record.key == "Patient/p1" and record.age(AS_OF) == 56
    assert record.conditions == []  # K86.1 is in no built-in value set: not read
    assert [m.ref for m in record.medications] == ["MedicationRequest/medreq-861007"]
    assert [o.ref for o in record.observations] == ["Observation/obs-2132-9"]


def test_record_from_picks_a_patient_and_refuses_bad_input() -> None:
    two = [make_patient("a"), make_patient("b")]
    with pytest.raises(ValueError, match="2 patients"):
        record_from(*two)
    assert record_from(*two, patient="b").key == "Patient/b"
    assert record_from(two, patient="Patient/a").key == "Patient/a"
    with pytest.raises(KeyError, match="no patient 'Patient/c'"):
        record_from(*two, patient="c")
    with pytest.raises(ValueError, match="input problems"):
        record_from(make_patient(), {"resourceType": "Condition", "id": "x"})  # no subject
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in two]}
    assert record_from(bundle, patient="a").key == "Patient/a"


def test_run_rule_accepts_a_rule_object_and_lets_its_exception_propagate() -> None:
    rule = Rule(id="SITE-X", title="x", version="1", basis="test", evaluate=lambda ctx: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_rule(rule, [make_patient()], AS_OF)
    with pytest.raises(KeyError, match="no rule 'NOPE-1'"):
        run_rule("NOPE-1", [make_patient()], AS_OF)


def test_run_rule_applies_config_parameters() -> None:
    seen = []

    class Plugin:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def evaluate(ctx):
                seen.append(ctx.param("years"))
                return Finding("SITE-P", "p")

            return [Rule(id="SITE-P", title="p", version="1", basis="test", evaluate=evaluate, params={"years": 4},
                         priority=Priority.LOW)]

    run_rule("SITE-P", [make_patient()], AS_OF, plugins=[Plugin()])
    run_rule("SITE-P", [make_patient()], AS_OF, plugins=[Plugin()], config=Config(rules={"SITE-P": {"years": 2}}))
    assert seen == [4, 2]


def test_run_rule_sees_the_findings_of_earlier_stages() -> None:
    class Plugin:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            return [Rule(id="SITE-LATE", title="late", version="1", basis="test", stage=2,
                         evaluate=lambda ctx: Finding("SITE-LATE", ",".join(f.rule_id for f in ctx.triggered())))]

    resources = [make_patient("p1", "1975-01-01"), make_medication_request("861007", authored="2024-01-01")]
    finding = run_rule("SITE-LATE", resources, AS_OF, plugins=[Plugin()])
    assert finding is not None and finding.reason == "MET-1"


def test_fresh_plugin_manager_ignores_the_environment_and_installed_plugins(monkeypatch, fake_entry_points) -> None:
    fake_entry_points(broken="never imported")
    monkeypatch.setenv("B12SCREEN_DISABLE_PLUGINS", "b12screen.rules.medication")
    monkeypatch.setenv("B12SCREEN_STRICT_PLUGINS", "1")
    manager = fresh_plugin_manager()
    assert manager.failures == [] and manager.pm.has_plugin("b12screen.rules.medication")
    assert not manager.pm.has_plugin("broken")
    assert describe_plugins(fresh_plugin_manager(builtins=False)) == []


def test_screen_resources_returns_results_and_input_errors() -> None:
    results = screen_resources(make_patient("p1"), {"resourceType": "Nope"}, as_of=AS_OF)
    assert [r.patient for r in results] == ["Patient/p1"] and len(results.errors) == 1
