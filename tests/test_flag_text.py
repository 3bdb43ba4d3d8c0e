"""What the clinician reads in the Flag and the card (docs/reference/clinical-rules.md section 6 point 7)."""

from __future__ import annotations

import re
from datetime import date
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from conftest import AS_OF, FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from b12screen.core.outcome import TESTS, ScreeningResult
from b12screen.screening import group, screen_grouped
from b12screen.sinks.cards import detail, summary
from b12screen.sinks.flag import distinct_reasons, flag_text, longest_shared, with_article
from b12screen.sources import read_path
from b12screen.sources.validation import ALL


def _results(screener, name: str) -> dict[str, ScreeningResult]:
    grouped = group(screener, read_path(Path(FIXTURES / "clinical" / name)), ALL)
    return {r.patient: r for r in screen_grouped(screener, grouped, AS_OF)}


def _result(**extra: Any) -> ScreeningResult:
    base: dict[str, Any] = dict(patient="Patient/p", outcome="suggest-b12-test", priority="medium", rules=["MET-2"],
                                triggered=["MET-2"], modifiers=[], recommended_test=dict(TESTS["total-b12"]),
                                evidence=[], as_of=date(2026, 11, 24), profile="default", ruleset_version="x",
                                reasons={"MET-2": "metformin for 5 years"})
    return ScreeningResult(**{**base, **extra})


def test_flag_states_the_latest_b12_or_that_there_is_none() -> None:
    assert "No vitamin B12 result on file." in flag_text(_result())
    latest = {"value": 142, "unit": "pg/mL", "date": "2020-12-05", "band": "deficient"}
    assert "Latest vitamin B12 result 142 pg/mL on 2020-12-05 (deficient)." in flag_text(_result(latest_b12=latest))


def test_flag_names_the_test_plainly() -> None:
    text = flag_text(_result())
    assert "Suggested test: serum vitamin B12 (LOINC 2132-9)." in text and "Cobalamin" not in text
    text = flag_text(_result(recommended_test=dict(TESTS["active-b12"])))
    assert "Suggested test: active B12 (holotranscobalamin) (LOINC 72160-5)." in text


def test_one_reason_is_never_repeated_under_two_rules(screener) -> None:
    result = _results(screener, "met3.json")["Patient/met3-pos"]
    text = flag_text(result)
    assert text.count("Polyneuropathy, unspecified (first recorded 2026-09-15)") == 1
    assert "as above with active metformin." in text and "[SYM-1]" not in text
    reasons = distinct_reasons(_result(rules=["ACID-2", "SYM-1"], reasons={
        "ACID-2": "acid suppression for 1.2 years; age 65", "SYM-1": "tingling with active PPI, age 65"}))
    assert reasons == {"ACID-2": "acid suppression for 1.2 years; age 65", "SYM-1": "tingling with active PPI"}
    card_detail = detail(result, screener.rules_by_id, None, [], [])
    assert card_detail.count("Polyneuropathy, unspecified (first recorded 2026-09-15)") == 1


def test_lab_sign_gives_its_value_and_limit(screener) -> None:
    result = _results(screener, "refinements-labs.json")["Patient/lab-hb-who-male-12.9"]
    assert "haemoglobin 12.9 g/dL on 2026-09-01, below 13.0 with" in flag_text(result)


def test_card_grammar_and_capitalisation(screener) -> None:
    assert with_article("active B12 (holotranscobalamin)") == "an active B12 (holotranscobalamin)"
    assert with_article("MMA") == "an MMA" and with_article("serum vitamin B12") == "a serum vitamin B12"
    active = _result(recommended_test=dict(TESTS["active-b12"]))
    assert summary(active, screener.rules_by_id).startswith("Consider an active B12 (holotranscobalamin) test: ")
    crohn = _results(screener, "mal-cro.json")["Patient/cro-0"]
    assert summary(crohn, screener.rules_by_id) == (
        "Consider a serum vitamin B12 test: Crohn's disease without significant ileal resection")
    assert "**B12 on file:** No vitamin B12 result on file." in detail(crohn, screener.rules_by_id, None, [], [])


def test_a_stale_injection_order_is_named_in_flag_and_card(screener) -> None:
    results = _results(screener, "mod-tx-im.json")
    stale = results["Patient/im-order-1998"]
    note = "An active B12 injection order from 1998-03-02 is on file: confirm that treatment is current."
    assert note in flag_text(stale)
    assert note.rstrip(".") in detail(stale, screener.rules_by_id, None, [], [])
    assert "injection order" not in flag_text(results["Patient/im-6mo"])


def test_a_medicine_coded_without_any_name_is_named_by_its_value_set_display(screener) -> None:
    """The prescription carries only RxNorm 858069: the clinician reads the drug's name, not the number."""
    result = _results(screener, "sym1.json")["Patient/sym1-colcrys-code-only"]
    assert "Tingling in both feet (first recorded 2026-10-01) with active colchicine 0.6 MG [Colcrys]" in (
        flag_text(result))
    assert "858069" not in flag_text(result)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text("ab c;", max_size=60), st.text("ab c;", max_size=60), st.integers(1, 6))
def test_longest_shared_is_the_longest_match_difflib_finds(text: str, said: str, least: int) -> None:
    match = SequenceMatcher(None, text, said, autojunk=False).find_longest_match(0, len(text), 0, len(said))
    expected = (match.a, match.size) if match.size >= least else (-1, 0)
    assert longest_shared(text, said, least) == expected


def test_longest_shared_needs_the_least_length_and_takes_the_earliest_longest() -> None:
    said = "metformin for 5 years with tingling"
    assert longest_shared("tingling and metformin for 5 years", said) == (13, 21)
    assert longest_shared("metformin for 5 year", said) == (0, 20)
    assert longest_shared("metformin for 5 yea", said) == (-1, 0)  # 19 shared characters: not a repeat
    assert longest_shared("xx metformin for 5 years; metformin for 5 years with", said) == (26, 26)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(st.text(alphabet="ab 1\\`*_[]<>|#~\t\n\r\x0b\x1c\x85\xa0\u2003\u2028\u3000\u200b", max_size=14))
def test_md_collapses_every_kind_of_whitespace_and_escapes_every_markdown_character(text: str) -> None:
    from b12screen.sinks.cards import md

    expected = re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", " ".join(text.split()))
    assert md(text) == expected
    assert md("Metformin 500 MG  *Oral*\u00a0Tablet ") == "Metformin 500 MG \\*Oral\\* Tablet"
