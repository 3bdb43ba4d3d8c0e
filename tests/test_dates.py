"""FHIR date reading (core.dates.parse_date): partial dates, dateTimes, and what is not a date."""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b12screen.core.dates import parse_date

_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def by_pattern(value: str) -> date | None:
    """The documented reading: the leading year[-month[-day]], missing parts the first."""
    match = _PREFIX.match(value)
    if not match:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2) or "01"), int(match.group(3) or "01"))
    except ValueError:
        return None


@pytest.mark.parametrize(("value", "expected"), [
    ("2019", date(2019, 1, 1)),
    ("2019-05", date(2019, 5, 1)),
    ("2019-05-17", date(2019, 5, 17)),
    ("2019-05-17T23:30:00+02:00", date(2019, 5, 17)),  # the local date as written, not UTC
    ("2019-05-17T23:30:00.123Z", date(2019, 5, 17)),
    ("2019-02-30", None),
    ("2019-13-01T00:00:00Z", None),
    ("20190517", date(2019, 1, 1)),  # not FHIR's form: only the leading year reads
    ("2019-W20-1", date(2019, 1, 1)),
    ("yesterday", None),
    ("", None),
])
def test_fhir_date_strings(value: str, expected: date | None) -> None:
    assert parse_date(value) == expected


def test_dates_and_other_values() -> None:
    assert parse_date(date(2020, 1, 2)) == date(2020, 1, 2)
    assert parse_date(datetime(2020, 1, 2, 23, 59)) == date(2020, 1, 2)
    assert parse_date(None) is None
    assert parse_date(20200102) is None


@settings(max_examples=3000, derandomize=True)
@given(st.text(st.sampled_from(list("0123456789-T:+Z. W\u0662x")), max_size=16))
@pytest.mark.slow
def test_every_string_reads_as_the_documented_pattern(value: str) -> None:
    """The fast path for full dates gives what the pattern gives, for any string (non-ASCII digits too)."""
    assert parse_date(value) == by_pattern(value)
