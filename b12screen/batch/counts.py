"""``counts.csv``: aggregate counts safe to share outside the care team.

Patients by outcome, priority, age band and sex, with every marginal (``*`` stands for "all"), and the
flagged patients by reason (rule, or the modifier that decided) with its age band and sex marginals. A count
below ``min_cell`` (but above zero) is suppressed: its ``patients`` cell is left empty and ``suppressed`` is
``true``; combinations with no patient are not listed. No patient identifier is written. What this does and
does not protect against: ``docs/analyst/outputs.md``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from datetime import date
from itertools import product
from typing import Any

from ..core.outcome import NOT_EVALUATED
from ..sinks.rows import BAND_LABELS

MIN_CELL = 11  # the usual small-cell threshold (counts of 1-10 suppressed)
ALL = "*"
UNKNOWN = "unknown"
NONE = "none"
HEADER = ("outcome", "priority", "reason", "age_band", "sex", "patients", "suppressed")


#: What the modifiers that leave a patient not evaluated stand for (summary.json ``not_evaluated``).
NOT_EVALUATED_BECAUSE = {"MOD-DECEASED": "deceased", "MOD-AGE-MIN": "under the minimum age"}


class Counts:
    """Counts patients as the batch writes them (a few short strings a patient, whatever the input size):
    the cells of counts.csv, and summary.json's breakdowns by age band and sex, of the patients not
    evaluated, and the newest record date."""

    def __init__(self) -> None:
        self.patients: Counter[tuple[str, str, str, str]] = Counter()
        self.reasons: Counter[tuple[str, str, str]] = Counter()
        self.not_evaluated: Counter[str] = Counter()
        self.no_birth_date = 0
        self.newest: date | None = None

    def add(self, outcome: str, priority: str | None, age_band: str | None, sex: str | None,
            flagged: bool, reasons: Iterable[str], newest: date | None = None) -> None:
        band, gender = age_band or UNKNOWN, sex or UNKNOWN
        self.patients[(outcome, priority or NONE, band, gender)] += 1
        self.no_birth_date += age_band is None
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest
        if outcome == NOT_EVALUATED:
            why = [NOT_EVALUATED_BECAUSE[r] for r in reasons if r in NOT_EVALUATED_BECAUSE]
            self.not_evaluated[why[0] if why else "other"] += 1
        if flagged:
            for reason in reasons:
                self.reasons[(reason, band, gender)] += 1

    def breakdown(self, flagged_outcomes: Iterable[str]) -> dict[str, Any]:
        """summary.json's ``by_age_band`` and ``by_sex`` (screened and flagged patients), ``not_evaluated``
        (why) and ``no_birth_date``."""
        flagging = frozenset(flagged_outcomes)
        tables: dict[str, dict[str, dict[str, int]]] = {"by_age_band": {b: {"screened": 0, "flagged": 0}
                                                                        for b in (*BAND_LABELS, UNKNOWN)},
                                                        "by_sex": {}}
        for (outcome, priority, band, sex), n in sorted(self.patients.items()):
            for table, key in (("by_age_band", band), ("by_sex", sex)):
                cell = tables[table].setdefault(key, {"screened": 0, "flagged": 0})
                cell["screened"] += n
                cell["flagged"] += n if outcome in flagging and priority != NONE else 0
        return {**tables, "not_evaluated": dict(sorted(self.not_evaluated.items())),
                "no_birth_date": self.no_birth_date}

    def cells(self) -> list[tuple[tuple[str, ...], int]]:
        """Every cell (outcome, priority, reason, age band, sex) with its count: the patient cube, then the
        reason cube (outcome and priority ``*``: flagged patients whose reasons include it)."""
        cube: Counter[tuple[str, ...]] = Counter()
        for (outcome, priority, band, sex), n in self.patients.items():
            for keep in product((True, False), repeat=4):
                key = tuple(v if k else ALL for v, k in zip((outcome, priority, band, sex), keep, strict=True))
                cube[(key[0], key[1], ALL, key[2], key[3])] += n
        for (reason, band, sex), n in self.reasons.items():
            for keep in product((True, False), repeat=2):
                cube[(ALL, ALL, reason, band if keep[0] else ALL, sex if keep[1] else ALL)] += n
        return sorted(cube.items(), key=lambda item: (item[0][2] != ALL, item[0]))

    def csv(self, min_cell: int = MIN_CELL) -> bytes:
        """The CSV file, counts below ``min_cell`` suppressed and marked."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for key, n in self.cells():
            small = n < min_cell
            writer.writerow([*key, "" if small else n, "true" if small else "false"])
        return out.getvalue().encode("utf-8")
