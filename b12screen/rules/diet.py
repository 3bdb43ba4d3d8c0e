"""Diet: DIET-V (vegan) and DIET-VG (vegetarian, a risk factor only).

Diet is read from SNOMED dietary findings in Condition, Flag (category diet), Observation code or value,
and from the FHIR ``diet`` CodeSystem (Encounter.hospitalization.dietPreference), with text fallback.
"""

from __future__ import annotations

from ..core.clinical import breastfeeding, pregnancy
from ..core.model import Finding, Priority, Rule, RuleContext
from ..hookspecs import hookimpl


def _diet(ctx: RuleContext, concept: str) -> list[str]:
    record, as_of = ctx.record, ctx.as_of
    refs = [c.ref for c in record.conditions_in((concept,), as_of)]
    refs += [o.ref for o in record.observations_in((concept,), as_of)]
    refs += [o.ref for o in record.observations_in((concept,), as_of, by_value=True)]
    return list(dict.fromkeys(refs))


def diet_v(ctx: RuleContext) -> Finding | None:
    """Vegan diet (any oral B12 supplement suppresses it; HIGH in pregnancy or breastfeeding)."""
    refs = _diet(ctx, "vegan-diet")
    if not refs:
        return None
    pregnant = pregnancy(ctx.record, ctx.as_of)
    feeding = breastfeeding(ctx.record, ctx.as_of)
    reason = "vegan diet"
    priority = None
    if pregnant:
        ctx.note_modifier("MOD-PREG", *pregnant)
        reason += ", pregnant"
        priority = Priority.HIGH
    if feeding:
        ctx.note_modifier("MOD-BF", *feeding)
        reason += ", breastfeeding (the infant is at risk too)"
        priority = Priority.HIGH
    return Finding("DIET-V", reason, tuple(refs) + tuple(pregnant) + tuple(feeding), priority=priority)


def diet_vg(ctx: RuleContext) -> Finding | None:
    """(Lacto-ovo) vegetarian diet: a risk factor for MET-2, ACID-2 and COMBO."""
    refs = _diet(ctx, "vegetarian-diet")
    return Finding("DIET-VG", "vegetarian diet", tuple(refs)) if refs else None


RULES = [
    Rule(id="DIET-V", title="Vegan diet without a B12 supplement", version="1.0.0", family="diet",
         priority=Priority.MEDIUM, window_months=36, evaluate=diet_v, stage=0, oral_therapy="suppress-any",
         replaces=("DIET-VG",), suggest_in=frozenset({"default"}),
         basis="NICE NG239; NIH Office of Dietary Supplements; AAFP 2017; MHRA"),
    Rule(id="DIET-VG", title="Vegetarian diet (risk factor)", version="1.0.0", family="diet", priority=None,
         window_months=None, evaluate=diet_vg, stage=0, oral_therapy="suppress-high",
         basis="MHRA ('some vegetarian diets'); counts for MET-2, ACID-2 and COMBO"),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
