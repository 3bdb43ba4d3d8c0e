"""The audit's counts per group, its rates with Wilson 95 % intervals, its definitions and caveats
(docs/analyst/audit.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import Any

from .followup import FollowUp

AUDIT_CSV, AUDIT_PATIENTS, AUDIT_ERRORS = "audit.csv", "audit_patients.csv", "audit_errors.ndjson"
AUDIT_HTML, AUDIT_JSON = "audit.html", "audit.json"
AUDIT_NAMES = (AUDIT_CSV, AUDIT_PATIENTS, AUDIT_ERRORS, AUDIT_HTML, AUDIT_JSON)  # audit.json last: a complete set
GROUP_COLUMNS = ("group", "patients", "tested", "deficient", "indeterminate", "normal", "treated", "test_rate",
                 "yield", "yield_low", "yield_high")
PATIENT_COLUMNS = ("patient", "outcome", "priority", "rules", "tested", "first_test_date", "first_test_band",
                   "treated")
FLAGGED, NOT_FLAGGED, ALL = "flagged", "not-flagged", "all"
BANDS = ("deficient", "indeterminate", "normal")
NO_RESULTS = "no B12 results in the follow-up window"

DEFINITIONS = {
    "group": "a rule id (patients whose outcome listed that rule), flagged (any Flag), not-flagged (screened, "
             "no Flag) or all; patients not evaluated at the as-of date are in no group",
    "patients": "patients in the group",
    "tested": "patients with a B12 status test (total B12, active B12, MMA) in the follow-up window; it can "
              "exceed deficient + indeterminate + normal by first tests without a band (no value, an unknown "
              "unit, a billed test without a result)",
    "deficient": "tested patients whose first test in the window was deficient (a raised MMA counts)",
    "indeterminate": "tested patients whose first test in the window was indeterminate",
    "normal": "tested patients whose first test in the window was normal (an MMA not raised counts)",
    "treated": "patients with a B12 deficiency diagnosis or B12 therapy started in the window",
    "test_rate": "tested / patients",
    "yield": "deficient / tested (empty when nothing was tested)",
    "yield_low": "lower end of the Wilson 95 % score interval of the yield",
    "yield_high": "upper end of the Wilson 95 % score interval of the yield",
}

CAVEATS = (
    "Yield is measured only among patients who had a B12 test in the follow-up window. Untested patients are "
    "not negatives: their B12 status is unknown, and clinicians test the patients they suspect, so the yield "
    "among the tested can differ from the yield among all patients (verification bias).",
    "Every rate is shown with its Wilson 95 % interval. In a small group the interval is wide: read the "
    "interval, not the point.",
    "The outcome at the as-of date uses only what was recorded on or before that date; records dated later "
    "count only as follow-up (a diagnosis resolved or a medicine stopped later, with its end date, counts as "
    "current at the as-of date). Records without a date count as known at the as-of date, and a status "
    "without an end date is read as the export states it (an order marked stopped reads as stopped).",
    "Tests, diagnoses and prescriptions made outside the records exported (another laboratory or "
    "organisation), or after the export ends, are missing from the follow-up.",
)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / n`` (E. B. Wilson, J Am Stat Assoc 1927; method 3 of
    R. G. Newcombe, Stat Med 1998, without continuity correction); None when ``n`` is 0."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass
class Tally:
    """The counts of one group."""

    patients: int = 0
    tested: int = 0
    deficient: int = 0
    indeterminate: int = 0
    normal: int = 0
    treated: int = 0
    flagged: int = 0

    def add(self, follow: FollowUp, flagged: bool) -> None:
        tested, _when, band, treated = follow
        self.patients += 1
        self.tested += tested
        self.treated += treated
        self.flagged += flagged
        if band in BANDS:
            setattr(self, band, getattr(self, band) + 1)

    def figures(self, group: str, results: bool, screened: int) -> dict[str, Any]:
        """The group's row: counts, rates and intervals (rates None when they cannot be measured)."""
        test_ci = wilson(self.tested, self.patients) if results else None
        yield_ci = wilson(self.deficient, self.tested)
        return {
            "group": group, "patients": self.patients, "tested": self.tested, "deficient": self.deficient,
            "indeterminate": self.indeterminate, "normal": self.normal, "treated": self.treated,
            "test_rate": _ratio(self.tested, self.patients) if results else None,
            "yield": _ratio(self.deficient, self.tested),
            "yield_low": yield_ci[0] if yield_ci else None, "yield_high": yield_ci[1] if yield_ci else None,
            "test_rate_low": test_ci[0] if test_ci else None, "test_rate_high": test_ci[1] if test_ci else None,
            "flagged": self.flagged,
            "per_1000_screened": round(1000 * self.patients / screened, 1) if screened else None,
        }


class AuditTally:
    """Counts per group as patients stream past (memory: one :class:`Tally` per rule id)."""

    def __init__(self) -> None:
        self.by_rule: dict[str, Tally] = {}
        self.fixed = {FLAGGED: Tally(), NOT_FLAGGED: Tally(), ALL: Tally()}
        self.not_evaluated = 0

    def add(self, outcome: str, flagged: bool, rules: tuple[str, ...], follow: FollowUp) -> None:
        if outcome == "not-evaluated":
            self.not_evaluated += 1
            return
        for rule in dict.fromkeys(rules):
            self.by_rule.setdefault(rule, Tally()).add(follow, flagged)
        self.fixed[FLAGGED if flagged else NOT_FLAGGED].add(follow, flagged)
        self.fixed[ALL].add(follow, flagged)

    @property
    def results(self) -> bool:
        """Whether any screened patient had a B12 status test in the window."""
        return self.fixed[ALL].tested > 0

    def rows(self) -> list[dict[str, Any]]:
        """One row per group: rule ids in order, then flagged, not-flagged, all."""
        screened = self.fixed[ALL].patients
        groups = [*sorted(self.by_rule.items()), *self.fixed.items()]
        return [tally.figures(name, self.results, screened) for name, tally in groups]

    def report(self, as_of: date, end: date) -> dict[str, Any]:
        """The figures of ``audit.json`` besides the run record."""
        screened = self.fixed[ALL].patients
        alerts = self.fixed[FLAGGED].patients
        caveats = list(CAVEATS)
        if not self.results:
            caveats.insert(0, f"Note, {NO_RESULTS}: no screened patient has a B12 status test dated "
                              f"after {as_of.isoformat()} up to {end.isoformat()}, so test rate and yield "
                              "cannot be measured on this export (they are not zero).")
        return {
            "screened": screened, "not_evaluated": self.not_evaluated, "alerts": alerts,
            "alerts_per_1000_screened": round(1000 * alerts / screened, 1) if screened else None,
            "follow_up_results": self.results, "message": None if self.results else NO_RESULTS,
            "groups": self.rows(), "definitions": DEFINITIONS, "caveats": caveats,
        }


def csv_value(value: Any) -> str:
    """A CSV cell: empty for None, four decimals for a rate, text otherwise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
