"""Flat rows for analysts: one per patient, shared by ``report.csv``, ``report.parquet`` and
``ScreeningResults.to_rows()``.

A row is built from a report entry, its Flag (plain JSON) and the patient's demographics, so the batch
(which holds them as JSON) and the library (which holds results) give the same rows. ``KINDS`` is the one
schema of every door: ``to_rows()`` gives Python values of these kinds (dates as ``datetime.date``),
``report.parquet`` the matching Arrow types, and :func:`from_csv` reads a ``report.csv`` record back to them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from ..core.outcome import FLAGGED_OUTCOMES, NO_SUGGESTION

if TYPE_CHECKING:
    from ..core.record import PatientRecord

#: Column name → kind: text, bool, int (int64), float (float64), date (date32), list (of text).
KINDS: dict[str, str] = {
    "patient": "text", "age": "int", "age_band": "text", "sex": "text", "deceased": "bool",
    "flagged": "bool", "outcome": "text", "priority": "text", "reasons": "list", "risk_factors": "list",
    "modifiers": "list", "recommended_test_code": "text", "recommended_test": "text", "flag_text": "text",
    "latest_b12_value": "float", "latest_b12_unit": "text", "latest_b12_date": "date", "latest_b12_band": "text",
    "evidence_count": "int", "as_of": "date", "profile": "text",
}
COLUMNS = tuple(KINDS)
LIST_COLUMNS = frozenset(k for k, v in KINDS.items() if v == "list")
LIST_SEPARATOR = ";"
#: Age bands (upper bound exclusive, label); 75 and over is ``75+``.
AGE_BANDS = ((18, "<18"), (40, "18-39"), (65, "40-64"), (75, "65-74"))
OLDEST_BAND = "75+"
BAND_LABELS = (*(label for _, label in AGE_BANDS), OLDEST_BAND)
#: FHIR R4 AdministrativeGender, the codes ``sex`` may hold.
ADMINISTRATIVE_GENDER = frozenset({"male", "female", "other", "unknown"})


def age_band(age: int | None) -> str | None:
    """The band of a whole-year age (None without one)."""
    if age is None:
        return None
    return next((label for upper, label in AGE_BANDS if age < upper), OLDEST_BAND)


def demographics(record: PatientRecord, as_of: date) -> dict[str, Any]:
    """Age (whole years at ``as_of``), its band, administrative gender (a code of FHIR's value set, else
    None) and deceased status at ``as_of``."""
    age = record.age(as_of)
    gender = record.patient.gender if record.patient is not None else None
    sex = gender if isinstance(gender, str) and gender in ADMINISTRATIVE_GENDER else None  # else no code: not copied
    return {"age": age, "age_band": age_band(age), "sex": sex, "deceased": record.is_deceased(as_of)}


def reasons(report: Mapping[str, Any]) -> list[str]:
    """The rules that led to the outcome or, when a modifier decided it (e.g. MOD-LOW), the modifiers."""
    if report["rules"]:
        return list(report["rules"])
    return [] if report["outcome"] == NO_SUGGESTION else list(report["modifiers"])


def row(report: Mapping[str, Any], flag: Mapping[str, Any] | None,
        who: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One analyst row (lists stay lists, ``flagged`` a bool, dates as dates, missing values None)."""
    test = report.get("recommended_test") or {}
    b12 = report.get("latest_b12") or {}
    who = who or {}
    value = b12.get("value")
    return typed({
        "patient": report["patient"],
        "age": who.get("age"),
        "age_band": who.get("age_band"),
        "sex": who.get("sex"),
        "deceased": bool(who.get("deceased")),
        "flagged": report["outcome"] in FLAGGED_OUTCOMES and report["priority"] is not None,
        "outcome": report["outcome"],
        "priority": report["priority"],
        "reasons": reasons(report),
        "risk_factors": list(report["risk_factors"]),
        "modifiers": list(report["modifiers"]),
        "recommended_test_code": test.get("code"),
        "recommended_test": test.get("display"),
        "flag_text": (flag or {}).get("code", {}).get("text"),
        "latest_b12_value": value,
        "latest_b12_unit": b12.get("unit"),
        "latest_b12_date": b12.get("date"),
        "latest_b12_band": b12.get("band"),
        "evidence_count": len(report["evidence"]),
        "as_of": report["as_of"],
        "profile": report["profile"],
    })


def _cast(kind: str, value: Any) -> Any:
    if kind == "list":
        return list(value) if isinstance(value, list) else value.split(LIST_SEPARATOR) if value else []
    if value is None or (value == "" and kind != "text"):
        return None
    if kind == "date":
        return value if isinstance(value, date) else date.fromisoformat(value)
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return value if isinstance(value, bool) else value == "true"
    return value


def typed(values: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column of its kind: what ``to_rows()`` gives, from a row read back from JSON."""
    return {name: _cast(kind, values.get(name)) for name, kind in KINDS.items()}


def from_csv(record: Mapping[str, str]) -> dict[str, Any]:
    """A ``report.csv`` record (as ``csv.DictReader`` reads it) as the typed row ``to_rows()`` gives."""
    return typed({name: (None if record[name] == "" and KINDS[name] == "text" else record[name])
                  for name in COLUMNS})


def to_pandas(rows: list[dict[str, Any]]) -> Any:
    """Rows as a pandas DataFrame with the columns of ``report.csv`` (pandas is an optional extra); whole
    numbers stay whole with a gap (``Int64``)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas, which b12screen does not install by default: "
                          "pip install 'b12screen[pandas]' (or pip install pandas)") from None
    table = pandas.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({name: "Int64" for name, kind in KINDS.items() if kind == "int"})


def csv_header() -> bytes:
    return csv_line(dict(zip(COLUMNS, COLUMNS, strict=True)))


def csv_line(values: Mapping[str, Any]) -> bytes:
    """One CSV record (RFC 4180 quoting, ``\\r\\n``): lists joined by ``;``, booleans ``true``/``false``,
    dates ISO 8601."""
    out = io.StringIO()
    cells = []
    for name in COLUMNS:
        value = values[name]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = LIST_SEPARATOR.join(value)
        elif isinstance(value, date):
            value = value.isoformat()
        cells.append("" if value is None else value)
    csv.writer(out).writerow(cells)
    return out.getvalue().encode("utf-8")
