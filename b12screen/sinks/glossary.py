"""What every code of the batch outputs means, written into summary.json (``definitions``) so the summary
page and any reader can say it: outcomes, priorities, and the rules and modifiers named as reasons (the
titles and bases ``b12screen rules`` shows, titles naming the values in force)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.outcome import FLAGGED_OUTCOMES, OUTCOME_DISPLAY

if TYPE_CHECKING:
    from ..core.engine import RuleEngine

PRIORITY_MEANING = {
    "high": "act soon: a deficient B12 result or a recorded deficiency with nothing done, or a risk factor "
            "with a symptom or sign (FHIR flag priority PH)",
    "medium": "a risk factor the guidelines name as a reason to test (PM)",
    "low": "a weaker reason on its own, such as age (PL)",
}


def definitions(engine: RuleEngine) -> dict[str, Any]:
    """Outcomes (meaning, whether a Flag is made), priorities, rules (title, basis, priority) and modifiers."""
    return {
        "outcomes": {code: {"meaning": text, "flagged": code in FLAGGED_OUTCOMES}
                     for code, text in OUTCOME_DISPLAY.items()},
        "priorities": dict(PRIORITY_MEANING),
        "rules": {r.id: {"title": engine.rule_titles[r.id], "basis": r.basis,
                         "priority": r.priority.value if r.priority else None} for r in engine.rules},
        "modifiers": {m.id: {"title": m.effect, "basis": f"outcome order, step {m.step}"} for m in engine.modifiers},
    }
