"""Data-driven tests of the clinical (non-medication) rules and modifiers.

Every fixture in fixtures/clinical/ is screened with the library and compared with
fixtures/clinical/expected.json, whose expectations were derived from clinical-rules.md (and the README's
documented decisions), not from engine output. Each patient is checked in five separate aspects, so a
known disagreement between the engine and the specification (KNOWN_ISSUES) is a strict xfail on exactly the
aspects it breaks while the rest of that patient stays tested.
"""

from __future__ import annotations

import functools
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from b12screen import Screener
from b12screen.core.outcome import FLAGGED_OUTCOMES, OUTCOMES
from b12screen.plugins import get_plugin_manager
from b12screen.screening import group, screen_grouped
from b12screen.sinks.flag import REASON_EXTENSION, flag_model
from b12screen.sources import read_path
from b12screen.sources.validation import ALL

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLINICAL = FIXTURES / "clinical"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CLINICAL / "expected.json").read_text(encoding="utf-8"))
PATIENT_KEYS = {"outcome", "priority", "rules", "risk_factors", "modifiers", "recommended_test"}
ASPECTS = ("outcome", "rules", "risk_factors", "modifiers", "flag")


#: (fixture, patient) -> (aspects that fail, reason). Each is a disagreement with clinical-rules.md.
KNOWN_ISSUES: dict[tuple[str, str], tuple[frozenset[str], str]] = {}


@functools.cache
def _screener(profile: str) -> Screener:
    return Screener(profile=profile, plugin_manager=get_plugin_manager(load_entry_points=False))


@functools.cache
def _screened(name: str) -> tuple[list[str], dict[str, Any]]:
    """(input errors, {patient: ScreeningResult}) of one fixture, screened once per test run."""
    entry = EXPECTED[name]
    screener = _screener(entry["profile"])
    grouped = group(screener, read_path(FIXTURES / name), ALL)
    results = screen_grouped(screener, grouped, date.fromisoformat(entry["as_of"]))
    return [str(e) for e in grouped.errors], {r.patient: r for r in results}


def _cases() -> list[Any]:
    cases = []
    for name, entry in EXPECTED.items():
        for patient in entry["patients"]:
            issue = KNOWN_ISSUES.get((name, patient))
            for aspect in ASPECTS:
                marks = []
                if issue is not None and aspect in issue[0]:
                    marks.append(pytest.mark.xfail(strict=True, reason=issue[1]))
                cases.append(pytest.param(name, patient, aspect, marks=marks, id=f"{name}::{patient}::{aspect}"))
    return cases


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reads_cleanly(name: str) -> None:
    errors, results = _screened(name)
    assert errors == [], "fixtures must read without input errors"
    assert {p: r.rule_errors for p, r in results.items() if r.rule_errors} == {}, "no rule may raise"
    assert set(results) == set(EXPECTED[name]["patients"]), "patients found differ from the expected patients"


@pytest.mark.parametrize(("name", "patient", "aspect"), _cases())
def test_clinical_expectation(name: str, patient: str, aspect: str) -> None:
    expected = EXPECTED[name]["patients"][patient]
    result = _screened(name)[1].get(patient)
    assert result is not None, f"{patient} not screened"
    if aspect == "outcome":
        test = result.recommended_test["code"] if result.recommended_test else None
        assert (result.outcome, result.priority, test) == (
            expected["outcome"], expected["priority"], expected["recommended_test"])
    elif aspect == "flag":
        if expected["outcome"] in FLAGGED_OUTCOMES:
            assert result.flagged, "a flagged outcome must carry a Flag"
            flag = flag_model(result)
            named = {e.valueCoding.code for e in flag.extension or [] if e.url == REASON_EXTENSION}
            missing = [rule for rule in expected["rules"] if rule not in named]
            assert missing == [], f"the Flag's reason extensions do not name {missing}"
            shown = [rule for rule in expected["rules"] if rule in flag.code.text]
            assert shown == [], f"rule ids belong in extensions, not in code.text: {flag.code.text}"
        else:
            assert not result.flagged
    else:
        assert sorted(result.report()[aspect]) == expected[aspect]


def test_expected_file_is_well_formed() -> None:
    files = sorted(p.relative_to(FIXTURES).as_posix() for p in CLINICAL.glob("*.json") if p.name != "expected.json")
    assert files == sorted(EXPECTED), "every fixtures/clinical file has an entry in expected.json and vice versa"
    for name, entry in EXPECTED.items():
        assert set(entry) == {"as_of", "profile", "description", "patients"}, name
        date.fromisoformat(entry["as_of"])
        assert entry["profile"] in ("default", "nice"), name
        assert entry["description"] and "\n" not in entry["description"], name
        for patient, exp in entry["patients"].items():
            assert patient.startswith("Patient/"), (name, patient)
            assert set(exp) == PATIENT_KEYS, (name, patient)
            assert exp["outcome"] in OUTCOMES, (name, patient)
            assert exp["priority"] in (None, "low", "medium", "high"), (name, patient)
            assert (exp["priority"] is None) == (exp["outcome"] in ("no-suggestion", "suppressed", "not-evaluated"))
            assert (exp["recommended_test"] is None) == (exp["outcome"] not in ("suggest-b12-test", "suggest-mma"))
            for key in ("rules", "risk_factors", "modifiers"):
                assert exp[key] == sorted(exp[key]), (name, patient, key)
    for name, patient in KNOWN_ISSUES:
        assert patient in EXPECTED.get(name, {}).get("patients", {}), f"stale KNOWN_ISSUES entry {name} {patient}"
