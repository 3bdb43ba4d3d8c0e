"""What the clinician reads (docs/reference/clinical-rules.md section 7 point 10), across every fixture's Flag and card:
no SNOMED CT semantic tag, no rule id in code.text or the card summary (none in brackets anywhere), figures to
the decimals the point allows, card evidence as names with dates, age reasons that say why."""

from __future__ import annotations

import functools
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from b12screen import Screener
from b12screen.core import display
from b12screen.core.display import measured, number, without_semantic_tag
from b12screen.core.outcome import TESTS, ScreeningResult
from b12screen.plugins import get_plugin_manager
from b12screen.screening import group, screen_one
from b12screen.sinks import cards as cardlib
from b12screen.sinks.flag import flag_text
from b12screen.sources import read_path
from b12screen.sources.validation import ALL

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXPECTATIONS = [FIXTURES / "expected.json", FIXTURES / "clinical" / "expected.json"]
SEMANTIC_TAG = re.compile(r"\((?:disorder|finding|procedure|situation|observable entity|regime/therapy|substance|"
                          r"product|morphologic abnormality|body structure|qualifier value)\)", re.IGNORECASE)
RULE_ID_IN_BRACKETS = re.compile(r"\[(?:MOD-)?[A-Z0-9]+(?:-[A-Z0-9]+)+\]")
#: An analyte name, its figure, and the limit it is judged against when one follows (", below 12.0").
FIGURE = re.compile(r"(?P<name>haemoglobin|MCV|vitamin B12(?: result)?|active B12|B12|MMA|homocysteine) "
                    r"(?P<value>-?\d+(?:\.\d+)?)(?: [^\s,;.]+)?(?: on \d{4}-\d{2}-\d{2})?"
                    r"(?:, (?:below|above) (?P<limit>\d+(?:\.\d+)?))?")
ALLOWED = {"haemoglobin": 1, "MCV": 0, "vitamin B12": 0, "vitamin B12 result": 0, "active B12": 0, "B12": 0, "MMA": 2,
           "homocysteine": 2}


@functools.cache
def _screener(profile: str) -> Screener:
    return Screener(profile=profile, plugin_manager=get_plugin_manager(load_entry_points=False))


def _fixtures() -> list[tuple[str, str, str]]:
    """(fixture path relative to fixtures/, profile, as-of) of every fixture with expectations."""
    found = []
    for path in EXPECTATIONS:
        for name, entry in json.loads(path.read_text(encoding="utf-8")).items():
            found.append((name, entry["profile"], entry["as_of"]))
    return found


@functools.cache
def _flagged(name: str, profile: str, as_of: str) -> list[tuple[ScreeningResult, Any]]:
    screener = _screener(profile)
    grouped = group(screener, read_path(FIXTURES / name), ALL)
    out = []
    for key in sorted(grouped.patients):
        checked = screen_one(screener, grouped, key, date.fromisoformat(as_of))
        assert checked is not None
        if checked.result.flagged:
            out.append((checked.result, checked.record))
    return out


def _texts(result: ScreeningResult, record: Any) -> dict[str, str]:
    rules = _screener(result.profile).rules_by_id
    card = cardlib.card(result, rules, hook_instance="h", patient_id="p", record=record, unavailable=[],
                        incomplete=[], source_label="b12screen", source_url=None)
    return {"code.text": flag_text(result), "summary": card["summary"], "detail": card["detail"]}


def _decimals(figure: str) -> int:
    return len(figure.split(".")[1]) if "." in figure else 0


def problems_in(texts: dict[str, str], rule_ids: set[str]) -> list[str]:
    """What breaks point 10 in one result's texts."""
    found = []
    for where, text in texts.items():
        if SEMANTIC_TAG.search(text):
            found.append(f"{where}: SNOMED CT semantic tag: {SEMANTIC_TAG.search(text).group(0)}")  # type: ignore[union-attr]
        if RULE_ID_IN_BRACKETS.search(text):
            found.append(f"{where}: rule id in brackets")
        if where != "detail":
            named = sorted(r for r in rule_ids if re.search(rf"(?<![\w-]){re.escape(r)}(?![\w-])", text))
            if named:
                found.append(f"{where}: rule ids {named}")
        for m in FIGURE.finditer(text):
            allowed, value, limit = ALLOWED[m["name"]], m["value"], m["limit"]
            at_limit = limit is not None and round(float(value), allowed) == round(float(limit), allowed)
            if _decimals(value) > allowed and not at_limit:
                found.append(f"{where}: {m['name']} {value} has more than {allowed} decimal(s)")
        if where == "detail" and re.search(r"`(?:[A-Z][A-Za-z]+/|urn:)", text):
            found.append("detail: evidence listed by resource id")
    return found


@pytest.mark.parametrize(("name", "profile", "as_of"), _fixtures())
def test_every_fixture_flag_and_card_read_as_point_10_says(name: str, profile: str, as_of: str) -> None:
    screener = _screener(profile)
    rule_ids = set(screener.rules_by_id)
    problems = [f"{result.patient}: {p}" for result, record in _flagged(name, profile, as_of)
                for p in problems_in(_texts(result, record), rule_ids)]
    assert problems == []


