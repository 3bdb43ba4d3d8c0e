"""Unit tests of :mod:`b12screen.sources.extract`: references, resource types and the fact each raw
resource becomes, with the reason when it cannot be used."""

from __future__ import annotations

from datetime import date
from typing import Any

from conftest import AS_OF
from unit_helpers import extractor

from b12screen.testing import SNOMED, screen_resources

VEGAN = {"coding": [{"system": SNOMED, "code": "24930006", "display": "Vegan"}]}


def vegan_flag(status: str = "active", **period: str) -> dict[str, Any]:
    return {"resourceType": "Flag", "id": "fl", "status": status, "code": VEGAN,
            "subject": {"reference": "Patient/p1"}, "period": period}


def vegan_encounter(**period: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "enc", "status": "finished", "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"}, "period": period,
            "hospitalization": {"dietPreference": [VEGAN]}}


# -- Flag and Encounter periods --------------------------------------------------------------------


def test_a_flags_period_dates_its_fact() -> None:
    fact = extractor().extract(vegan_flag("inactive", start="2019-05-01", end="2022-01-01"), "Flag/fl", {})
    assert fact is not None and (fact.onset, fact.abatement) == (date(2019, 5, 1), date(2022, 1, 1))
    assert fact.clinical_status == "inactive" and fact.concepts == {"vegan-diet"}


def test_an_encounters_period_dates_its_diet_preference() -> None:
    fact = extractor().extract(vegan_encounter(start="2026-02-10", end="2026-02-14"), "Encounter/enc", {})
    assert fact is not None and (fact.onset, fact.abatement, fact.label) == (date(2026, 2, 10), None,
                                                                             "diet preference")


def test_a_diet_recorded_after_the_as_of_date_does_not_count_then() -> None:
    for later in (vegan_flag(start="2027-06-01"), vegan_encounter(start="2027-01-02")):
        person = {"resourceType": "Patient", "id": "p1", "birthDate": "1990-01-01"}
        assert screen_resources(person, later, as_of=AS_OF)[0].outcome == "no-suggestion"
        assert screen_resources(person, later, as_of=date(2027, 7, 1))[0].rules == ["DIET-V"]
