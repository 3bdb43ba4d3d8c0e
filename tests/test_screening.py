"""Unit tests of :mod:`b12screen.screening`, the front door: grouping under a validation policy, screening
each patient, and screening again without the evidence that fails validation."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import AS_OF, metformin_request, patient

from b12screen import screening
from b12screen.errors import B12ScreenError, ConfigError
from b12screen.screening import Screener, group, screen_facts, screen_grouped, screen_one, screen_patient
from b12screen.sources.reader import read_value
from b12screen.sources.validation import ALL, EVIDENCE
from b12screen.testing import make_observation

#: Metformin since 2025-06-01 triggers MET-1 for an adult under 65.
ADULT = patient("p1", birth="1980-01-01")
ON_METFORMIN = metformin_request("m1", "p1", "2025-06-01")
#: A field R4 does not have: the resource fails validation.
INVALID = {"bogusField": 1}
INVALID_REASON = "invalid MedicationRequest: bogusField: Extra inputs are not permitted"


def grouped(screener: Screener, *resources: Any, policy: str = EVIDENCE) -> Any:
    return group(screener, read_value(list(resources), "in.json"), policy)


def errors(found: list[Any]) -> list[tuple[str, str | None, str]]:
    return [(e.source, e.location, e.reason) for e in found]


def test_group_extracts_under_the_policy_it_is_given(screener: Screener) -> None:
    assert grouped(screener, patient("p1")).policy == EVIDENCE
    assert grouped(screener, patient("p1"), policy=ALL).policy == ALL
    with pytest.raises(B12ScreenError, match=r"unknown validation policy 'some' \(choose from"):
        grouped(screener, patient("p1"), policy="some")


def test_patients_are_screened_in_key_order_with_every_input_error(screener: Screener) -> None:
    data = grouped(screener, patient("p2"), {"resourceType": "Nonsense"}, patient("p1"),
                   metformin_request("m2", "p2", "2025-06-01"))
    results = screen_grouped(screener, data, AS_OF)
    assert [r.patient for r in results] == ["Patient/p1", "Patient/p2"]
    assert [r.outcome for r in results] == ["no-suggestion", "suggest-b12-test"]
    assert errors(results.errors) == [("in.json", "[1]", "unknown resourceType 'Nonsense'")]
    assert results.resources_read == 3


def test_invalid_evidence_is_reported_and_the_patient_screened_again_without_it(screener: Screener) -> None:
    data = grouped(screener, patient("p1"), {**ON_METFORMIN, **INVALID})
    (result,) = results = screen_grouped(screener, data, AS_OF)
    assert errors(results.errors) == [("in.json", "[1]", INVALID_REASON)]
    assert (result.outcome, result.evidence) == ("no-suggestion", [])


def test_valid_evidence_stands_and_an_invalid_resource_no_result_rests_on_is_not_checked(screener: Screener) -> None:
    unused = {**make_observation("33914-3", effective="2026-01-01", value=80, unit="mL/min"), **INVALID}
    data = grouped(screener, ADULT, ON_METFORMIN, unused)
    results = screen_grouped(screener, data, AS_OF)
    assert results.errors == [] and results[0].rules == ["MET-1"]
    assert results[0].evidence == ["MedicationRequest/m1"]


def test_under_the_all_policy_invalid_resources_are_refused_when_read(screener: Screener,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = grouped(screener, ADULT, {**ON_METFORMIN, **INVALID}, metformin_request("m2", "p1", "2025-06-01"),
                   policy=ALL)
    assert errors(data.errors) == [("in.json", "[1]", INVALID_REASON)]
    monkeypatch.setattr(screening, "validation_problem", lambda raw: pytest.fail("validated twice"))
    results = screen_grouped(screener, data, AS_OF)
    assert errors(results.errors) == [("in.json", "[1]", INVALID_REASON)]  # once, not again after screening
    assert results[0].evidence == ["MedicationRequest/m2"]


def test_each_resource_is_validated_at_most_once_across_the_screens(screener: Screener,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rules' evidence: the invalid request goes, the patient is screened again, and the valid
    statement that is still evidence is not validated a second time."""
    checked: list[str] = []
    real = screening.validation_problem

    def counting(raw: Any) -> str | None:
        checked.append(raw["id"])
        return real(raw)

    monkeypatch.setattr(screening, "validation_problem", counting)
    statement = {"resourceType": "MedicationStatement", "id": "s1", "status": "active",
                 "medicationCodeableConcept": ON_METFORMIN["medicationCodeableConcept"],
                 "subject": {"reference": "Patient/p1"}, "effectivePeriod": {"start": "2025-06-01"}}
    found = grouped(screener, patient("p1"), statement, {**ON_METFORMIN, **INVALID}).patients["Patient/p1"]
    checked_result = screen_facts(screener, "Patient/p1", found.patient, found.facts, found.resource_count, AS_OF,
                                  EVIDENCE)
    assert sorted(checked) == ["m1", "s1"]
    assert checked_result.problems == [(("in.json", "[2]"), INVALID_REASON)]
    assert checked_result.result.evidence == ["MedicationStatement/s1"]
    assert [m.ref for m in checked_result.record.medications] == ["MedicationStatement/s1"]


def test_the_result_carries_the_patients_demographics_at_the_as_of_date(screener: Screener) -> None:
    data = grouped(screener, patient("p1", birth="1960-11-25", gender="female"))
    checked = screen_one(screener, data, "Patient/p1", AS_OF)
    assert checked is not None
    assert checked.result.demographics == {"age": 65, "age_band": "65-74", "sex": "female", "deceased": False}


def test_screening_one_patient_of_an_input(screener: Screener) -> None:
    items = read_value([patient("p1"), patient("p2"), {**ON_METFORMIN, **INVALID}, {"resourceType": "Nonsense"}],
                       "server")
    found = screen_patient(screener, items, "Patient/p1", AS_OF)
    assert found.checked is not None and found.checked.result.outcome == "no-suggestion"
    assert errors(found.errors) == [("server", "[3]", "unknown resourceType 'Nonsense'"),
                                    ("server", "[2]", INVALID_REASON)]
    assert found.resources_read == 3  # what is not a resource is not counted
    missing = screen_patient(screener, read_value([patient("p2")], "server"), "Patient/p1", AS_OF)
    assert (missing.checked, missing.errors, missing.resources_read) == (None, [], 1)
    assert screen_one(screener, grouped(screener), "Patient/p1", AS_OF) is None


def test_screen_takes_a_bundle_a_resource_or_a_list(screener: Screener) -> None:
    as_bundle = screener.screen({"resourceType": "Bundle", "type": "collection",
                                 "entry": [{"resource": ADULT}, {"resource": ON_METFORMIN}]}, AS_OF)
    assert [r.rules for r in as_bundle] == [["MET-1"]]
    assert [r.patient for r in screener.screen(patient("p1"), AS_OF)] == ["Patient/p1"]
    empty = screener.screen([], AS_OF)
    assert (list(empty), empty.errors, empty.resources_read) == ([], [], 0)


def test_rows_are_one_per_patient(screener: Screener) -> None:
    rows = screener.screen([patient("p1"), ON_METFORMIN], AS_OF).to_rows()
    assert len(rows) == 1 and rows[0]["patient"] == "Patient/p1" and rows[0]["flagged"] is True


def test_the_module_level_screen_checks_its_profile() -> None:
    assert [r.outcome for r in screening.screen([patient("p1"), ON_METFORMIN], AS_OF, profile="nice")]
    with pytest.raises(ConfigError, match="unknown profile 'x'"):
        screening.screen([], AS_OF, profile="x")
