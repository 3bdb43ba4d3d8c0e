"""Compact, typed facts extracted from FHIR R4 resources: what the rules need and nothing more.

Extraction works on the raw JSON (dicts) so that screening millions of resources stays close to raw
JSON speed. Which resources are also checked against their fhir.resources R4B model depends on the
validation policy (``evidence``, the default: only those a result rests on, after screening; ``all``: every
resource a rule can use, when it is read; see :mod:`b12screen.sources.extract`).
Facts are small frozen dataclasses that pickle cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from .dates import parse_date
from .pickling import positional_pickle

MEDICATION_TYPES = (
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
)


@positional_pickle
@dataclass(frozen=True, slots=True)
class PatientFact:
    ref: str
    birth_date: date | None
    deceased: bool
    deceased_date: date | None
    gender: str | None


@positional_pickle
@dataclass(frozen=True, slots=True)
class Dose:
    """One dosage line: amount per administration and administrations per day (None = unknown)."""

    value: float | None
    unit: str | None
    per_day: float | None


@positional_pickle
@dataclass(frozen=True, slots=True)
class Strength:
    """Amount of one ingredient (by value set id) per unit of the product."""

    concept: str
    value: float
    unit: str


@positional_pickle
@dataclass(frozen=True, slots=True)
class MedicationUse:
    """One MedicationStatement/Request/Dispense/Administration of a drug the value sets know."""

    ref: str
    resource_type: str
    concepts: frozenset[str]
    status: str | None
    start: date | None
    end: date | None
    supply_days: float | None
    doses: tuple[Dose, ...]
    strengths: tuple[Strength, ...]
    route: str
    label: str
    period: bool = False


@positional_pickle
@dataclass(frozen=True, slots=True)
class ConditionFact:
    """A Condition, or a Flag / Encounter diet preference read the same way."""

    ref: str
    resource_type: str
    concepts: frozenset[str]
    clinical_status: str | None
    verification_status: str | None
    onset: date | None
    abatement: date | None
    label: str
    length_cm: float | None = None


@positional_pickle
@dataclass(frozen=True, slots=True)
class ProcedureFact:
    ref: str
    concepts: frozenset[str]
    status: str | None
    performed: date | None
    label: str
    length_cm: float | None


@positional_pickle
@dataclass(frozen=True, slots=True)
class ObservationFact:
    ref: str
    concepts: frozenset[str]
    value_concepts: frozenset[str]
    status: str | None
    effective: date | None
    value: float | None
    unit: str | None
    comparator: str | None
    interpretation: frozenset[str]
    ref_low: float | None
    ref_high: float | None
    label: str


# -- raw JSON helpers ----------------------------------------------------------------------------


def first_code(concept: Any) -> str | None:
    """The first coding's code of a CodeableConcept dict (statuses and the like)."""
    if isinstance(concept, Mapping):
        for coding in concept.get("coding") or []:
            if isinstance(coding, Mapping) and coding.get("code"):
                return str(coding["code"])
    return None


def concept_label(concept: Any) -> str:
    """A human label of a CodeableConcept dict: its text, else the first display, else the code."""
    if not isinstance(concept, Mapping):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, Mapping) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def period_bounds(period: Any) -> tuple[date | None, date | None]:
    if not isinstance(period, Mapping):
        return None, None
    return parse_date(period.get("start")), parse_date(period.get("end"))


def effective_dates(resource: Mapping[str, Any], prefix: str) -> tuple[date | None, date | None]:
    """(start, end) of a choice element ``<prefix>[x]`` (DateTime, Period, Instant, Date)."""
    if f"{prefix}Period" in resource:
        return period_bounds(resource[f"{prefix}Period"])
    for suffix in ("DateTime", "Instant", "Date"):
        if f"{prefix}{suffix}" in resource:
            d = parse_date(resource[f"{prefix}{suffix}"])
            return d, None
    return None, None


_LENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*(cm|centimet(?:er|re)s?|mm|m)\b", re.IGNORECASE)


def length_in_cm(*texts: str | None) -> float | None:
    """A resection length written in free text ("40 cm of terminal ileum"), in cm; the largest one
    when several are written ("3 cm anastomosis; 40 cm resected")."""
    found: list[float] = []
    for text in texts:
        for m in _LENGTH.finditer(text or ""):
            value, unit = float(m.group(1)), m.group(2).lower()
            found.append(value / 10 if unit == "mm" else value * 100 if unit == "m" else value)
    return max(found) if found else None