def test_the_sweep_sees_each_kind_of_problem() -> None:
    """The check itself is not vacuous: each kind of text point 10 rules out is caught."""
    rules = {"SYM-1", "MET-2", "MOD-LOW"}
    assert problems_in({"code.text": "Reasons: Glossitis (disorder)"}, rules)
    assert problems_in({"detail": "- tingling [SYM-1]"}, rules)
    assert problems_in({"summary": "Consider a serum vitamin B12 test: MET-2"}, rules)
    assert problems_in({"code.text": "haemoglobin 12.0648 g/dL on 2026-10-01, below 13.0"}, rules)
    assert problems_in({"code.text": "Latest vitamin B12 result 142.7 pg/mL on 2026-08-20 (deficient)"}, rules)
    assert problems_in({"code.text": "MMA 0.523 umol/L on 2026-08-20"}, rules)
    assert problems_in({"code.text": "Latest B12 142.7 pg/mL on 2026-08-20 is below the range"}, rules)
    assert problems_in({"detail": "- `Condition/r5` (Crohn's disease, 2020-01-01)"}, rules)
    assert not problems_in({"code.text": "MCV 100.1 fL on 2026-10-01, above 100"}, rules)  # keeps what tells them apart


def _patient(name: str, pid: str) -> tuple[ScreeningResult, Any]:
    [found] = [(r, rec) for r, rec in _flagged(name, "default", "2026-11-24") if r.patient == pid]
    return found


def test_figures_are_rounded_per_analyte_in_the_flag_and_card() -> None:
    result, record = _patient("clinical/readable-text.json", "Patient/readable-lab-figures")
    texts = _texts(result, record)
    assert "haemoglobin 10.0 g/dL on 2026-10-01, below 12.0" in texts["code.text"]
    assert "MCV 103 fL on 2026-10-01, above 100" in texts["code.text"]
    assert "9.9648" not in str(texts) and "103.46" not in str(texts)
    result, record = _patient("clinical/readable-text.json", "Patient/readable-low-b12")
    assert "Latest B12 143 pg/mL on 2026-08-20" in flag_text(result) and "142.7" not in flag_text(result)


def test_names_lose_their_semantic_tag_and_evidence_reads_as_names_with_dates() -> None:
    result, record = _patient("clinical/readable-text.json", "Patient/readable-semantic-tag")
    texts = _texts(result, record)
    assert "Glossitis (first recorded 2026-10-12)" in texts["code.text"] and "(disorder)" not in str(texts)
    assert "- Glossitis, 2026-10-12, active" in texts["detail"].splitlines()
    assert "Condition/" not in texts["detail"] and "SYM-1" not in texts["code.text"] + texts["summary"]


def test_an_age_reason_says_why_age_matters() -> None:
    result, _ = _patient("clinical/readable-text.json", "Patient/readable-age-84")
    assert "Reasons: age 84 (deficiency is common over 75)." in flag_text(result)


def test_number_rounding_per_analyte() -> None:
    assert [number(12.0648, "haemoglobin"), number(87.4, "mcv"), number(142.7, "b12-total"),
            number(0.5, "mma"), number(38.456, "homocysteine")] == ["12.1", "87", "143", "0.50", "38.46"]
    assert measured(119, "g/L", "haemoglobin") == "119 g/L"  # one decimal is for g/dL
    assert measured(100.04, "fL", "mcv", 100) == "100.04 fL" and measured(100.4, "fL", "mcv", 100) == "100.4 fL"
    assert without_semantic_tag("Neuropathy due to type 2 diabetes mellitus (disorder)") == (
        "Neuropathy due to type 2 diabetes mellitus")
    assert without_semantic_tag("(finding)") == "(finding)"


def test_every_tested_result_among_the_evidence_is_shown_with_value_and_date() -> None:
    result, record = _patient("clinical/readable-text.json", "Patient/readable-low-b12")
    assert result.results == []  # the latest B12 is stated once, in its own sentence
    assert display.tested_results(record, result.evidence, result.as_of) == ["vitamin B12 143 pg/mL on 2026-08-20"]
    shaped = ScreeningResult("Patient/x", "suggest-mma", "medium", ["MET-2"], ["MET-2"], [],
                             dict(TESTS["mma"]), [], date(2026, 11, 24), "default", "v",
                             results=["MMA 0.52 umol/L on 2026-03-01", "homocysteine 38.46 umol/L on 2026-03-01"])
    assert "Results considered: MMA 0.52 umol/L on 2026-03-01; homocysteine 38.46 umol/L on 2026-03-01." in (
        flag_text(shaped))


def test_a_long_repeated_clause_is_dropped_not_turned_into_a_glued_as_above() -> None:
    from b12screen.sinks.flag import distinct_reasons

    symptom = "tingling (first recorded 2026-09-15) with active PPI or H2RA"
    result = ScreeningResult("Patient/x", "suggest-b12-test", "high", ["ACID-2", "SYM-1"], [], [], None, [],
                             date(2026, 11, 24), "default", "v", reasons={
                                 "ACID-2": "acid suppression for 1.2 years; age 65 (65 or over)",
                                 "SYM-1": f"{symptom}, age 65 (65 or over)"})
    assert distinct_reasons(result)["SYM-1"] == symptom
