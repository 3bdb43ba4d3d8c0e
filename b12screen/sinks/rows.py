"""Flat rows for analysts: one per patient, shared by ``report.csv`` and ``ScreeningResults.to_rows()``.

A row is built from a report entry and its Flag (plain JSON), so the batch (which holds both as JSON)
and the library (which holds results) give the same rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from ..core.outcome import FLAGGED_OUTCOMES, NO_SUGGESTION

COLUMNS = ("patient", "flagged", "outcome", "priority", "reasons", "risk_factors", "modifiers",
           "recommended_test_code", "recommended_test", "flag_text", "evidence_count", "as_of", "profile")
LIST_COLUMNS = frozenset({"reasons", "risk_factors", "modifiers"})
LIST_SEPARATOR = ";"


def reasons(report: Mapping[str, Any]) -> list[str]:
    """The rules that led to the outcome or, when a modifier decided it (e.g. MOD-LOW), the modifiers."""
    if report["rules"]:
        return list(report["rules"])
    return [] if report["outcome"] == NO_SUGGESTION else list(report["modifiers"])


def row(report: Mapping[str, Any], flag: Mapping[str, Any] | None) -> dict[str, Any]:
    """One analyst row (lists stay lists, ``flagged`` a bool, missing values None)."""
    test = report.get("recommended_test") or {}
    return {
        "patient": report["patient"],
        "flagged": report["outcome"] in FLAGGED_OUTCOMES and report["priority"] is not None,
        "outcome": report["outcome"],
        "priority": report["priority"],
        "reasons": reasons(report),
        "risk_factors": list(report["risk_factors"]),
        "modifiers": list(report["modifiers"]),
        "recommended_test_code": test.get("code"),
        "recommended_test": test.get("display"),
        "flag_text": (flag or {}).get("code", {}).get("text"),
        "evidence_count": len(report["evidence"]),
        "as_of": report["as_of"],
        "profile": report["profile"],
    }


def to_pandas(rows: list[dict[str, Any]]) -> Any:
    """Rows as a pandas DataFrame with the columns of ``report.csv`` (pandas is an optional extra)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas, which b12screen does not install by default: "
                          "pip install 'b12screen[pandas]' (or pip install pandas)") from None
    return pandas.DataFrame(rows, columns=list(COLUMNS))


def csv_header() -> bytes:
    return csv_line(dict(zip(COLUMNS, COLUMNS, strict=True)))


def csv_line(values: Mapping[str, Any]) -> bytes:
    """One CSV record (RFC 4180 quoting, ``\\r\\n``): lists joined by ``;``, booleans ``true``/``false``."""
    out = io.StringIO()
    cells = []
    for name in COLUMNS:
        value = values[name]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = LIST_SEPARATOR.join(value)
        cells.append("" if value is None else value)
    csv.writer(out).writerow(cells)
    return out.getvalue().encode("utf-8")
