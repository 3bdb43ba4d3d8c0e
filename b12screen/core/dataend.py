"""When the data ends: the newest dated record a patient's facts hold, and the warning when the as-of date is
far past it (a corpus that ends in 2021 screened "today" ages everyone and runs every medicine on for years).
No I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

from .facts import ConditionFact, MedicationUse, ObservationFact, PatientFact, ProcedureFact

if TYPE_CHECKING:
    from .record import PatientRecord

#: ``--as-of data-end``: screen as of the newest record in the input.
DATA_END = "data-end"
#: The as-of date may be this many days after the newest record before a warning is given.
STALE_AFTER_DAYS = 365


def fact_date(fact: object) -> date | None:
    """The clinical date a fact was recorded at (a medicine's start, not its planned end)."""
    if isinstance(fact, MedicationUse):
        return fact.start
    if isinstance(fact, ConditionFact):
        return max((d for d in (fact.onset, fact.abatement) if d is not None), default=None)
    if isinstance(fact, ProcedureFact):
        return fact.performed
    if isinstance(fact, ObservationFact):
        return fact.effective
    if isinstance(fact, PatientFact):
        return fact.deceased_date
    return None


def newest_date(facts: Iterable[object]) -> date | None:
    """The newest clinical date among ``facts`` (None when none is dated)."""
    return max((d for f in facts if (d := fact_date(f)) is not None), default=None)


def stale_warning(as_of: date, newest: date | None, remedy: str = f"--as-of {DATA_END}") -> str | None:
    """The warning when ``as_of`` is more than a year after ``newest``, else None; ``remedy`` names how to
    screen as of the newest record instead (the command line's option by default)."""
    if newest is None or (as_of - newest).days <= STALE_AFTER_DAYS:
        return None
    years = (as_of - newest).days / 365.25
    return (f"the as-of date {as_of.isoformat()} is {years:.1f} years after the newest record in the input "
            f"({newest.isoformat()}): ages, medicine durations and test windows run on past the end of the data; "
            f"{remedy} screens as of {newest.isoformat()}")


def record_newest(record: PatientRecord) -> date | None:
    """The newest clinical date of one patient's record (their death date included)."""
    return newest_date([record.patient, *record.medications, *record.conditions, *record.procedures,
                        *record.observations])
