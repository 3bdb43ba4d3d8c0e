"""Real public data: the Synthea 10-patient bulk export (skipped when ../shared/data is absent)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from b12screen.screening import group, screen_grouped
from b12screen.sources import discover, read_path
from b12screen.sources.validation import ALL

EXPORT = SHARED_DATA / "synthea-bulk-10"
METFORMIN_PATIENT = "Patient/79a66c97-6131-3213-f3c9-4606946ab056"

pytestmark = pytest.mark.skipif(not EXPORT.exists(), reason="shared Synthea export not present")


@pytest.fixture(scope="module")
def grouped(plugin_manager_module):
    from b12screen import Screener

    screener = Screener(plugin_manager=plugin_manager_module)
    return screener, group(screener, read_path(EXPORT), ALL)


@pytest.fixture(scope="module")
def plugin_manager_module():
    from b12screen.plugins import get_plugin_manager

    return get_plugin_manager(load_entry_points=False)


def test_every_resource_is_read_and_the_export_log_is_skipped_as_metadata(grouped) -> None:
    _, data = grouped
    assert data.resources_read > 5000
    assert data.errors == []
    assert len(data.patients) >= 10
    found = discover([str(EXPORT)])
    assert [Path(f).name for f in found.metadata] == ["log.ndjson"] and found.ignored == []


def test_long_term_metformin_patient_is_found(grouped) -> None:
    screener, data = grouped
    # Alive in mid-1994 (died November 1994), on metformin since 1969: MET-2.
    results = {r.patient: r for r in screen_grouped(screener, data, date(1994, 6, 1))}
    result = results[METFORMIN_PATIENT]
    assert result.outcome == "suggest-b12-test"
    assert result.rules == ["MET-2"] and result.priority == "medium"
    assert any(ref.startswith("MedicationRequest/") for ref in result.evidence)
    flagged = [r.patient for r in results.values() if r.flagged]
    assert flagged == [METFORMIN_PATIENT]


def test_deceased_patients_are_not_flagged_today(grouped) -> None:
    screener, data = grouped
    results = {r.patient: r for r in screen_grouped(screener, data, date(2026, 11, 24))}
    result = results[METFORMIN_PATIENT]
    assert result.outcome == "not-evaluated" and result.modifiers == ["MOD-DECEASED"]
    assert result.triggered == ["MET-2"]
