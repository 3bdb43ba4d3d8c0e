"""Tests of PANC-1 with the helpers b12screen gives plugin authors (b12screen.testing)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import b12screen_pancreas
import pytest
from b12screen_pancreas import RULES

from b12screen import Config
from b12screen.testing import (
    ATC,
    ICD10CM,
    SNOMED,
    make_condition,
    make_medication_request,
    make_patient,
    record_from,
    run_rule,
    screen_resources,
)

AS_OF = date(2026, 11, 24)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PLUGINS = [b12screen_pancreas]


def test_chronic_pancreatitis_triggers_panc_1() -> None:
    resources = [make_patient("p1", "1971-05-10"),
                 make_condition("235494005", SNOMED, onset="2022-03-01", display="Chronic pancreatitis")]
    finding = run_rule("PANC-1", resources, AS_OF, plugins=PLUGINS)
    assert finding is not None
    assert finding.reason == "Chronic pancreatitis (since 2022-03-01)"
    assert finding.evidence == ("Condition/condition-235494005",)


@pytest.mark.parametrize("code", ["K86.0", "K86.1", "K86.81", "K90.3", "Z90.410"])
def test_every_icd10cm_code_of_the_value_set_triggers(code: str) -> None:
    assert run_rule("PANC-1", [make_patient(), make_condition(code, ICD10CM)], AS_OF, plugins=PLUGINS)


def test_acute_pancreatitis_and_resolved_conditions_do_not_trigger() -> None:
    acute = [make_patient(), make_condition("K85.90", ICD10CM)]
    assert run_rule("PANC-1", acute, AS_OF, plugins=PLUGINS) is None
    resolved = [make_patient(), make_condition("K86.1", ICD10CM, clinical_status="resolved")]
    assert run_rule("PANC-1", resolved, AS_OF, plugins=PLUGINS) is None


def test_a_condition_recorded_after_the_as_of_date_is_ignored() -> None:
    later = [make_patient(), make_condition("K86.1", ICD10CM, onset="2027-01-01")]
    assert run_rule("PANC-1", later, AS_OF, plugins=PLUGINS) is None


def test_enzyme_therapy_alone_triggers_only_when_configured() -> None:
    resources = [make_patient(), make_medication_request("A09AA02", ATC, authored="2024-02-01")]
    assert run_rule("PANC-1", resources, AS_OF, plugins=PLUGINS) is None
    config = Config(rules={"PANC-1": {"enzyme_therapy_alone": True}})
    finding = run_rule("PANC-1", resources, AS_OF, plugins=PLUGINS, config=config)
    assert finding is not None and finding.evidence == ("MedicationRequest/medreq-A09AA02",)


def test_enzymes_are_read_from_brand_names_too() -> None:
    request = make_medication_request("X", "https://example.org/no-such-system", display="Creon 25000 capsule")
    record = record_from(make_patient(), request, plugins=PLUGINS)
    assert record.medications[0].concepts == {"panc-enzyme-replacement"}


def test_panc_1_counts_as_another_risk_factor_for_met_2() -> None:
    metformin = make_medication_request("861007", authored="2025-09-01")  # 15 months: MET-1 alone without PANC-1
    base = [make_patient("p1", "1968-08-20"), metformin]
    assert run_rule("MET-2", base, AS_OF, plugins=PLUGINS) is None
    with_cp = [*base, make_condition("K86.0", ICD10CM, onset="2019-01-01")]
    assert run_rule("MET-2", with_cp, AS_OF, plugins=PLUGINS) is not None


def test_the_rule_declares_its_basis_and_a_unique_id() -> None:
    [rule] = RULES
    assert rule.id == "PANC-1" and "Guéant" in rule.basis and rule.priority is not None


def test_fixture_outcomes_match_expected() -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    data = json.loads((FIXTURES / expected["fixture"]).read_text(encoding="utf-8"))
    results = screen_resources(data, as_of=date.fromisoformat(expected["as_of"]), plugins=PLUGINS)
    assert not results.errors
    got = {r.patient: {k: r.report()[k] for k in ("outcome", "priority", "rules", "risk_factors", "modifiers")}
           for r in results}
    assert got == expected["patients"]


def test_without_the_plugin_nothing_fires_on_the_fixture() -> None:
    data = json.loads((FIXTURES / "pancreas-patients.json").read_text(encoding="utf-8"))
    results = screen_resources(data, as_of=AS_OF)
    assert all("PANC-1" not in r.triggered for r in results)
