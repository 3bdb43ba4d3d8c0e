"""The modifiers of docs/reference/clinical-rules.md section 4, in the order the outcome is decided.

Each record names the modifier, the step of the outcome order it belongs to, its effect in words and
the function that applies it (:mod:`b12screen.core.decision`). :func:`plan` orders the list into steps
once, :func:`decide` runs them, and the explanation (:mod:`b12screen.core.explain`) walks the list, so
both read as the outcome order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from . import decision as d
from .decision import Decision, DecisionContext, Effect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Modifier:
    """One modifier: ``id`` (``MOD-…``), ``step`` (1-8 of section 4), its ``effect`` in words and ``apply``,
    which returns the :class:`Decision` when it decides the outcome, else ``None``. A modifier that rules
    note themselves (``ctx.modifier``) has no ``apply``."""

    id: str
    step: int
    effect: str
    apply: Effect | None = None


MODIFIERS: tuple[Modifier, ...] = (
    Modifier("MOD-DECEASED", 1, "deceased patient: not evaluated (unless evaluate_deceased)", d.deceased),
    Modifier("MOD-AGE-MIN", 1, "younger than min_age: not evaluated", d.too_young),
    Modifier("MOD-DX", 2, "B12 deficiency diagnosed: suppressed when treated, else deficiency without treatment",
             d.diagnosed),
    Modifier("MOD-TX-IM", 3, "parenteral B12 within parenteral_months (orders: parenteral_order_months): suppressed",
             d.parenteral),
    Modifier("MOD-LOW", 4, "latest B12 deficient, MMA raised, or homocysteine/MMA raised after nitrous oxide, with "
             "nothing done after it: unactioned low B12", d.unactioned_low),
    Modifier("MOD-STOPPED", 5, "medication class stopped: its rules do not trigger"),
    Modifier("MOD-DX-HIST", 5, "past B12 deficiency: a risk factor", d.past_deficiency),
    Modifier("MOD-TX-ORAL-HI", 6, "high-dose oral B12: suppresses or reduces rules as each rule says",
             d.high_dose_oral),
    Modifier("MOD-TX-ORAL-LO", 6, "low-dose oral B12: suppresses rules marked suppress-any", d.low_dose_oral),
    Modifier("MOD-PREG", 6, "pregnant: active B12 is suggested instead of total B12", d.pregnant),
    Modifier("MOD-INDET", 7, "latest B12 indeterminate without MMA after it: MMA suggested", d.indeterminate),
    Modifier("MOD-RENAL", 7, "eGFR below renal_egfr: MMA may be falsely high", d.renal),
    Modifier("MOD-RECENT", 8, "a B12 test inside the rule's window (never a deficient B12 or raised MMA): that "
             "rule is satisfied", d.recent_test),
)

#: What each step of section 4 decides.
STEPS: dict[int, str] = {
    1: "age and deceased check",
    2: "recorded B12 deficiency (MOD-DX)",
    3: "parenteral therapy (MOD-TX-IM)",
    4: "unactioned low B12 (MOD-LOW)",
    5: "rules whose triggers are met",
    6: "oral therapy",
    7: "indeterminate B12 (MOD-INDET)",
    8: "recent test (MOD-RECENT) and the suggestion",
}


def in_order(extra: Iterable[Modifier] = ()) -> tuple[Modifier, ...]:
    """The built-in modifiers with ``extra`` (plugin modifiers, already sorted by id) at the end of their step."""
    return tuple(sorted((*MODIFIERS, *extra), key=lambda m: m.step))


#: The effects of each step in order: (step, ((modifier or None, effect, guarded), ...)), where a plugin's
#: effect is guarded (its exception is reported and skipped) and the built-in checks are not.
Plan = tuple[tuple[int, tuple[tuple[Modifier | None, Effect, bool], ...]], ...]


def plan(modifiers: Iterable[Modifier]) -> Plan:
    """The :data:`Plan` of ``modifiers`` (in outcome order), worked out once per list rather than per patient."""
    by_step: dict[int, list[Modifier]] = {step: [] for step in STEPS}
    for modifier in modifiers:
        by_step[modifier.step].append(modifier)
    steps = []
    for step, members in by_step.items():
        effects = [(None, d.STEP_STARTS.get(step)), *((m, m.apply) for m in members), (None, d.STEP_ENDS.get(step))]
        steps.append((step, tuple((m, effect, m is not None and m not in MODIFIERS)
                                  for m, effect in effects if effect is not None)))
    return tuple(steps)


def decide(ctx: DecisionContext, steps: Plan) -> Decision:
    """Run the :func:`plan` of the modifiers over ``ctx``, each step between its opening and closing checks;
    the first decision wins and carries its step. A plugin modifier that raises is skipped and named in
    the decision's ``errors``."""
    errors: list[dict[str, str]] = []
    for step, effects in steps:
        for modifier, effect, guarded in effects:
            if not guarded:
                decided = effect(ctx)
            else:
                try:
                    decided = effect(ctx)
                except Exception as exc:  # like a faulty rule: reported, skipped, the rest decides
                    assert modifier is not None
                    log.info("modifier %s raised %s for one patient", modifier.id, type(exc).__name__)
                    errors.append({"rule": modifier.id, "error": f"{type(exc).__name__}: {exc}"})
                    continue
            if decided is not None:
                decided.step, decided.errors = step, errors
                return decided
    raise AssertionError("step 8 always decides")  # pragma: no cover
