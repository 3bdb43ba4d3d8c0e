"""Abnormal results that were not acted on (docs/reference/clinical-rules.md section 7 points 1 and 2).

An abnormal B12, MMA or homocysteine result is never "recently tested": :func:`unactioned` finds the result
that makes MOD-LOW apply, and :func:`answering_tests` the tests that may satisfy a rule (MOD-RECENT). No I/O,
no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from .clinical import nitrous_oxide_first
from .dates import months
from .labs import B12Result, Band, Bands, b12_results, metabolites
from .model import Priority
from .record import PatientRecord
from .therapy import Therapy

DX_SETS = ("b12-deficiency-dx",)


@dataclass(frozen=True)
class Unactioned:
    """An abnormal result with nothing done after it: its reference, date, wording and priority."""

    ref: str
    when: date
    text: str
    priority: Priority
    why: str

    def note(self) -> str:
        return (f"{self.text} on {self.when.isoformat()} {self.why}; no treatment or repeat test is recorded "
                "since")


def _dx_on_or_after(record: PatientRecord, when: date, as_of: date) -> bool:
    conditions = record.conditions_in(DX_SETS, as_of) + record.condition_history(DX_SETS, as_of)
    return any(c.onset is not None and c.onset >= when for c in conditions)


def _b12_text(result: B12Result) -> str:
    """"Latest B12 150 pg/mL" ("Latest B12 (active) 20 pmol/L"): the Flag then does not repeat the result."""
    return f"Latest B12{' (active)' if result.kind == 'b12-active' else ''} {result.text}"


def unactioned(record: PatientRecord, as_of: date, settings: Mapping[str, Any], bands: Bands,
               therapy: Therapy) -> Unactioned | None:
    """MOD-LOW (7.1, 7.2): the latest deficient B12 or raised MMA of any date with no B12 status test, B12
    deficiency diagnosis or therapy after it (HIGH within ``latest_b12_months``, else MEDIUM); or a
    raised homocysteine or MMA after nitrous oxide use with no therapy after it (HIGH)."""
    tests = record.b12_status_tests(as_of)
    mma_limit = float(settings["mma_raised_umol_l"])
    recent_from = as_of - months(settings["latest_b12_months"])
    found: list[tuple[date, str, str, str]] = []  # when, ref, text, why
    results = b12_results(record, as_of, bands)
    if results and results[-1].band is Band.DEFICIENT:
        found.append((results[-1].when, results[-1].ref, _b12_text(results[-1]), "is in the deficient range"))
    mma = metabolites(record, as_of, ("mma",))
    if mma and mma[-1].raised(mma_limit):
        found.append((mma[-1].when, mma[-1].ref, mma[-1].shown(),
                      f"is raised (above {mma_limit:.2f} µmol/L)"))
    for when, ref, text, why in sorted(found, reverse=True):
        if any(t > when for t, _ in tests) or _dx_on_or_after(record, when, as_of) or therapy.any_after(when):
            continue
        priority = Priority.HIGH if when >= recent_from else Priority.MEDIUM
        return Unactioned(ref, when, text, priority, why)
    return _after_nitrous_oxide(record, as_of, settings, therapy)


def _after_nitrous_oxide(record: PatientRecord, as_of: date, settings: Mapping[str, Any],
                         therapy: Therapy) -> Unactioned | None:
    """A raised homocysteine or MMA (the latest of either) dated after the first nitrous oxide record (7.2)."""
    first = nitrous_oxide_first(record, as_of)
    if first is None:
        return None
    after = [m for m in metabolites(record, as_of) if m.when >= first]
    if not after:
        return None
    latest = after[-1]
    limit = float(settings["mma_raised_umol_l" if latest.kind == "mma" else "homocysteine_raised_umol_l"])
    if not latest.raised(limit) or therapy.any_after(latest.when):
        return None
    return Unactioned(latest.ref, latest.when, latest.shown(), Priority.HIGH,
                      f"is raised (above {limit:.2f} µmol/L) after nitrous oxide use")


def low_figures(record: PatientRecord, as_of: date, settings: Mapping[str, Any], bands: Bands) -> list[str]:
    """MOD-LOW's figures against their thresholds, in words (for ``b12screen explain``)."""
    figures: list[str] = []
    results = b12_results(record, as_of, bands)
    if results:
        latest = results[-1]
        limit = bands.active_deficient_pmol_l if latest.kind == "b12-active" else bands.total_deficient_ng_l
        unit = "pmol/L" if latest.kind == "b12-active" else "ng/L"
        figures.append(f"{_b12_text(latest)} on {latest.when.isoformat()}: {latest.band.value} (deficient below "
                       f"{limit:g} {unit})")
    limits = {"mma": float(settings["mma_raised_umol_l"]),
              "homocysteine": float(settings["homocysteine_raised_umol_l"])}
    for kind, limit in limits.items():
        found = metabolites(record, as_of, (kind,))
        if found:
            figures.append(f"latest {found[-1].text()}: {'raised' if found[-1].raised(limit) else 'not raised'} "
                           f"(raised above {limit:.2f} µmol/L)")
    first = nitrous_oxide_first(record, as_of)
    if first is not None:
        figures.append(f"first nitrous oxide record {'undated' if first == date.min else first.isoformat()}: a "
                       "raised homocysteine or MMA after it counts")
    figures.append(f"HIGH when the result is on or after {(as_of - months(settings['latest_b12_months'])).isoformat()}"
                   f" ({settings['latest_b12_months']:g} months), MEDIUM when older")
    return figures


@dataclass(frozen=True)
class AnsweringTests:
    """The tests that may satisfy a rule (oldest first) and the indeterminate B12 results left unanswered."""

    tests: list[tuple[date, str]]
    unanswered: list[B12Result]


def answering_tests(record: PatientRecord, as_of: date, bands: Bands, mma_limit: float,
                    kinds: tuple[str, ...] = ()) -> AnsweringTests:
    """MOD-RECENT's tests (7.1): the B12 status tests less deficient B12 results, raised MMA results and
    indeterminate B12 results with no MMA or homocysteine after them. With ``kinds`` (N2O-1: homocysteine,
    MMA; 7.2) only those results answer."""
    follow_ups = metabolites(record, as_of)
    if kinds:
        return AnsweringTests([(m.when, m.ref) for m in follow_ups if m.kind in kinds], [])
    excluded: set[str] = {m.ref for m in follow_ups if m.kind == "mma" and m.raised(mma_limit)}
    unanswered: list[B12Result] = []
    for result in b12_results(record, as_of, bands):
        if result.band is Band.DEFICIENT:
            excluded.add(result.ref)
        elif result.band is Band.INDETERMINATE and not any(m.when > result.when for m in follow_ups):
            excluded.add(result.ref)
            unanswered.append(result)
    return AnsweringTests([t for t in record.b12_status_tests(as_of) if t[1] not in excluded], unanswered)


def unanswered_note(result: B12Result) -> str:
    """The wording for an indeterminate result older than MOD-INDET's look-back that nobody followed up."""
    kind = "Active B12" if result.kind == "b12-active" else "B12"
    return (f"{kind} {result.text} on {result.when.isoformat()} was indeterminate and not followed up with MMA or "
            "homocysteine, so it does not count as a recent test")
