"""What the clinician reads (docs/reference/clinical-rules.md section 7 point 10): figures rounded per analyte,
names without SNOMED CT semantic tags, age reasons that say why age matters."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .record import PatientRecord

#: Decimals shown per analyte: haemoglobin to one decimal, MCV and B12 whole, MMA and homocysteine two.
DECIMALS: dict[str, int] = {
    "haemoglobin": 1, "mcv": 0, "b12-total": 0, "b12-active": 0, "mma": 2, "homocysteine": 2, "egfr": 0,
}
#: Plain names of the B12 status and follow-up tests.
ANALYTE_NAMES: dict[str, str] = {
    "b12-total": "vitamin B12", "b12-active": "active B12", "mma": "MMA", "homocysteine": "homocysteine",
}
#: The B12 status tests and homocysteine, in the order they are listed.
STATUS_TESTS = ("b12-total", "b12-active", "mma", "homocysteine")

#: A SNOMED CT semantic tag closing a fully specified name: "(disorder)", "(finding)", "(procedure)", ...
_SEMANTIC_TAG = re.compile(
    r"\s*\((?:disorder|finding|procedure|situation|observable entity|regime/therapy|substance|product|"
    r"medicinal product|clinical drug|morphologic abnormality|body structure|qualifier value|"
    r"physical object|event|person|occupation|record artifact|attribute|navigational concept)\)\s*$",
    re.IGNORECASE)


def number(value: float, kind: str | None) -> str:
    """``value`` rounded as the analyte ``kind`` is shown (unknown kinds: at most two decimals, no
    trailing zeros): ``number(12.0648, "haemoglobin") == "12.1"``, ``number(0.5, "mma") == "0.50"``."""
    places = DECIMALS.get(kind or "")
    if places is None:
        return f"{round(value, 2):g}"
    text = f"{value:.{places}f}"
    return "0" if places == 0 and text == "-0" else text


def measured(value: float | None, unit: str | None, kind: str | None, limit: float | None = None) -> str:
    """A figure with its unit ("12.1 g/dL"); "recorded" when there is no number. Haemoglobin in g/L is
    whole. With ``limit`` (the figure it is judged against, in the same unit), a value that would round to
    the limit keeps the decimals that tell them apart ("100.1 fL, above 100", not "100 fL, above 100")."""
    if value is None:
        return "recorded"
    kind = unit_kind(unit, kind)
    text = number(value, kind)
    places = DECIMALS.get(kind or "", 2)
    while limit is not None and value != limit and float(text) == round(limit, places) and places < 3:
        places += 1
        text = f"{value:.{places}f}"
    return f"{text} {unit or ''}".strip()


def unit_kind(unit: str | None, kind: str | None) -> str | None:
    """The rounding to use for ``kind`` in ``unit``: haemoglobin in g/L is whole (one decimal is for g/dL)."""
    return "mcv" if kind == "haemoglobin" and (unit or "").strip().lower() == "g/l" else kind


def without_semantic_tag(name: str) -> str:
    """``name`` without a trailing SNOMED CT semantic tag ("Neuropathy due to diabetes (disorder)" → "Neuropathy
    due to diabetes"); a name that is only a tag is kept."""
    stripped = _SEMANTIC_TAG.sub("", name)
    return stripped if stripped else name


def age_reason(age: int, limit: int | float) -> str:
    """An age reason that says why age matters ("age 84 (deficiency is common over 75)")."""
    return f"age {age} (deficiency is common over {limit:g})"


def age_factor(age: int, limit: int | float) -> str:
    """Age as one risk factor among others ("age 70 (65 or over)")."""
    return f"age {age} ({limit:g} or over)"


def result_line(kind: str, value: float | None, unit: str | None, when: date | None) -> str:
    """One test result as read in a Flag or card ("vitamin B12 142 pg/mL on 2026-08-20")."""
    name = ANALYTE_NAMES.get(kind, kind)
    shown = measured(value, unit, kind)
    return f"{name} {shown} on {when.isoformat()}" if when else f"{name} {shown}"


def tested_results(record: PatientRecord, evidence: Collection[str], as_of: date,
                   shown: str | None = None) -> list[str]:
    """Every B12, MMA or homocysteine result among ``evidence`` (the results that shaped the outcome), oldest
    first, as read ("MMA 0.52 umol/L on 2026-03-01"); ``shown``: a result already stated (the latest B12)."""
    wanted = set(evidence) - {shown}
    found: dict[str, tuple[date, str]] = {}
    for kind in STATUS_TESTS:
        for obs in record.observations_in((kind,), as_of):
            if obs.ref in wanted and obs.ref not in found:
                found[obs.ref] = (obs.effective or date.min, result_line(kind, obs.value, obs.unit, obs.effective))
    return [line for _, line in sorted(found.values())]
