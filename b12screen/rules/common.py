"""Look-ups several rule families share: medication classes, exposure and risk factors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..core.clinical import nitrous_oxide_use
from ..core.dataend import record_newest
from ..core.dates import DAYS_PER_MONTH, DAYS_PER_YEAR
from ..core.display import age_factor
from ..core.model import RuleContext
from ..core.record import PatientRecord, earliest_start

METFORMIN = ("metformin",)
ACID_SUPPRESSANTS = ("ppi", "h2ra")
#: A right hemicolectomy with less ileum than this recorded (or none) is a risk factor (MAL-CRO-R's default).
HEMICOLECTOMY_ILEUM_CM = 20


@dataclass(frozen=True)
class ClassUse:
    """A medication class as the rules see it at the as-of date."""

    active: bool
    start: date | None
    exposure_days: int | None
    evidence: tuple[str, ...]
    past_evidence: tuple[str, ...]
    label: str
    #: Not active: when it was last in use (the latest end, else start, of its uses); None when never used.
    stopped: date | None = None
    #: Active, but the patient's records end before the as-of date: the class's newest record (its exposure
    #: runs on past the data, and the description says so).
    last_recorded: date | None = None

    def describe(self) -> str:
        if self.exposure_days is None or self.start is None:
            return f"{self.label} (active, start date unknown)"
        years = self.exposure_days / DAYS_PER_YEAR
        span = f"{years:.1f} years" if years >= 1 else f"{self.exposure_days / DAYS_PER_MONTH:.0f} months"
        last = f", last recorded on {self.last_recorded.isoformat()}" if self.last_recorded else ""
        return f"{self.label} for {span} (since {self.start.isoformat()}{last})"

    def inactive_text(self) -> str:
        """Why the class is not active, in words ("metformin stopped on 2019-03-01")."""
        if self.stopped is None:
            return f"no {self.label} on file"
        return f"{self.label} stopped on {self.stopped.isoformat()}"


def class_use(record: PatientRecord, concepts: tuple[str, ...], as_of: date, label: str) -> ClassUse:
    """Activity, exposure and evidence of one medication class (docs/reference/clinical-rules.md section 1)."""
    uses = record.uses(concepts, as_of)
    active = [u for u in uses if record.is_active(u, as_of)]
    start = earliest_start(uses) if active else None  # record.exposure_start, from the uses in hand
    exposure = (as_of - start).days if start is not None else None
    evidence: list[str] = [u.ref for u in active]
    if start is not None:
        first = next(u.ref for u in uses if u.start == start)
        if first not in evidence:
            evidence.append(first)
    active_ids = {id(u) for u in active}  # by identity: list membership would make this quadratic
    past = tuple(u.ref for u in uses if id(u) not in active_ids)
    if not active:
        stopped = max((d for u in uses if (d := u.end or u.start) is not None), default=None)
        return ClassUse(False, None, None, tuple(evidence), past, label, stopped=stopped)
    newest = record_newest(record)
    last = max((u.start for u in uses if u.start is not None), default=None)
    return ClassUse(True, start, exposure, tuple(evidence), past, label,
                    last_recorded=last if newest is not None and newest < as_of else None)


def note_stopped(ctx: RuleContext, use: ClassUse) -> None:
    """MOD-STOPPED: a class used in the past but not active now does not trigger medication rules."""
    if not use.active and use.past_evidence:
        ctx.note_modifier("MOD-STOPPED", *use.past_evidence[-1:])


def max_daily_dose_mg(record: PatientRecord, concept: str, as_of: date) -> float | None:
    """The highest known daily dose (mg) among the active uses of one ingredient."""
    doses = [
        d for u in record.active_uses((concept,), as_of)
        if (d := record.daily_dose_mg(u, concept)) is not None
    ]
    return max(doses) if doses else None


@dataclass(frozen=True)
class RiskFactor:
    """One item of the "risk factor" list of docs/reference/clinical-rules.md section 1."""

    key: str
    label: str
    evidence: tuple[str, ...]


def risk_factors(ctx: RuleContext, exclude: frozenset[str] = frozenset()) -> list[RiskFactor]:
    """Every risk factor present at the as-of date, leaving out the keys in ``exclude``
    (``metformin`` for MET-2, ``acid-suppressant`` for ACID-2, rule ids to skip their findings)."""
    record, as_of = ctx.record, ctx.as_of
    found: list[RiskFactor] = []
    if "metformin" not in exclude:
        met = record.active_uses(METFORMIN, as_of)
        if met:
            found.append(RiskFactor("metformin", "active metformin", tuple(u.ref for u in met)))
    if "acid-suppressant" not in exclude:
        acid = record.active_uses(ACID_SUPPRESSANTS, as_of)
        if acid:
            found.append(RiskFactor("acid-suppressant", "active PPI or H2RA", tuple(u.ref for u in acid)))
    age = record.age(as_of)
    threshold = ctx.setting("risk_factor_age")
    if "age" not in exclude and age is not None and age >= threshold:
        found.append(RiskFactor("age", age_factor(age, threshold), ()))
    for extra in fact_risk_factors(record, as_of):
        if extra.key not in exclude:
            found.append(extra)
    for finding in ctx.other_risk_factors(exclude):
        found.append(RiskFactor(finding.rule_id, finding.reason, finding.evidence))
    return found


def fact_risk_factors(record: PatientRecord, as_of: date) -> list[RiskFactor]:
    """Risk factors read straight from facts: NICE medicines, family history, autoimmune disease and
    past B12 deficiency (MOD-DX-HIST)."""
    found: list[RiskFactor] = []
    meds = record.active_uses(("b12-depleting-medicines",), as_of)
    if meds:
        found.append(RiskFactor("nice-medicine", f"active {meds[0].label or 'B12-depleting medicine'}",
                                tuple(u.ref for u in meds)))
    family = record.conditions_in(("family-history-b12",), as_of) + record.condition_history(
        ("family-history-b12",), as_of)
    family_obs = record.observations_in(("family-history-b12",), as_of)
    if family or family_obs:
        found.append(RiskFactor("family-history", "family history of B12 deficiency or pernicious anaemia",
                                tuple(c.ref for c in family) + tuple(o.ref for o in family_obs)))
    autoimmune = record.conditions_in(("autoimmune-disease",), as_of)
    if autoimmune:
        found.append(RiskFactor("autoimmune", autoimmune[0].label or "autoimmune disease",
                                tuple(c.ref for c in autoimmune)))
    n2o = nitrous_oxide_use(record, as_of)
    if n2o:
        found.append(RiskFactor("nitrous-oxide", "recreational nitrous oxide use", tuple(n2o)))
    history = record.condition_history(("b12-deficiency-dx",), as_of)
    if history:
        found.append(RiskFactor("MOD-DX-HIST", "past B12 deficiency", tuple(c.ref for c in history)))
    return found + gut_risk_factors(record, as_of)


def gut_risk_factors(record: PatientRecord, as_of: date) -> list[RiskFactor]:
    """Crohn's disease confined to the colon, and a right hemicolectomy with no ileal length of 20 cm or more
    recorded: risk factors, not MAL-CRO-0 / MAL-CRO-R (docs/reference/clinical-rules.md 7.7)."""
    found: list[RiskFactor] = []
    crohns = record.conditions_in(("crohns-disease",), as_of)
    if crohns and all("crohns-colon" in c.concepts for c in crohns):
        found.append(RiskFactor("crohns-colon", "Crohn's disease of the colon", tuple(c.ref for c in crohns)))
    hemi = [p for p in record.procedures_in(("right-hemicolectomy",), as_of)
            if p.length_cm is None or p.length_cm < HEMICOLECTOMY_ILEUM_CM]
    if hemi:
        found.append(RiskFactor("right-hemicolectomy", "right hemicolectomy (no ileal length of 20 cm or more "
                                "recorded)", tuple(p.ref for p in hemi)))
    return found
