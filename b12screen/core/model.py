"""The records plugins exchange with the engine: rules, findings and priorities."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import TYPE_CHECKING, Any

from .params import Param, as_param

if TYPE_CHECKING:
    from .record import PatientRecord
    from .terminology import Terminology

#: Window value meaning "any test after ``Finding.test_after`` satisfies the rule" (e.g. MS-1).
SINCE_ONSET = math.inf


class Priority(Enum):
    """Rule and outcome priority, mapped to FHIR flag-priority codes."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 1, "medium": 2, "high": 3}[self.value]

    @property
    def flag_code(self) -> str:
        return {"low": "PL", "medium": "PM", "high": "PH"}[self.value]

    @property
    def flag_display(self) -> str:
        return {"low": "Low priority", "medium": "Medium priority", "high": "High priority"}[self.value]


@dataclass(frozen=True)
class Finding:
    """What a rule reports when its trigger is met for one patient.

    ``reason`` is a short clinical phrase ("metformin for 6.1 years, 2000 mg/day"); ``evidence`` the
    references (``Type/id``) of the resources that met the trigger. ``priority`` and ``window_months``
    override the rule's defaults for this patient; ``test_after`` makes only B12 tests dated after it
    count (symptom rules, MS-1); ``answered_by`` names which results (``homocysteine``, ``mma``) satisfy the rule
    instead of the B12 status tests (N2O-1: homocysteine or MMA); ``risk_factor_only`` keeps the finding
    among the risk factors without letting it suggest (AGE-75 beside DEM-1).
    """

    rule_id: str
    reason: str
    evidence: tuple[str, ...] = ()
    priority: Priority | None = None
    window_months: float | None = None
    test_after: date | None = None
    symptomatic: bool = False
    recommended_test: str | None = None
    answered_by: tuple[str, ...] = ()
    risk_factor_only: bool = False


@dataclass(frozen=True)
class Rule:
    """A screening rule, registered by a plugin through ``b12screen_rules()``.

    ``evaluate(ctx)`` returns a :class:`Finding` when the trigger is met, else None. Rules with
    ``priority=None`` are risk factors only: they are reported but never lead to a suggestion.
    ``stage`` orders evaluation: rules of a later stage can read the findings of earlier ones
    (``ctx.findings``); within a stage rules run in id order. ``replaces`` lists rule ids this rule
    supersedes when both are triggered. ``params`` are the tunable thresholds with their defaults.
    ``suggest_in`` names the profiles in which the rule may lead to a suggestion (None: all).
    ``oral_therapy`` says what oral B12 does to it: ``keep``, ``suppress-high`` (high-dose oral
    suppresses it), ``suppress-any`` (any oral B12 suppresses it), ``reduce`` (high-dose oral makes
    it LOW with a 12-month window) or ``reduce-medium`` (MEDIUM with a 12-month window).
    """

    id: str
    title: str
    version: str
    basis: str
    evaluate: Callable[[RuleContext], Finding | None]
    priority: Priority | None = Priority.MEDIUM
    window_months: float | None = None
    family: str = ""
    stage: int = 1
    replaces: tuple[str, ...] = ()
    counts_for_later_rules: bool = True  # a finding counts as "another risk factor" for later stages
    params: Mapping[str, Any] = field(default_factory=dict)
    suggest_in: frozenset[str] | None = None
    oral_therapy: str = "keep"

    def suggests_in(self, profile: str) -> bool:
        """Whether this rule may lead to a suggestion under ``profile`` (else it is a risk factor only)."""
        return self.priority is not None and (self.suggest_in is None or profile in self.suggest_in)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (for ``b12screen rules``)."""
        window: float | str | None = self.window_months
        if window == SINCE_ONSET:
            window = "since onset"
        return {
            "id": self.id,
            "title": self.title,
            "version": self.version,
            "family": self.family,
            "priority": self.priority.value if self.priority else None,
            "window_months": window,
            "basis": self.basis,
            "replaces": list(self.replaces),
            "params": {name: as_param(value).describe() for name, value in self.params.items()},
            "oral_therapy": self.oral_therapy,
            "profiles": sorted(self.suggest_in) if self.suggest_in is not None else "all",
        }


@dataclass
class RuleContext:
    """Everything a rule may look at for one patient: the record, the as-of date, the value sets,
    the configured parameters and the findings of rules evaluated before it."""

    record: PatientRecord
    as_of: date
    terminology: Terminology
    rule: Rule
    overrides: Mapping[str, Any]
    findings: dict[str, Finding]
    #: Ids of the rules of earlier stages whose findings count as "another risk factor" for this rule
    #: (:attr:`Rule.counts_for_later_rules`); not the report's ``risk_factors`` (every triggered rule).
    counted_rules: frozenset[str]
    modifiers: dict[str, list[str]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    #: The figures the rule compared, kept only when an explanation is asked for (see :meth:`note`).
    trace: list[str] | None = None

    def note(self, text: str) -> None:
        """Record a figure the rule compared ("metformin exposure 3.2 months, needs more than 4"), whether or
        not it fires. Costs nothing unless ``b12screen explain`` (or :func:`b12screen.core.explain.explain`)
        asked for a trace; plugins may call it freely."""
        if self.trace is not None:
            self.trace.append(text)

    def param(self, name: str) -> Any:
        """A rule parameter: the configured value, else the rule's default."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.rule.params:
            default = self.rule.params[name]
            return default.default if isinstance(default, Param) else default
        raise KeyError(f"rule {self.rule.id} has no parameter {name!r}")

    def note_modifier(self, modifier_id: str, *evidence: str) -> None:
        """Record that a modifier applied (e.g. MOD-STOPPED), with its evidence references."""
        self.modifiers.setdefault(modifier_id, []).extend(evidence)

    def setting(self, name: str) -> Any:
        """A screening-wide setting (e.g. ``risk_factor_age``), from the configuration."""
        return self.settings[name]

    def triggered(self, *rule_ids: str) -> list[Finding]:
        """Findings of already evaluated rules among ``rule_ids`` (all of them when none given)."""
        if not rule_ids:
            return list(self.findings.values())
        return [self.findings[r] for r in rule_ids if r in self.findings]

    def prioritized_findings(self, exclude: frozenset[str] = frozenset()) -> list[Finding]:
        """Findings so far of rules that carry a priority (not risk-factor-only rules)."""
        return [
            f for rid, f in sorted(self.findings.items())
            if rid not in exclude and (rule := self.rules.get(rid)) is not None and rule.priority is not None
        ]

    def other_risk_factors(self, exclude: frozenset[str] = frozenset()) -> list[Finding]:
        """Findings of the :attr:`counted_rules` (earlier stages) that fired, leaving out ``exclude``."""
        return [
            f for rid, f in sorted(self.findings.items())
            if rid in self.counted_rules and rid not in exclude
        ]