def notes_text(resource: Mapping[str, Any]) -> str:
    parts = []
    for note in resource.get("note") or []:
        if isinstance(note, Mapping) and note.get("text"):
            parts.append(str(note["text"]))
    return " ".join(parts)


# -- doses ---------------------------------------------------------------------------------------

_TIMING_CODES = {"QD": 1.0, "BID": 2.0, "TID": 3.0, "QID": 4.0, "QOD": 0.5, "AM": 1.0, "PM": 1.0,
                 "QAM": 1.0, "QPM": 1.0, "QHS": 1.0, "Q4H": 6.0, "Q6H": 4.0, "Q8H": 3.0, "Q12H": 2.0}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.44, "a": 365.25}


def per_day_of(timing: Any) -> float | None:
    """Administrations per day from a Timing dict (repeat.frequency/period/periodUnit or a code)."""
    if not isinstance(timing, Mapping):
        return None
    repeat = timing.get("repeat")
    if isinstance(repeat, Mapping) and repeat.get("period") and repeat.get("periodUnit") in _PERIOD_DAYS:
        frequency = repeat.get("frequency") or 1  # the usual frequency; frequencyMax is an upper bound
        try:
            days = float(repeat["period"]) * _PERIOD_DAYS[repeat["periodUnit"]]
            return float(frequency) / days if days > 0 else None
        except (TypeError, ValueError):
            return None
    code = first_code(timing.get("code"))
    if code and code.upper() in _TIMING_CODES:
        return _TIMING_CODES[code.upper()]
    return None


def dose_of(dosage: Any) -> Dose | None:
    """A :class:`Dose` from one Dosage (or MedicationAdministration.dosage) dict."""
    if not isinstance(dosage, Mapping):
        return None
    value: float | None = None
    unit: str | None = None
    quantity = dosage.get("dose")  # MedicationAdministration.dosage.dose
    if not isinstance(quantity, Mapping):
        for dr in dosage.get("doseAndRate") or []:
            if isinstance(dr, Mapping) and isinstance(dr.get("doseQuantity"), Mapping):
                quantity = dr["doseQuantity"]
                break
    if isinstance(quantity, Mapping) and quantity.get("value") is not None:
        try:
            value = float(quantity["value"])
        except (TypeError, ValueError):
            value = None
        unit = str(quantity.get("code") or quantity.get("unit") or "") or None
    return Dose(value=value, unit=unit, per_day=per_day_of(dosage.get("timing")))


_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|mcg|µg|ug|g)\b", re.IGNORECASE)


def strengths_from_name(name: str, concepts: frozenset[str], terminology: Any) -> list[Strength]:
    """Strengths written in an RxNorm-style product name, e.g. ``sitagliptin 50 MG / metformin
    hydrochloride 1000 MG Oral Tablet``: each ``/``-separated component is matched to a value set."""
    out: list[Strength] = []
    if not name:
        return out
    components = [c for c in name.split(" / ") if c.strip()]
    for component in components:
        m = _STRENGTH.search(component)
        if not m:
            continue
        matched = terminology.match_text(component) & concepts
        if not matched and len(components) == 1:
            matched = concepts
        for concept in sorted(matched):
            out.append(Strength(concept, float(m.group(1)), m.group(2).lower()))
    return out


def strengths_from_medication(medication: Mapping[str, Any], terminology: Any) -> list[Strength]:
    """Strengths from Medication.ingredient[].strength (numerator per one unit of the product)."""
    out: list[Strength] = []
    for ingredient in medication.get("ingredient") or []:
        if not isinstance(ingredient, Mapping):
            continue
        item = ingredient.get("itemCodeableConcept")
        concepts = terminology.match_concept(item) if item else frozenset()
        strength = ingredient.get("strength")
        if not concepts or not isinstance(strength, Mapping):
            continue
        numerator, denominator = strength.get("numerator") or {}, strength.get("denominator") or {}
        try:
            value = float(numerator["value"]) / float(denominator.get("value") or 1)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        unit = str(numerator.get("code") or numerator.get("unit") or "").lower()
        for concept in sorted(concepts):
            out.append(Strength(concept, value, unit))
    return out
