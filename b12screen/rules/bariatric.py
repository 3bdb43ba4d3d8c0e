"""Bariatric surgery: BAR-1 (first 12 months), BAR-2 (later, yearly), BAR-3 (band only: risk factor)."""

from __future__ import annotations

from ..core.dates import DAYS_PER_MONTH
from ..core.facts import ProcedureFact
from ..core.model import Finding, Priority, Rule, RuleContext
from ..core.params import Param
from ..hookspecs import hookimpl

#: ``recent_months``: surgery within this many months is recent.
RECENT = Param(12, "months", "surgery within this many months is recent", 0, 1200)

def _procedures(ctx: RuleContext) -> tuple[list[ProcedureFact], list[ProcedureFact]]:
    """(malabsorptive/sleeve procedures, band-only procedures) performed by the as-of date."""
    surgery = ctx.record.procedures_in(("bariatric-surgery",), ctx.as_of)
    bands = [p for p in ctx.record.procedures_in(("bariatric-band",), ctx.as_of) if p not in surgery]
    return surgery, bands


def _describe(p: ProcedureFact) -> str:
    when = f" on {p.performed.isoformat()}" if p.performed else ""
    return f"{p.label or 'bariatric surgery'}{when}"


def bar_1(ctx: RuleContext) -> Finding | None:
    """Bypass, sleeve, BPD/DS, OAGB or SADI less than 12 months ago."""
    surgery, _ = _procedures(ctx)
    limit = ctx.param("recent_months") * DAYS_PER_MONTH
    recent = [p for p in surgery if p.performed is not None and (ctx.as_of - p.performed).days < limit]
    if not recent:
        ctx.note("; ".join(f"{_describe(p)}, needs less than {ctx.param('recent_months'):g} months ago"
                           for p in surgery) or "no bariatric surgery on file")
        return None
    return Finding("BAR-1", "; ".join(_describe(p) for p in recent), tuple(p.ref for p in recent))


def bar_2(ctx: RuleContext) -> Finding | None:
    """The same procedures 12 months ago or more, or bariatric surgery status with no date."""
    surgery, bands = _procedures(ctx)
    limit = ctx.param("recent_months") * DAYS_PER_MONTH
    older = [p for p in surgery if p.performed is None or (ctx.as_of - p.performed).days >= limit]
    reasons = [_describe(p) for p in older]
    evidence = [p.ref for p in older]
    if not surgery and not (bands and not older):
        status = ctx.record.conditions_in(("bariatric-status",), ctx.as_of) + ctx.record.condition_history(
            ("bariatric-status",), ctx.as_of)
        if status and not bands:
            reasons.append(status[0].label or "bariatric surgery status")
            evidence.extend(c.ref for c in status)
    if not evidence:
        return None
    return Finding("BAR-2", "; ".join(reasons), tuple(dict.fromkeys(evidence)))


def bar_3(ctx: RuleContext) -> Finding | None:
    """Adjustable gastric band only (a risk factor, not a screening trigger)."""
    surgery, bands = _procedures(ctx)
    if surgery or not bands:
        return None
    return Finding("BAR-3", "; ".join(_describe(p) for p in bands), tuple(p.ref for p in bands))


RULES = [
    Rule(id="BAR-1", title="Bariatric surgery less than 12 months ago", version="1.1.0", family="bariatric",
         priority=Priority.HIGH, window_months=3, evaluate=bar_1, stage=0, oral_therapy="reduce-medium",
         params={"recent_months": RECENT},
         basis="ASMBS 2016; BOMSS 2020 (B12 at 3, 6 and 12 months; MEDIUM on high-dose oral B12)"),
    Rule(id="BAR-2", title="Bariatric surgery 12 months ago or more", version="1.1.0", family="bariatric",
         priority=Priority.HIGH, window_months=12, evaluate=bar_2, stage=0, oral_therapy="reduce-medium",
         params={"recent_months": RECENT},
         basis="BOMSS 2020 (at least once a year, whatever the supplementation; MEDIUM on high-dose oral B12); "
               "ASMBS 2016"),
    Rule(id="BAR-3", title="Adjustable gastric band only (risk factor)", version="1.0.0", family="bariatric",
         priority=None, window_months=None, evaluate=bar_3, stage=0,
         basis="ASMBS routine screening list excludes gastric banding; counted as a risk factor"),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
