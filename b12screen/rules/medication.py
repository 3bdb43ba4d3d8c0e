"""Medication rules: metformin (MET-1, MET-2, MET-3) and acid suppression (ACID-1, ACID-2).

MOD-STOPPED is applied here: a class that is not active at the as-of date never triggers (past use
is history only).
"""

from __future__ import annotations

from ..core.clinical import symptoms
from ..core.dates import DAYS_PER_MONTH, DAYS_PER_YEAR
from ..core.display import age_factor
from ..core.model import Finding, Priority, Rule, RuleContext
from ..core.params import Param
from ..hookspecs import hookimpl
from .common import ACID_SUPPRESSANTS, METFORMIN, ClassUse, class_use, max_daily_dose_mg, note_stopped, risk_factors


def EXPOSURE(months: int) -> Param:
    """The declaration of ``min_exposure_months`` with its default."""
    return Param(months, "months", "exposure needed while the class is active", 0, 1200)


def _metformin(ctx: RuleContext) -> ClassUse:
    use = class_use(ctx.record, METFORMIN, ctx.as_of, "metformin")
    note_stopped(ctx, use)
    return use


def _exposed(ctx: RuleContext, use: ClassUse, inclusive: bool) -> bool:
    """Active with an exposure beyond the rule's ``min_exposure_months`` (``>=`` when ``inclusive``)."""
    if not use.active or use.exposure_days is None:
        ctx.note(use.inactive_text() if not use.active else f"{use.label}: active, start unknown")
        return False
    months = ctx.param("min_exposure_months")
    limit = months * DAYS_PER_MONTH
    needs = "at least" if inclusive else "more than"
    ctx.note(f"{use.label} exposure {use.exposure_days / DAYS_PER_MONTH:.1f} months, needs {needs} {months:g}")
    return use.exposure_days >= limit if inclusive else use.exposure_days > limit


def _start_unknown(use: ClassUse) -> bool:
    """Active with no start date anywhere in the class: exposure of unknown length.

    docs/reference/clinical-rules.md 7.5.
    """
    return use.active and use.start is None


def met_1(ctx: RuleContext) -> Finding | None:
    """Active metformin with exposure > 4 months, or of unknown length (7.5)."""
    use = _metformin(ctx)
    if _exposed(ctx, use, inclusive=False) or _start_unknown(use):
        return Finding("MET-1", use.describe(), use.evidence)
    return None


def met_2(ctx: RuleContext) -> Finding | None:
    """MET-1 plus long exposure, high dose, older age or another risk factor; with an unknown start the
    duration criterion is false and the others still apply (7.5)."""
    use = _metformin(ctx)
    if not _exposed(ctx, use, inclusive=False) and not _start_unknown(use):
        return None
    reasons: list[str] = []
    evidence = list(use.evidence)
    if use.exposure_days is not None and use.exposure_days >= ctx.param("long_exposure_years") * DAYS_PER_YEAR:
        reasons.append(f"≥ {ctx.param('long_exposure_years')} years of use")
    dose = max_daily_dose_mg(ctx.record, "metformin", ctx.as_of)
    ctx.note(f"daily dose {'unknown' if dose is None else f'{dose:.0f} mg'}, needs {ctx.param('dose_mg_per_day'):g} "
             "mg or more")
    if dose is not None and dose >= ctx.param("dose_mg_per_day"):
        reasons.append(f"{dose:.0f} mg/day")
    age = ctx.record.age(ctx.as_of)
    if age is not None and age >= ctx.param("age"):
        reasons.append(age_factor(age, ctx.param("age")))
    for factor in risk_factors(ctx, exclude=frozenset({"metformin", "age"})):
        reasons.append(factor.label)
        evidence.extend(factor.evidence)
    if not reasons:
        ctx.note(f"under {ctx.param('long_exposure_years'):g} years of use, age {age}, needs {ctx.param('age'):g}; "
                 "no other risk factor on file")
        return None
    return Finding("MET-2", f"{use.describe()}; {', '.join(reasons)}", tuple(dict.fromkeys(evidence)))


def met_3(ctx: RuleContext) -> Finding | None:
    """Active metformin with a symptom or sign (an active neuropathy counts whatever its onset)."""
    use = _metformin(ctx)
    if not use.active:
        ctx.note(use.inactive_text())
        return None
    found = symptoms(ctx.record, ctx.as_of, ctx.setting("symptom_months"), neuropathy_any_onset=True)
    if not found:
        ctx.note(f"{use.label} active, but no symptom or sign within {ctx.setting('symptom_months'):g} months")
        return None
    return Finding("MET-3", f"{use.describe()}; {found.describe()}", use.evidence + found.evidence,
                   test_after=found.test_from, symptomatic=True)


