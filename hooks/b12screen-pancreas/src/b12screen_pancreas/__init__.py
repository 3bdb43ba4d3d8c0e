"""b12screen-pancreas: PANC-1, chronic pancreatitis or exocrine pancreatic insufficiency.

Pancreatic proteases release vitamin B12 from haptocorrin (R binder) in the duodenum so that it can bind
intrinsic factor. Without them B12 absorption falls: about 30 % of adults with exocrine pancreatic
insufficiency have an abnormal Schilling test (Guéant 1990), although clinical deficiency is uncommon
(5.7 % of 137 patients with chronic pancreatitis, Glasbrenner 1991). Hence a LOW-priority rule with a
36-month window, which also counts as "another risk factor" for MET-2, ACID-2 and SYM-1.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from b12screen import Finding, Priority, Rule, RuleContext, hookimpl

__version__ = "0.1.0"

CONDITIONS = ("panc-exocrine-insufficiency",)
ENZYMES = ("panc-enzyme-replacement",)


def panc_1(ctx: RuleContext) -> Finding | None:
    """A countable chronic pancreatitis / exocrine pancreatic insufficiency Condition, or (with
    ``enzyme_therapy_alone``) active pancreatic enzyme replacement without one."""
    conditions = ctx.record.conditions_in(CONDITIONS, ctx.as_of)
    enzymes = ctx.record.active_uses(ENZYMES, ctx.as_of)
    if not conditions and not (enzymes and ctx.param("enzyme_therapy_alone")):
        return None
    parts: list[str] = []
    if conditions:
        onset = min((c.onset for c in conditions if c.onset), default=None)
        parts.append((conditions[0].label or "chronic pancreatitis")
                     + (f" (since {onset.isoformat()})" if onset else ""))
    if enzymes:
        parts.append(f"on pancreatic enzyme replacement ({enzymes[0].label or 'pancrelipase'})")
    evidence = tuple(c.ref for c in conditions) + tuple(u.ref for u in enzymes)
    return Finding("PANC-1", "; ".join(parts), evidence)


RULES = [
    Rule(
        id="PANC-1",
        title="Chronic pancreatitis or exocrine pancreatic insufficiency",
        version="1.0.0",
        family="pancreas",
        basis="Guéant et al., Pancreas 1990;5:559-67 (B12 malabsorption in about 30 % of adults with exocrine "
              "pancreatic insufficiency: haptocorrin is not degraded); Glasbrenner et al., Klin Wochenschr 1991 "
              "(low serum B12 in 5.7 % of 137 patients with chronic pancreatitis)",
        evaluate=panc_1,
        priority=Priority.LOW,
        window_months=36,
        stage=0,  # a risk factor that MET-2, ACID-2 and SYM-1 (stage 1) read
        suggest_in=frozenset({"default"}),  # under the NICE profile a risk factor only, like the MAL rules
        oral_therapy="suppress-high",  # high-dose oral B12 is absorbed without the R-binder step
        params={"enzyme_therapy_alone": False},
    ),
]


def _load(name: str) -> dict[str, Any]:
    text = (resources.files(__name__) / "valuesets" / f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


@hookimpl
def b12screen_rules() -> list[Rule]:
    return RULES


@hookimpl
def b12screen_value_sets() -> list[dict[str, Any]]:
    return [_load(CONDITIONS[0]), _load(ENZYMES[0])]
