"""Symptom-led rules: SYM-1 (risk factor plus symptom), N2O-1 (nitrous oxide), MS-1 (multiple sclerosis)."""

from __future__ import annotations

from ..core.clinical import nitrous_oxide_use, symptoms
from ..core.model import SINCE_ONSET, Finding, Priority, Rule, RuleContext
from ..hookspecs import hookimpl
from .common import risk_factors


def sym_1(ctx: RuleContext) -> Finding | None:
    """Any risk factor plus a symptom or sign (NICE NG239)."""
    found = symptoms(ctx.record, ctx.as_of, ctx.setting("symptom_months"))
    if not found:
        ctx.note(f"no symptom or sign within {ctx.setting('symptom_months'):g} months")
        return None
    factors = risk_factors(ctx)
    if not factors:
        ctx.note(f"{found.describe()} is a sign, but no risk factor is on file")
        return None
    evidence = list(found.evidence)
    for factor in factors:
        evidence.extend(factor.evidence)
    reason = f"{found.describe()} with {', '.join(f.label for f in factors)}"
    return Finding("SYM-1", reason, tuple(dict.fromkeys(evidence)), test_after=found.test_from, symptomatic=True)


def n2o_1(ctx: RuleContext) -> Finding | None:
    """Recreational nitrous oxide use plus a symptom or sign."""
    use = nitrous_oxide_use(ctx.record, ctx.as_of)
    if not use:
        ctx.note("no recreational nitrous oxide use on file")
        return None
    found = symptoms(ctx.record, ctx.as_of, ctx.setting("symptom_months"))
    if not found:
        ctx.note(f"nitrous oxide use, but no symptom or sign within {ctx.setting('symptom_months'):g} months")
        return None
    return Finding("N2O-1", f"nitrous oxide use with {found.describe()}", tuple(use) + found.evidence,
                   test_after=found.test_from, symptomatic=True, recommended_test="homocysteine")


def ms_1(ctx: RuleContext) -> Finding | None:
    """Multiple sclerosis or another CNS demyelinating disease, with no B12 status test since its onset."""
    conditions = ctx.record.conditions_in(("multiple-sclerosis",), ctx.as_of)
    if not conditions:
        ctx.note("no multiple sclerosis or demyelinating disease on file")
        return None
    dated = [c.onset for c in conditions if c.onset is not None]
    onset = min(dated) if dated else None
    label = conditions[0].label or "demyelinating disease"
    since = f" (since {onset.isoformat()})" if onset else ""
    return Finding("MS-1", f"{label}{since}; B12 deficiency mimics and can co-exist with MS",
                   tuple(c.ref for c in conditions), test_after=onset)


RULES = [
    Rule(
        id="SYM-1", title="Risk factor with a symptom or sign of B12 deficiency", version="1.0.0",
        family="symptom", priority=Priority.HIGH, window_months=12, evaluate=sym_1,
        counts_for_later_rules=False, basis="NICE NG239 (at least one symptom and at least one risk factor)",
    ),
    Rule(
        id="N2O-1", title="Recreational nitrous oxide use with a symptom or sign", version="1.0.0",
        family="symptom", priority=Priority.HIGH, window_months=12, evaluate=n2o_1,
        counts_for_later_rules=False,
        basis="NICE NG239 (nitrous oxide inactivates B12; test homocysteine or MMA, serum B12 may be normal)",
    ),
    Rule(
        id="MS-1", title="Multiple sclerosis or demyelinating disease without a B12 test since onset",
        version="1.0.0", family="symptom", priority=Priority.MEDIUM, window_months=SINCE_ONSET, evaluate=ms_1,
        counts_for_later_rules=False,
        basis="B12 deficiency mimics multiple sclerosis and can co-exist with it (origin article; NICE NG239)",
    ),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
