"""A deterministic cohort with known truth for ``b12screen audit``: patients in risk groups whose B12 results
after the as-of date are drawn with set probabilities, written as Bulk Data NDJSON or as per-patient Bundles,
with the generator's own tally of what the audit must count."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from b12screen.testing import make_condition, make_medication_request, make_observation, make_patient

AS_OF = date(2024, 6, 30)
MONTHS = 12
#: The window's last day: 12 months of 30.44 days is 365 whole days.
WINDOW_END = AS_OF + timedelta(days=365)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@dataclass(frozen=True)
class Group:
    """A risk group: how its patients look at the as-of date and the chances of what follows."""

    rules: tuple[str, ...]  # the rules their outcome lists
    flagged: bool
    birth: str
    metformin_since: str | None
    p_test: float
    p_deficient: float
    p_indeterminate: float
    p_treated: float


GROUPS = {
    "old": Group(("AGE-75",), True, "1940-03-01", None, 0.6, 0.15, 0.25, 0.2),
    "metformin": Group(("MET-1",), True, "1975-05-05", "2023-01-10", 0.5, 0.3, 0.2, 0.25),
    "none": Group((), False, "1985-07-07", None, 0.1, 0.05, 0.1, 0.05),
}


@dataclass
class Truth:
    """One patient's expected audit: group, and the first test in the window."""

    patient: str
    group: str
    tested: bool = False
    first_date: date | None = None
    band: str | None = None
    treated: bool = False
    resources: list[dict[str, Any]] = field(default_factory=list)


def _b12(pid: str, rid: str, when: date, band: str, mma: bool) -> dict[str, Any]:
    if mma:
        value, unit = {"deficient": 0.61, "normal": 0.19}[band], "umol/L"
        return make_observation("13964-2", patient=pid, rid=rid, effective=when.isoformat(), value=value, unit=unit)
    value = {"deficient": 120.0, "indeterminate": 250.0, "normal": 520.0}[band]
    return make_observation("2132-9", patient=pid, rid=rid, effective=when.isoformat(), value=value, unit="pg/mL")


def _band(rng: random.Random, group: Group, mma: bool) -> str:
    draw = rng.random()
    if draw < group.p_deficient:
        return "deficient"
    if draw < group.p_deficient + group.p_indeterminate and not mma:
        return "indeterminate"
    return "normal"


def make_patient_truth(rng: random.Random, pid: str, name: str) -> Truth:
    group = GROUPS[name]
    truth = Truth(f"Patient/{pid}", name)
    res = truth.resources
    res.append(make_patient(pid, group.birth))
    if group.metformin_since:
        res.append(make_medication_request("861007", patient=pid, rid=f"{pid}-met", authored=group.metformin_since))
    days = (WINDOW_END - AS_OF).days
    if rng.random() < group.p_test:
        # the first test: on the day after the as-of date, on the window's last day, or in between
        offset = rng.choice([1, days, rng.randint(2, days - 1)])
        mma = rng.random() < 0.2
        band = _band(rng, group, mma)
        first = AS_OF + timedelta(days=offset)
        truth.tested, truth.first_date, truth.band = True, first, band
        res.append(_b12(pid, f"{pid}-b12a", first, band, mma))
        if offset < days and rng.random() < 0.4:  # a later test in the window changes nothing
            later = first + timedelta(days=rng.randint(1, days - offset))
            res.append(_b12(pid, f"{pid}-b12b", later, rng.choice(["deficient", "normal"]), False))
    if rng.random() < 0.3:  # a deficient result one day after the window: not follow-up
        res.append(_b12(pid, f"{pid}-late", WINDOW_END + timedelta(days=1), "deficient", False))
    if rng.random() < group.p_treated:
        when = (AS_OF + timedelta(days=rng.choice([1, days, rng.randint(2, days - 1)]))).isoformat()
        truth.treated = True
        if rng.random() < 0.5:
            res.append(make_condition("190634004", patient=pid, rid=f"{pid}-dx", onset=when))
        else:
            res.append(make_medication_request("2001499", RXNORM, patient=pid, rid=f"{pid}-b12rx", authored=when))
    elif rng.random() < 0.2:  # therapy started after the window: not treated
        after = (WINDOW_END + timedelta(days=3)).isoformat()
        res.append(make_medication_request("2001499", RXNORM, patient=pid, rid=f"{pid}-b12late", authored=after))
    return truth


def make_cohort(seed: int = 29, per_group: int = 40) -> list[Truth]:
    """``per_group`` patients in each group, drawn with ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [make_patient_truth(rng, f"{name}-{i:03d}", name) for name in GROUPS for i in range(per_group)]


def write_ndjson(cohort: list[Truth], folder: Path) -> Path:
    """A Bulk Data export: one NDJSON file per resource type."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for truth in cohort:
        for resource in truth.resources:
            by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for kind, lines in by_type.items():
        (folder / f"{kind}.000.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def write_bundles(cohort: list[Truth], folder: Path) -> Path:
    """A folder of per-patient collection Bundles."""
    folder.mkdir(parents=True, exist_ok=True)
    for truth in cohort:
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in truth.resources]}
        (folder / f"{truth.patient.split('/')[1]}.json").write_text(json.dumps(bundle))
    return folder


def expected_rows(cohort: list[Truth]) -> dict[str, dict[str, int]]:
    """The generator's tally: the counts of ``audit.csv`` per group."""
    counts: dict[str, dict[str, int]] = {}
    for truth in cohort:
        group = GROUPS[truth.group]
        names = [*group.rules, "flagged" if group.flagged else "not-flagged", "all"]
        for name in names:
            row = counts.setdefault(name, dict.fromkeys(
                ("patients", "tested", "deficient", "indeterminate", "normal", "treated"), 0))
            row["patients"] += 1
            row["tested"] += truth.tested
            row["treated"] += truth.treated
            if truth.band:
                row[truth.band] += 1
    return counts
