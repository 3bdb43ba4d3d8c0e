"""Clinical states several rules share: symptoms and signs, pregnancy, breastfeeding, nitrous oxide."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .dates import months
from .labs import lab_signs
from .record import PatientRecord

SYMPTOM_SETS = (
    "symptom-neuropathy",
    "symptom-paraesthesia",
    "symptom-ataxia",
    "symptom-cognitive",
    "symptom-glossitis",
    "symptom-visual",
    "symptom-depression-psychosis",
)
ANAEMIA = "anaemia"


NEUROPATHY = "symptom-neuropathy"
DEMENTIA = "dementia"
#: A B12 test from this many months before a new dementia diagnosis counts (docs/reference/clinical-rules.md 6.3).
DEMENTIA_WORKUP_MONTHS = 6


@dataclass(frozen=True)
class Symptoms:
    """Symptoms and signs within the look-back: labels, evidence, the first recording date and the date
    from which a B12 status test answers them."""

    labels: tuple[str, ...]
    evidence: tuple[str, ...]
    first: date | None
    test_from: date | None = None
    #: True when every item is anaemia: an anaemia Condition or a low haemoglobin
    #: (docs/reference/clinical-rules.md 7.8).
    only_anaemia: bool = False
    #: How far the latest haemoglobin is below its limit (g/dL), when it is a sign and the figure is known.
    hb_below_by: float | None = None

    def severe(self, hb_margin_g_dl: float) -> bool:
        """Whether SYM-1 is HIGH (7.8): a sign other than anaemia, or haemoglobin more than the margin below
        its limit; an anaemia Condition or a milder low haemoglobin alone is not."""
        return not self.only_anaemia or (self.hb_below_by is not None and self.hb_below_by > hb_margin_g_dl)

    def __bool__(self) -> bool:
        return bool(self.evidence)

    def describe(self) -> str:
        text = ", ".join(dict.fromkeys(self.labels))
        if not self.first or self.first.isoformat() in text:
            return text
        return f"{text} (first recorded {self.first.isoformat()})"


def symptoms(record: PatientRecord, as_of: date, within_months: float = 12,
             neuropathy_any_onset: bool = False) -> Symptoms:
    """Countable symptom Conditions/Observations and anaemia dated within ``within_months`` before ``as_of``
    (undated active Conditions count), and a low haemoglobin or raised MCV on the latest such result.

    ``neuropathy_any_onset`` (MET-3 and SYM-1, docs/reference/clinical-rules.md 6.2 and 7.3): an active peripheral
    neuropathy Condition counts whatever its onset, and then any test in the rule's window answers it. A new
    dementia diagnosis is answered by a test from 6 months before its onset (6.3)."""
    since = as_of - months(within_months)
    found: list[tuple[date | None, str, str, date | None]] = []  # when, ref, label, tests count from
    anaemia: set[str] = set()
    hb_below_by: float | None = None
    for cond in record.conditions_in((*SYMPTOM_SETS, ANAEMIA, DEMENTIA), as_of):
        old_neuropathy = neuropathy_any_onset and NEUROPATHY in cond.concepts
        if cond.onset is None or cond.onset >= since or old_neuropathy:
            test_from = cond.onset
            if cond.onset is not None and DEMENTIA in cond.concepts:
                test_from = cond.onset - months(DEMENTIA_WORKUP_MONTHS)
            found.append((cond.onset, cond.ref, cond.label or "symptom", test_from))
            if not cond.concepts & {*SYMPTOM_SETS, DEMENTIA}:
                anaemia.add(cond.ref)
    for obs in record.observations_in(SYMPTOM_SETS, as_of) + record.observations_in(SYMPTOM_SETS, as_of, True):
        if obs.effective is not None and obs.effective >= since:
            found.append((obs.effective, obs.ref, obs.label or "symptom", obs.effective))
    for sign in lab_signs(record, as_of, since, pregnant=bool(pregnancy(record, as_of))):
        found.append((sign.when, sign.ref, sign.text, sign.when))
        if sign.kind == "haemoglobin":
            anaemia.add(sign.ref)
            hb_below_by = sign.below_by_g_dl
    found.sort(key=lambda f: (f[0] or date.min, f[1]))
    dates = [d for d, _, _, _ in found if d is not None]
    starts = [s for _, _, _, s in found if s is not None]
    return Symptoms(
        labels=tuple(label for _, _, label, _ in found),
        evidence=tuple(dict.fromkeys(ref for _, ref, _, _ in found)),
        first=min(dates) if dates else None,
        test_from=min(starts) if starts else None,
        only_anaemia=all(ref in anaemia for _, ref, _, _ in found),
        hb_below_by=hb_below_by,
    )


def _status_observations(record: PatientRecord, concept: str, as_of: date, since: date) -> list[str]:
    """Observations coded with ``concept`` whose value is a positive answer of the same value set."""
    return [
        o.ref for o in record.observations_in((concept,), as_of)
        if concept in o.value_concepts and (o.effective is None or o.effective >= since)
    ]


def pregnancy(record: PatientRecord, as_of: date) -> list[str]:
    """Evidence of a current pregnancy (Condition within 10 months, or a positive pregnancy status)."""
    since = as_of - months(10)
    refs = [c.ref for c in record.conditions_in(("pregnancy",), as_of) if c.onset is None or c.onset >= since]
    refs += _status_observations(record, "pregnancy-status", as_of, since)
    return refs


def breastfeeding(record: PatientRecord, as_of: date) -> list[str]:
    """Evidence of current breastfeeding (Condition within 24 months, or a positive status)."""
    since = as_of - months(24)
    refs = [c.ref for c in record.conditions_in(("breastfeeding",), as_of) if c.onset is None or c.onset >= since]
    refs += _status_observations(record, "breastfeeding-status", as_of, since)
    return refs


def nitrous_oxide_use(record: PatientRecord, as_of: date) -> list[str]:
    """Recreational nitrous oxide use: a countable Condition, or an Observation within 12 months."""
    since = as_of - months(12)
    refs = [c.ref for c in record.conditions_in(("nitrous-oxide",), as_of)]
    for obs in record.observations_in(("nitrous-oxide",), as_of) + record.observations_in(
            ("nitrous-oxide",), as_of, True):
        if obs.effective is None or obs.effective >= since:
            refs.append(obs.ref)
    return list(dict.fromkeys(refs))


def nitrous_oxide_first(record: PatientRecord, as_of: date) -> date | None:
    """The date of the first nitrous oxide record of any age (Condition onset, Observation date; ``date.min``
    when every record is undated), or None when there is none."""
    conditions = record.conditions_in(("nitrous-oxide",), as_of) + record.condition_history(("nitrous-oxide",), as_of)
    observations = record.observations_in(("nitrous-oxide",), as_of) + record.observations_in(
        ("nitrous-oxide",), as_of, True)
    if not conditions and not observations:
        return None
    dates = [c.onset for c in conditions] + [o.effective for o in observations]
    return min((d for d in dates if d is not None), default=date.min)
