"""Local codes only: MET-1/MET-2 and MOD-RECENT work on data coded with the site's own codes."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import b12screen_site_codes
from b12screen_site_codes import FORMULARY, LAB

from b12screen.testing import (
    make_medication_request,
    make_observation,
    make_patient,
    make_screener,
    record_from,
    run_rule,
    screen_resources,
)

AS_OF = date(2026, 11, 24)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PLUGINS = [b12screen_site_codes]


def _fixture() -> dict:
    return json.loads((FIXTURES / "site-codes-patients.json").read_text(encoding="utf-8"))


def test_local_codes_join_the_builtin_value_sets() -> None:
    terminology = make_screener(*PLUGINS).terminology
    assert terminology.match_code(FORMULARY, "F-10234") == {"metformin"}
    assert terminology.match_code(LAB, "L-B12") == {"b12-total"}
    # the shipped codes are still there
    assert terminology.match_code("http://www.nlm.nih.gov/research/umls/rxnorm", "6809") == {"metformin"}


def test_a_locally_coded_prescription_is_metformin_only_with_the_plugin() -> None:
    resources = [make_patient("p1", "1976-03-14"), make_medication_request("F-10234", FORMULARY, authored="2025-08-20")]
    assert record_from(*resources, plugins=PLUGINS).medications[0].concepts == {"metformin"}
    assert record_from(*resources).medications == []  # unknown code: not read at all
    assert run_rule("MET-1", resources, AS_OF, plugins=PLUGINS) is not None
    assert run_rule("MET-1", resources, AS_OF) is None


def test_a_locally_coded_b12_result_satisfies_mod_recent() -> None:
    resources = [make_patient("p1", "1974-11-30"), make_medication_request("F-10240", FORMULARY, authored="2023-05-01")]
    b12 = make_observation("L-B12", LAB, effective="2025-10-01", value=420, unit="pg/mL")
    [untested] = screen_resources(resources, as_of=AS_OF, plugins=PLUGINS)
    [tested] = screen_resources(resources, b12, as_of=AS_OF, plugins=PLUGINS)
    assert untested.outcome == "suggest-b12-test" and untested.rules == ["MET-1"]
    assert tested.outcome == "suppressed" and tested.modifiers == ["MOD-RECENT"]


def test_fixture_outcomes_match_expected() -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    results = screen_resources(_fixture(), as_of=date.fromisoformat(expected["as_of"]), plugins=PLUGINS)
    got = {r.patient: {k: r.report()[k] for k in ("outcome", "priority", "rules", "risk_factors", "modifiers")}
           for r in results}
    assert got == expected["patients"]


def test_without_the_plugin_the_fixture_gives_no_suggestion() -> None:
    assert {r.outcome for r in screen_resources(_fixture(), as_of=AS_OF)} == {"no-suggestion"}
