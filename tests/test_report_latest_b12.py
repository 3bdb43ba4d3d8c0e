"""The report entry's ``latest_b12``: the latest banded B12 result on file, whatever its age, or null."""

from __future__ import annotations

from typing import Any

from conftest import AS_OF, bundle, metformin_request, patient


def _b12(rid: str, pid: str, when: str, value: float | None, unit: str = "pg/mL", loinc: str = "2132-9",
         status: str = "final") -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": status,
                           "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when}
    if value is not None:
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    return obs


def _entry(screener, *resources: dict[str, Any]) -> dict[str, Any]:
    [result] = screener.screen(bundle(patient("p"), *resources), AS_OF)
    return result.report()


def test_latest_b12_is_null_without_a_result(screener) -> None:
    assert _entry(screener, metformin_request("m", "p", "2026-01-01"))["latest_b12"] is None


def test_latest_b12_reports_value_unit_date_band_of_the_latest(screener) -> None:
    entry = _entry(screener, _b12("old", "p", "2019-03-01", 150), _b12("new", "p", "2020-12-05", 250),
                   _b12("cancelled", "p", "2021-06-01", 100, status="cancelled"))
    assert entry["latest_b12"] == {"value": 250, "unit": "pg/mL", "date": "2020-12-05", "band": "indeterminate"}


def test_latest_b12_bands_at_the_limits_and_converts_units(screener) -> None:
    assert _entry(screener, _b12("a", "p", "2026-01-01", 179.9))["latest_b12"]["band"] == "deficient"
    assert _entry(screener, _b12("a", "p", "2026-01-01", 350.1))["latest_b12"]["band"] == "normal"
    # 250 pmol/L = 338.8 ng/L: indeterminate, reported in the unit it was recorded in
    assert _entry(screener, _b12("a", "p", "2026-01-01", 250, "pmol/L"))["latest_b12"] == {
        "value": 250, "unit": "pmol/L", "date": "2026-01-01", "band": "indeterminate"}


def test_latest_b12_includes_active_b12(screener) -> None:
    entry = _entry(screener, _b12("t", "p", "2025-01-01", 400), _b12("h", "p", "2026-02-01", 20, "pmol/L", "72160-5"))
    assert entry["latest_b12"] == {"value": 20, "unit": "pmol/L", "date": "2026-02-01", "band": "deficient"}
