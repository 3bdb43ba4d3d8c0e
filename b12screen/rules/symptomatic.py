"""Symptom-led rules: SYM-1 (risk factor plus symptom), N2O-1 (nitrous oxide), MS-1 (multiple sclerosis),
DEM-1 (dementia or mild cognitive impairment without a B12 test)."""

from __future__ import annotations

from ..core.clinical import DEMENTIA, DEMENTIA_WORKUP_MONTHS, nitrous_oxide_use, symptoms
from ..core.dates import months
from ..core.model import SINCE_ONSET, Finding, Priority, Rule, RuleContext
from ..core.params import Param
from ..hookspecs import hookimpl
from .common import risk_factors


def sym_1(ctx: RuleContext) -> Finding | None:
    """Any risk factor plus a symptom or sign (NICE NG239); an active neuropathy counts whatever its onset
    (docs/reference/clinical-rules.md 7.3). MEDIUM when the only sign is a milder anaemia (7.8)."""
    found = symptoms(ctx.record, ctx.as_of, ctx.setting("symptom_months"), neuropathy_any_onset=True)
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
    margin = ctx.param("hb_margin_g_dl")
    below = "no figure" if found.hb_below_by is None else f"{found.hb_below_by:.1f} g/dL"
    ctx.note(f"signs {'only anaemia' if found.only_anaemia else 'beyond anaemia'}; haemoglobin below its limit: "
             f"{below} (HIGH when more than {margin:g} g/dL or any sign beyond anaemia)")
    priority = None if found.severe(margin) else Priority.MEDIUM
    reason = f"{found.describe()} with {', '.join(f.label for f in factors)}"
    return Finding("SYM-1", reason, tuple(dict.fromkeys(evidence)), test_after=found.test_from, symptomatic=True,
                   priority=priority)


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
                   test_after=found.test_from, symptomatic=True, recommended_test="homocysteine",
                   answered_by=("homocysteine", "mma"))


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


def dem_1(ctx: RuleContext) -> Finding | None:
    """Dementia or mild cognitive impairment of any onset with no B12 status test from 6 months before its
    onset onward (NICE NG97; docs/reference/clinical-rules.md 7.3)."""
    conditions = ctx.record.conditions_in((DEMENTIA,), ctx.as_of)
    if not conditions:
        return None
    dated = [c.onset for c in conditions if c.onset is not None]
    onset = min(dated) if dated else None
    test_from = onset - months(DEMENTIA_WORKUP_MONTHS) if onset is not None else None
    ctx.note(f"diagnosis {'undated' if onset is None else onset.isoformat()}; a B12 test from "
             f"{'any date' if test_from is None else test_from.isoformat()} answers it")
    label = conditions[0].label or "dementia"
    since = f" (since {onset.isoformat()})" if onset else ""
    return Finding("DEM-1", f"{label}{since}; B12 is part of the dementia work-up", tuple(c.ref for c in conditions),
                   test_after=test_from)


RULES = [
    Rule(
        id="SYM-1", title="Risk factor with a symptom or sign of B12 deficiency", version="1.1.0",
        family="symptom", priority=Priority.HIGH, window_months=12, evaluate=sym_1,
        counts_for_later_rules=False, basis="NICE NG239 (at least one symptom and at least one risk factor)",
        params={"hb_margin_g_dl": Param(2.0, "g/dL", "HIGH when haemoglobin is more than this below its limit; "
                                        "a milder anaemia alone is MEDIUM", 0, 20)},
    ),
    Rule(
        id="N2O-1", title="Recreational nitrous oxide use with a symptom or sign", version="1.1.0",
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
    Rule(
        id="DEM-1", title="Dementia or mild cognitive impairment without a B12 test", version="1.0.0",
        family="symptom", priority=Priority.MEDIUM, window_months=SINCE_ONSET, evaluate=dem_1,
        counts_for_later_rules=False, basis="NICE NG97 (B12 and folate in the dementia work-up)",
    ),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
