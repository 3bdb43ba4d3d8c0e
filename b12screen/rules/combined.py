"""Age and combined risk: COMBO (two or more minor risk factors) and AGE-75 (age alone).

Both run after every other rule: COMBO only when no other rule with a priority fired, AGE-75 only when
nothing else (COMBO included) fired.
"""

from __future__ import annotations

from ..core.dates import DAYS_PER_MONTH
from ..core.display import age_factor, age_reason
from ..core.model import Finding, Priority, Rule, RuleContext
from ..core.params import Param
from ..hookspecs import hookimpl
from .common import ACID_SUPPRESSANTS, class_use, fact_risk_factors

#: ``acid_months``: acid suppression at least this long counts.
ACID_MONTHS = Param(12, "months", "acid suppression at least this long counts", 0, 1200)


def AGE(years: int) -> Param:
    """The declaration of ``age`` with its default."""
    return Param(years, "years", "this age or older counts", 0, 130)

def combo(ctx: RuleContext) -> Finding | None:
    """Two or more of: vegetarian diet, age ≥ 65, past B12 deficiency, family history, autoimmune disease,
    PPI/H2RA for 12 months or more."""
    if others := ctx.prioritized_findings(exclude=frozenset({"AGE-75"})):
        ctx.note(f"not looked at: {', '.join(f.rule_id for f in others)} fired, which COMBO does not add to")
        return None
    record, as_of = ctx.record, ctx.as_of
    factors: list[tuple[str, tuple[str, ...]]] = []
    for diet in ctx.triggered("DIET-VG", "DIET-V"):
        factors.append((diet.reason, diet.evidence))
        break
    age = record.age(as_of)
    if age is not None and age >= ctx.param("age"):
        factors.append((age_factor(age, ctx.param("age")), ()))
    for factor in fact_risk_factors(record, as_of):
        if factor.key in ("MOD-DX-HIST", "family-history", "autoimmune"):
            factors.append((factor.label, factor.evidence))
    acid = class_use(record, ACID_SUPPRESSANTS, as_of, "acid suppression (PPI/H2RA)")
    if acid.exposure_days is not None and acid.exposure_days >= ctx.param("acid_months") * DAYS_PER_MONTH:
        factors.append((acid.describe(), acid.evidence))
    if len(factors) < 2:
        ctx.note(f"{len(factors)} additive risk factor(s) ({', '.join(f for f, _ in factors) or 'none'}), needs 2")
        return None
    evidence = tuple(dict.fromkeys(ref for _, refs in factors for ref in refs))
    return Finding("COMBO", " + ".join(label for label, _ in factors), evidence)


def age_75(ctx: RuleContext) -> Finding | None:
    """Age 75 or over and nothing else; beside DEM-1 a risk factor only (docs/reference/clinical-rules.md 7.3)."""
    age = ctx.record.age(ctx.as_of)
    if others := ctx.prioritized_findings(exclude=frozenset({"DEM-1"})):
        ctx.note(f"not looked at: {', '.join(f.rule_id for f in others)} fired (AGE-75 is age alone)")
        return None
    ctx.note(f"age {'unknown (no birth date)' if age is None else age}, needs {ctx.param('age'):g}")
    if age is None or age < ctx.param("age"):
        return None
    return Finding("AGE-75", age_reason(age, ctx.param("age")), risk_factor_only=bool(ctx.triggered("DEM-1")))


RULES = [
    Rule(id="COMBO", title="Two or more additive risk factors", version="1.0.0", family="combo",
         priority=Priority.MEDIUM, window_months=24, evaluate=combo, stage=2, oral_therapy="suppress-high",
         suggest_in=frozenset({"default"}), params={"age": AGE(65), "acid_months": ACID_MONTHS},
         basis="MHRA (additive risk factors)"),
    Rule(id="AGE-75", title="Age 75 or over", version="1.1.0", family="age", priority=Priority.LOW,
         window_months=60, evaluate=age_75, stage=3, oral_therapy="suppress-high",
         suggest_in=frozenset({"default"}), params={"age": AGE(75)}, counts_for_later_rules=False,
         basis="AAFP 2017 (> 75 years); prevalence of deficiency > 10 % over 75"),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
