"""Lab signs judged on the latest result, with the figures the clinician reads.

docs/reference/clinical-rules.md 6.5, 6.7.
"""

from __future__ import annotations

from datetime import date

import pytest

from b12screen.core.facts import ObservationFact
from b12screen.core.labs import high_mcv, low_haemoglobin


def _obs(value: float | None, unit: str = "g/dL", low: float | None = None,
         interpretation: frozenset[str] = frozenset()) -> ObservationFact:
    return ObservationFact(ref="Observation/x", concepts=frozenset({"haemoglobin"}), value_concepts=frozenset(),
                           status="final", effective=date(2026, 9, 1), value=value, unit=unit, comparator=None,
                           interpretation=interpretation, ref_low=low, ref_high=None, label="")


@pytest.mark.parametrize(("value", "unit", "gender", "pregnant", "expected"), [
    (12.9, "g/dL", "male", False, "12.9 g/dL, below 13.0"),
    (13.0, "g/dL", "male", False, None),
    (11.9, "g/dL", "female", False, "11.9 g/dL, below 12.0"),
    (12.0, "g/dL", "female", False, None),
    (11.9, "g/dL", None, False, "11.9 g/dL, below 12.0"),
    (11.5, "g/dL", "female", True, None),
    (10.9, "g/dL", "female", True, "10.9 g/dL, below 11.0"),
    (11.0, "g/dL", "female", True, None),
    (119, "g/L", "female", False, "119 g/L, below 12.0 g/dL"),
    (120, "g/L", "female", False, None),
])
def test_haemoglobin_who_limits(value: float, unit: str, gender: str | None, pregnant: bool,
                                expected: str | None) -> None:
    assert low_haemoglobin(_obs(value, unit), gender, pregnant) == expected


def test_haemoglobin_reference_range_wins_over_who_and_flag() -> None:
    assert low_haemoglobin(_obs(13.2, low=13.5), "male") == "13.2 g/dL, below 13.5"
    assert low_haemoglobin(_obs(12.5, low=12.0, interpretation=frozenset({"L"})), "female") is None
    assert low_haemoglobin(_obs(None, interpretation=frozenset({"L"})), "female") == "flagged low"


def test_mcv_limit_is_strict() -> None:
    assert high_mcv(_obs(100.1, "fL")) == "100.1 fL, above 100"
    assert high_mcv(_obs(100, "fL")) is None
    assert high_mcv(_obs(104, "g/dL")) is None
