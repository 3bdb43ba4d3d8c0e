"""Data-driven tests: every fixture under fixtures/ is screened and compared with fixtures/expected.json.

The expectations were derived from docs/reference/clinical-rules.md, not from engine output. An entry may carry
``needs`` (value set ids that must be shipped, else the entry is skipped) and ``engine_bug`` (a known
disagreement between engine and specification: the entry is a strict xfail until the engine is fixed).
"""

from __future__ import annotations

import functools
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from b12screen import Screener
from b12screen.core.outcome import OUTCOMES
from b12screen.core.terminology import builtin_value_sets
from b12screen.plugins import get_plugin_manager
from b12screen.screening import group, screen_grouped
from b12screen.sources import read_path
from b12screen.sources.validation import ALL

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXPECTED_PATH = FIXTURES / "expected.json"
README_PATH = FIXTURES / "README.md"
#: Folders whose every file must have an expectation (fixtures/errors and fixtures/examples are tested elsewhere).
COVERED_DIRS = ("medication",)
COMPARED_KEYS = ("outcome", "priority", "rules", "risk_factors", "modifiers")
FIXTURE_SUFFIXES = (".json", ".ndjson")


def _load_expected() -> dict[str, dict[str, Any]]:
    return json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))


EXPECTED = _load_expected()


def _params() -> list[Any]:
    params = []
    for name, entry in sorted(EXPECTED.items()):
        marks = []
        if entry.get("engine_bug"):
            marks.append(pytest.mark.xfail(strict=True, reason=f"engine bug: {entry['engine_bug']}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@functools.cache
def _screener(profile: str) -> Screener:
    """One screener per profile, with the built-in plugins only (installed plugins never leak in)."""
    return Screener(profile=profile, plugin_manager=get_plugin_manager(load_entry_points=False))


@pytest.fixture(scope="module")
def shipped_value_sets() -> set[str]:
    return {vs.get("id") for vs in builtin_value_sets()}


def _actual(result: Any) -> dict[str, Any]:
    report = result.report()
    return {key: report[key] for key in COMPARED_KEYS}


@pytest.mark.parametrize("name", _params())
def test_fixture_outcomes(name: str, shipped_value_sets: set[str]) -> None:
    entry = EXPECTED[name]
    missing = sorted(set(entry.get("needs", [])) - shipped_value_sets)
    if missing:
        pytest.skip(f"value set(s) not shipped yet: {', '.join(missing)}")
    screener = _screener(entry.get("profile", "default"))
    grouped = group(screener, read_path(FIXTURES / name), ALL)
    results = screen_grouped(screener, grouped, date.fromisoformat(entry["as_of"]))

    assert [str(e) for e in grouped.errors] == [], "fixtures must read without input errors"
    assert {r.patient: r.rule_errors for r in results if r.rule_errors} == {}, "no rule may raise"
    actual = {r.patient: _actual(r) for r in results}
    assert set(actual) == set(entry["patients"]), "patients found differ from the expected patients"
    assert actual == entry["patients"]


def _fixture_files() -> list[str]:
    files = []
    for folder in COVERED_DIRS:
        for path in sorted((FIXTURES / folder).rglob("*")):
            if path.is_file() and path.name.endswith(FIXTURE_SUFFIXES):
                files.append(path.relative_to(FIXTURES).as_posix())
    return files


def test_every_fixture_has_an_expectation_and_a_readme_row() -> None:
    files = _fixture_files()
    assert files, "no fixture files found"
    readme = README_PATH.read_text(encoding="utf-8")
    assert sorted(set(files) - set(EXPECTED)) == [], "fixture files missing from expected.json"
    assert [f for f in files if f"`{f}`" not in readme] == [], "fixture files missing from fixtures/README.md"


def test_expected_entries_are_well_formed() -> None:
    for name, entry in EXPECTED.items():
        assert (FIXTURES / name).is_file(), f"{name}: listed in expected.json but no such file"
        assert set(entry) <= {"as_of", "profile", "description", "patients", "needs", "engine_bug"}, name
        date.fromisoformat(entry["as_of"])
        assert entry["profile"] in ("default", "nice"), name
        assert entry["description"] and "\n" not in entry["description"], name
        assert isinstance(entry.get("needs", []), list), name
        assert entry["patients"], f"{name}: no patients"
        for patient, exp in entry["patients"].items():
            assert patient.startswith(("Patient/", "urn:uuid:")), (name, patient)
            assert set(exp) == set(COMPARED_KEYS), (name, patient)
            assert exp["outcome"] in OUTCOMES, (name, patient)
            assert exp["priority"] in (None, "low", "medium", "high"), (name, patient)
            assert (exp["priority"] is None) == (exp["outcome"] in ("no-suggestion", "suppressed", "not-evaluated"))
            for key in ("rules", "risk_factors", "modifiers"):
                assert exp[key] == sorted(exp[key]), (name, patient, key)
