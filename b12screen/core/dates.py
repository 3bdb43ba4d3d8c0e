"""FHIR date handling: every duration is counted in days from an explicit as-of date."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

DAYS_PER_MONTH = 30.44
DAYS_PER_YEAR = 365.25

_DATE_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def parse_date(value: object) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant (string, date or datetime); None if unusable.

    Partial dates take their first day (``2019`` → 2019-01-01, ``2019-05`` → 2019-05-01). The local
    date written in the value is used, ignoring the time-zone offset, as a clinician would read it.
    """
    if value.__class__ is str and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:  # the common case, a full date or dateTime: one C call
            return date.fromisoformat(value[:10])
        except ValueError:
            pass  # e.g. digits that are not ASCII: the pattern below decides
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    match = _DATE_PREFIX.match(value)
    if not match:
        return None
    year, month, day = match.group(1), match.group(2) or "01", match.group(3) or "01"
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def months(n: float) -> timedelta:
    """A duration of ``n`` months (1 month = 30.44 days)."""
    return timedelta(days=n * DAYS_PER_MONTH)


def years(n: float) -> timedelta:
    """A duration of ``n`` years (1 year = 365.25 days)."""
    return timedelta(days=n * DAYS_PER_YEAR)


def age_in_years(birth: date, as_of: date) -> int:
    """Whole years from ``birth`` to ``as_of``."""
    had_birthday = (as_of.month, as_of.day) >= (birth.month, birth.day)
    return as_of.year - birth.year - (0 if had_birthday else 1)


def parse_as_of(text: str) -> date:
    """Parse a CLI or config as-of date (YYYY-MM-DD)."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"as-of date must be YYYY-MM-DD, got {text!r}") from exc