def _acid(ctx: RuleContext) -> ClassUse:
    use = class_use(ctx.record, ACID_SUPPRESSANTS, ctx.as_of, "acid suppression (PPI/H2RA)")
    note_stopped(ctx, use)
    return use


def acid_1(ctx: RuleContext) -> Finding | None:
    """Active PPI or H2RA for at least 24 months."""
    use = _acid(ctx)
    return Finding("ACID-1", use.describe(), use.evidence) if _exposed(ctx, use, inclusive=True) else None


def acid_2(ctx: RuleContext) -> Finding | None:
    """Active PPI or H2RA for at least 12 months plus metformin, age ≥ 75 or another risk factor."""
    use = _acid(ctx)
    if not _exposed(ctx, use, inclusive=True):
        return None
    reasons: list[str] = []
    evidence = list(use.evidence)
    age = ctx.record.age(ctx.as_of)
    if age is not None and age >= ctx.param("age"):
        reasons.append(age_factor(age, ctx.param("age")))
    exclude = {"acid-suppressant"} | ({"age"} if reasons else set())
    for factor in risk_factors(ctx, exclude=frozenset(exclude)):
        reasons.append(factor.label)
        evidence.extend(factor.evidence)
    if not reasons:
        ctx.note(f"age {age}, needs {ctx.param('age'):g}; no other risk factor on file")
        return None
    return Finding("ACID-2", f"{use.describe()}; {', '.join(reasons)}", tuple(dict.fromkeys(evidence)))


RULES = [
    Rule(
        id="MET-1", title="Metformin for more than 4 months", version="1.1.0", family="medication",
        priority=Priority.LOW, window_months=36, evaluate=met_1,
        basis="AAFP 2017; FDA metformin label §5.2 (B12 every 2-3 years); ADA Standards ('periodic' B12)",
        params={"min_exposure_months": EXPOSURE(4)}, suggest_in=frozenset({"default"}), oral_therapy="suppress-high",
    ),
    Rule(
        id="MET-2", title="Metformin with long use, high dose, age or another risk factor", version="1.1.0",
        family="medication", priority=Priority.MEDIUM, window_months=24, evaluate=met_2, replaces=("MET-1",),
        basis="Ko 2014; Kim 2019; Ting 2006; Aroda 2016 (DPPOS); MHRA Drug Safety Update 2022",
        params={"min_exposure_months": EXPOSURE(4),
                "long_exposure_years": Param(4, "years", "this much use is a reason on its own", 0, 100),
                "dose_mg_per_day": Param(1500, "mg/day", "this daily dose or more is a reason", 0, 10000),
                "age": Param(65, "years", "this age or older is a reason", 0, 130)},
        suggest_in=frozenset({"default"}), oral_therapy="suppress-high",
    ),
    Rule(
        id="MET-3", title="Metformin with a symptom or sign of B12 deficiency", version="1.0.0",
        family="medication", priority=Priority.HIGH, window_months=12, evaluate=met_3, replaces=("MET-1", "MET-2"),
        basis="ADA Standards of Care (anaemia, peripheral neuropathy); MHRA 2022 ('new-onset neuropathy')",
    ),
    Rule(
        id="ACID-1", title="PPI or H2RA for 24 months or more", version="1.0.0", family="medication",
        priority=Priority.LOW, window_months=36, evaluate=acid_1,
        basis="Lam 2013 JAMA (≥ 2 years' supply, OR 1.65); Miller 2018",
        params={"min_exposure_months": EXPOSURE(24)}, suggest_in=frozenset({"default"}), oral_therapy="suppress-high",
    ),
    Rule(
        id="ACID-2", title="PPI or H2RA for 12 months or more with another risk factor", version="1.0.0",
        family="medication", priority=Priority.MEDIUM, window_months=24, evaluate=acid_2, replaces=("ACID-1",),
        basis="MHRA (PPI as added risk factor); AAFP 2017 (> 12 months)",
        params={"min_exposure_months": EXPOSURE(12),
                "age": Param(75, "years", "this age or older is a reason", 0, 130)}, suggest_in=frozenset({"default"}),
        oral_therapy="suppress-high",
    ),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
