"""Builders for the unit tests of the core: compact facts and records (no reading, no value-set matching:
each fact takes the value sets it belongs to by id, so a test states exactly what the record holds), and an
extractor over the built-in value sets for the tests of reading."""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache
from typing import Any

from conftest import AS_OF

from b12screen.core import facts as f
from b12screen.core.record import PatientRecord
from b12screen.core.terminology import Terminology, builtin_value_sets
from b12screen.sources.extract import Extractor


def days_before(n: int, as_of: date = AS_OF) -> date:
    return as_of - timedelta(days=n)


def person(birth: date | None = date(1960, 1, 1), gender: str | None = "female", deceased: bool = False,
           deceased_date: date | None = None, ref: str = "Patient/p1") -> f.PatientFact:
    return f.PatientFact(ref, birth, deceased, deceased_date, gender)


def med(*concepts: str, resource_type: str = "MedicationRequest", status: str | None = "active",
        start: date | None = None, end: date | None = None, supply_days: float | None = None,
        doses: tuple[f.Dose, ...] = (), strengths: tuple[f.Strength, ...] = (), route: str = "", label: str = "drug",
        period: bool = False, ref: str = "MedicationRequest/m1") -> f.MedicationUse:
    return f.MedicationUse(ref, resource_type, frozenset(concepts), status, start, end, supply_days, doses,
                         strengths, route, label, period)


def cond(*concepts: str, clinical: str | None = "active", verification: str | None = None,
         onset: date | None = None, abatement: date | None = None, label: str = "condition",
         ref: str = "Condition/c1") -> f.ConditionFact:
    return f.ConditionFact(ref, "Condition", frozenset(concepts), clinical, verification, onset, abatement, label)


def proc(*concepts: str, status: str | None = "completed", performed: date | None = None,
         ref: str = "Procedure/pr1") -> f.ProcedureFact:
    return f.ProcedureFact(ref, frozenset(concepts), status, performed, "procedure", None)


def obs(*concepts: str, effective: date | None = None, value: float | None = None, unit: str | None = None,
        status: str | None = "final", value_concepts: tuple[str, ...] = (), ref: str = "Observation/o1",
        **extra: Any) -> f.ObservationFact:
    fields: dict[str, Any] = {"comparator": None, "interpretation": frozenset(), "ref_low": None, "ref_high": None,
                              "label": "observation", **extra}
    return f.ObservationFact(ref, frozenset(concepts), frozenset(value_concepts), status, effective, value, unit,
                           **fields)


def record(*facts: object, patient: f.PatientFact | None = None, key: str = "Patient/p1") -> PatientRecord:
    """A sorted record of ``facts`` for ``patient`` (a 66-year-old woman at :data:`AS_OF` unless given)."""
    built = PatientRecord(key, patient=patient if patient is not None else person())
    for fact in facts:
        built.add(fact)
    built.sort()
    return built


def b12_total(value: float, days_ago: int, ref: str = "Observation/b12", unit: str = "ng/L") -> f.ObservationFact:
    """A total B12 result ``days_ago`` days before :data:`AS_OF`."""
    return obs("b12-total", effective=days_before(days_ago), value=value, unit=unit, ref=ref)


@cache
def terminology() -> Terminology:
    """The built-in value sets (loaded once per test process)."""
    return Terminology([("b12screen", vs) for vs in builtin_value_sets()])


def extractor(validate: bool = False) -> Extractor:
    """An extractor over the built-in value sets (``validate``: the ``all`` policy)."""
    return Extractor(terminology(), validate)
