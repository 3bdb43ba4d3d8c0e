"""Malabsorption and gastric surgery: MAL-CEL, MAL-CRO-0, MAL-CRO-R, MAL-SBS, MAL-ATG, GAS-1.

These are stage-0 rules: their findings are risk factors that later rules (MET-2, ACID-2, SYM-1) read.
"""

from __future__ import annotations

from ..core.model import Finding, Priority, Rule, RuleContext
from ..core.params import Param
from ..hookspecs import hookimpl

BARIATRIC_SETS = frozenset({"bariatric-surgery", "bariatric-band"})
#: Crohn's disease confined to the colon and right hemicolectomy (docs/reference/clinical-rules.md 7.7).
COLON = "crohns-colon"
HEMICOLECTOMY = "right-hemicolectomy"


def _condition_rule(rule_id: str, concept: str, ctx: RuleContext, after_diagnosis: bool = False) -> Finding | None:
    conditions = ctx.record.conditions_in((concept,), ctx.as_of)
    if not conditions:
        return None
    onset = min((c.onset for c in conditions if c.onset), default=None)
    label = conditions[0].label or concept
    since = f" (since {onset.isoformat()})" if onset else ""
    return Finding(rule_id, f"{label}{since}", tuple(c.ref for c in conditions),
                   test_after=onset if after_diagnosis else None)


def mal_cel(ctx: RuleContext) -> Finding | None:
    """Coeliac disease; a test counts only after the diagnosis."""
    return _condition_rule("MAL-CEL", "coeliac-disease", ctx, after_diagnosis=True)


def _resections(ctx: RuleContext) -> list:
    return ctx.record.procedures_in(("ileal-resection", HEMICOLECTOMY), ctx.as_of)


def mal_cro_0(ctx: RuleContext) -> Finding | None:
    """Crohn's disease of the small intestine, ileum or unspecified site without an ileal resection of 20 cm
    or more; Crohn's disease confined to the colon is a risk factor only (docs/reference/clinical-rules.md 7.7)."""
    conditions = [c for c in ctx.record.conditions_in(("crohns-disease",), ctx.as_of) if COLON not in c.concepts]
    if not conditions:
        return None
    onset = min((c.onset for c in conditions if c.onset), default=None)
    since = f" (since {onset.isoformat()})" if onset else ""
    return Finding("MAL-CRO-0", f"{conditions[0].label or 'crohns-disease'}{since}", tuple(c.ref for c in conditions))


def mal_cro_r(ctx: RuleContext) -> Finding | None:
    """Ileal or ileocaecal resection of at least 20 cm, or of unknown length; a right hemicolectomy only with
    an ileal length of at least 20 cm recorded (7.7)."""
    minimum = ctx.param("min_length_cm")
    qualifying = [p for p in _resections(ctx) if (p.length_cm is None and HEMICOLECTOMY not in p.concepts)
                  or (p.length_cm is not None and p.length_cm >= minimum)]
    if not qualifying:
        return None
    parts = []
    for p in qualifying:
        length = f"{p.length_cm:g} cm" if p.length_cm is not None else "length unknown"
        when = f" on {p.performed.isoformat()}" if p.performed else ""
        parts.append(f"{p.label or 'ileal resection'} ({length}){when}")
    return Finding("MAL-CRO-R", "; ".join(parts), tuple(p.ref for p in qualifying))


def mal_sbs(ctx: RuleContext) -> Finding | None:
    """Short bowel syndrome, intestinal failure or postsurgical malabsorption."""
    return _condition_rule("MAL-SBS", "short-bowel", ctx)


def mal_atg(ctx: RuleContext) -> Finding | None:
    """Atrophic gastritis (not autoimmune: autoimmune gastritis is a MOD-DX diagnosis)."""
    conditions = [c for c in ctx.record.conditions_in(("atrophic-gastritis",), ctx.as_of)
                  if "b12-deficiency-dx" not in c.concepts]
    if not conditions:
        return None
    return Finding("MAL-ATG", conditions[0].label or "atrophic gastritis", tuple(c.ref for c in conditions))


def gas_1(ctx: RuleContext) -> Finding | None:
    """Total or partial gastrectomy that is not bariatric surgery."""
    procedures = [p for p in ctx.record.procedures_in(("gastrectomy",), ctx.as_of) if not p.concepts & BARIATRIC_SETS]
    conditions = [c for c in ctx.record.conditions_in(("gastrectomy",), ctx.as_of) if not c.concepts & BARIATRIC_SETS]
    if not procedures and not conditions:
        return None
    labels = [p.label for p in procedures] + [c.label for c in conditions]
    when = next((p.performed for p in procedures if p.performed), None)
    reason = (labels[0] or "gastrectomy") + (f" on {when.isoformat()}" if when else "")
    return Finding("GAS-1", reason, tuple(p.ref for p in procedures) + tuple(c.ref for c in conditions))


def _rule(rule_id: str, title: str, priority: Priority, window: float, evaluate, basis: str,
          version: str = "1.0.0", **extra) -> Rule:
    return Rule(id=rule_id, title=title, version=version, family="malabsorption", priority=priority,
                window_months=window, evaluate=evaluate, basis=basis, stage=0, suggest_in=frozenset({"default"}),
                oral_therapy="reduce", **extra)


RULES = [
    _rule("MAL-CEL", "Coeliac disease", Priority.MEDIUM, 36, mal_cel,
          "Oxentenko & Murray 2015 (coeliac disease work-up); NICE NG239 risk factor"),
    _rule("MAL-CRO-0", "Crohn's disease without significant ileal resection", Priority.LOW, 36, mal_cro_0,
          "AAFP 2017 (inflammatory bowel disease); Headstrom 2008", version="1.1.0"),
    _rule("MAL-CRO-R", "Ileal or ileocaecal resection of 20 cm or more (or unknown length)", Priority.HIGH, 12,
          mal_cro_r, "Duerksen 2006; Battat 2014; NICE NG239 (terminal ileal resection)", version="1.1.0",
          replaces=("MAL-CRO-0",), params={"min_length_cm": Param(20, "cm", "resection this long", 0, 1000)}),
    _rule("MAL-SBS", "Short bowel syndrome, intestinal failure or postsurgical malabsorption", Priority.HIGH, 12,
          mal_sbs, "Resection > 60 cm makes B12 malabsorption near-certain (short bowel guidance)"),
    _rule("MAL-ATG", "Atrophic gastritis (not autoimmune)", Priority.MEDIUM, 36, mal_atg,
          "NICE NG239 (atrophic gastritis of the gastric body)"),
    Rule(id="GAS-1", title="Total or partial gastrectomy (not bariatric)", version="1.0.0", family="gastric",
         priority=Priority.HIGH, window_months=12, evaluate=gas_1, stage=0, suggest_in=frozenset({"default"}),
         oral_therapy="reduce", basis="NICE NG239; MHRA; AAFP 2017 (gastrectomy)"),
]


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES
