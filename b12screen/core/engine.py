"""The rule engine: runs rule plugins over patient records and decides one outcome per patient.

It does no I/O, reads no input and never reads the clock: every call takes a built record and an explicit
as-of date. Reading and grouping input is the front door's (:mod:`b12screen.screening`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import date
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from ..plugins import PluginManager, collect_modifiers, collect_rules, collect_value_sets, get_plugin_manager
from .config import PROFILES, WINDOW_PARAM, Config
from .decision import Candidate, Decision, DecisionContext
from .display import tested_results
from .effective import effective_configuration, effective_title
from .labs import Bands, latest_b12
from .model import Finding, Priority, Rule, RuleContext
from .modifiers import Modifier, decide, in_order, plan
from .outcome import TESTS, ScreeningResult
from .params import as_param, check_values, unknown_name
from .record import PatientRecord
from .terminology import Terminology, builtin_value_sets
from .therapy import therapy_at

log = logging.getLogger(__name__)


class RuleEngine:
    """Screens patient records with the rules and modifiers of the loaded plugins.

    ``profile`` is ``default`` or ``nice``; ``config`` switches rules off and tunes parameters;
    ``plugin_manager`` defaults to one with the built-in and installed plugins. Build a
    :class:`b12screen.Screener` (this engine with the reading front door) rather than this class.
    """

    def __init__(self, profile: str = "default", config: Config | None = None,
                 plugin_manager: PluginManager | None = None) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
        self.profile = profile
        self.config = config or Config()
        self.plugin_manager = plugin_manager or get_plugin_manager()
        self.rule_owners: dict[str, str] = {}
        self.rules: list[Rule] = []
        for plugin, rule in collect_rules(self.plugin_manager):
            self.rules.append(rule)
            self.rule_owners[rule.id] = plugin
        self.rules_by_id = {r.id: r for r in self.rules}
        #: The modifiers of section 4 in outcome order, plugin ones (``b12screen_modifiers``) included.
        plugin_modifiers = collect_modifiers(self.plugin_manager)
        self.modifier_owners = {m.id: plugin for plugin, m in plugin_modifiers}
        self.modifiers: tuple[Modifier, ...] = in_order(m for _, m in plugin_modifiers)
        self._plan = plan(self.modifiers)  # the steps and their effects, made once, not per patient
        self._check_config()
        #: Rule titles naming the parameter values in force ("Age 80 or over" after AGE-75.age=80).
        self.rule_titles = {r.id: effective_title(r, self.rule_params[r.id]) for r in self.rules}
        value_sets = [("b12screen", vs) for vs in builtin_value_sets()]
        value_sets += collect_value_sets(self.plugin_manager)
        self.terminology = Terminology(value_sets)
        self.settings = self.config.setting_values(profile)
        self.bands = Bands(
            float(self.settings["total_b12_deficient_ng_l"]), float(self.settings["total_b12_normal_ng_l"]),
            float(self.settings["active_b12_deficient_pmol_l"]), float(self.settings["active_b12_normal_pmol_l"]),
        )
        self.ruleset_version = self._ruleset_version()
        # What counts as "another risk factor" for a rule: the counted rules (counts_for_later_rules) of earlier stages.
        self._counted_by_stage = {
            stage: frozenset(r.id for r in self.rules if r.counts_for_later_rules and r.stage < stage)
            for stage in {r.stage for r in self.rules}
        }

    # -- set-up -----------------------------------------------------------------------------

    def _check_config(self) -> None:
        """Rule names, parameter names, types and ranges of the configuration, checked once at load."""
        known = set(self.rules_by_id)
        named = set(self.config.disabled_rules) | self.config.enabled_rules | set(self.config.rules)
        for rule_id in sorted(named - known):
            raise unknown_name("rule", rule_id, known, "configuration: ")
        self.rule_params: dict[str, dict[str, Any]] = {}
        for rule in self.rules:
            specs = {name: as_param(value) for name, value in rule.params.items()}
            specs["window_months"] = WINDOW_PARAM
            self.rule_params[rule.id] = check_values(specs, self.config.rules.get(rule.id, {}), "parameter", rule.id)

    def _ruleset_version(self) -> str:
        parts: dict[str, Any] = {
            "rules": [(r.id, r.version, self.rule_owners[r.id]) for r in self.rules],
            "value_sets": [(i.id, i.version, i.concept_count(), len(i.terms)) for i in self.terminology.sets.values()],
            "config": self.config.fingerprint(),
        }
        if self.modifier_owners:  # plugin modifiers change outcomes too
            parts["modifiers"] = sorted(self.modifier_owners.items())
        blob = json.dumps(parts, sort_keys=True)
        return f"{__version__}+{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def effective_configuration(self) -> dict[str, Any]:
        """The profile, disabled rules, settings, rule parameters and titles in force (a run's record)."""
        return effective_configuration(self.profile, self.rules, self.config.disabled_rules, self.rule_params,
                                       self.settings)

    def enabled(self, rule: Rule) -> bool:
        return rule.id not in self.config.disabled_rules

    def window_of(self, rule: Rule, finding: Finding) -> float | None:
        override = self.rule_params.get(rule.id, {}).get("window_months")
        if override is not None:
            return float(override)
        return finding.window_months if finding.window_months is not None else rule.window_months

    # -- evaluation -------------------------------------------------------------------------

    def run_rules(self, record: PatientRecord, as_of: date, trace: dict[str, list[str]] | None = None,
                  ) -> tuple[dict[str, Finding], dict[str, list[str]], list[dict[str, str]]]:
        """Findings of every enabled rule, the modifiers rules noted, and rule errors; with ``trace``, the
        figures each rule noted (``ctx.note``) by rule id."""
        findings: dict[str, Finding] = {}
        modifiers: dict[str, list[str]] = {}
        errors: list[dict[str, str]] = []
        for rule in self.rules:
            if not self.enabled(rule):
                continue
            ctx = RuleContext(
                record=record, as_of=as_of, terminology=self.terminology, rule=rule,
                overrides=self.rule_params[rule.id], findings=findings,
                counted_rules=self._counted_by_stage[rule.stage], modifiers=modifiers, settings=self.settings,
                rules=self.rules_by_id, trace=None if trace is None else trace.setdefault(rule.id, []),
            )
            try:
                finding = rule.evaluate(ctx)
            except Exception as exc:  # a faulty rule must not sink the patient or the batch
                log.info("rule %s raised %s for one patient", rule.id, type(exc).__name__)
                errors.append({"rule": rule.id, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if finding is not None:
                findings[rule.id] = finding
        return findings, modifiers, errors

    def evaluate(self, record: PatientRecord, as_of: date) -> ScreeningResult:
        """Screen one patient at ``as_of`` (docs/reference/clinical-rules.md section 4)."""
        findings, noted, rule_errors = self.run_rules(record, as_of)
        triggered = self.triggered(findings)
        decision = self.decide(record, as_of, triggered)
        if decision.priority is not None:  # a stale injection order is named where the Flag is read (6.6)
            decision.notes = [*decision.notes, *therapy_at(
                record, as_of, self.settings).stale_notes()]
        modifiers = {**noted, **decision.modifiers}
        evidence: list[str] = []
        for rid in decision.rules:
            evidence.extend(triggered[rid].evidence)
        for refs in decision.modifiers.values():
            evidence.extend(refs)
        result = ScreeningResult(
            patient=record.key,
            outcome=decision.outcome,
            priority=decision.priority.value if decision.priority else None,
            rules=decision.rules,
            triggered=sorted(triggered),
            modifiers=sorted(modifiers),
            recommended_test=dict(TESTS[decision.test]) if decision.test and decision.priority else None,
            evidence=sorted(set(evidence)),
            as_of=as_of,
            profile=self.profile,
            ruleset_version=self.ruleset_version,
            reasons={rid: f.reason for rid, f in sorted(triggered.items())},
            notes=decision.notes,
            rule_errors=[*rule_errors, *decision.errors],
            rule_titles={rid: self.rule_titles[rid] for rid in decision.rules},
            latest_b12=on_file.report() if (on_file := latest_b12(record, as_of, None, self.bands)) else None,
            results=tested_results(record, evidence, as_of, on_file.ref if on_file else None),
        )
        return result

    def triggered(self, findings: Mapping[str, Finding]) -> dict[str, Finding]:
        """The findings less those of rules replaced by another triggered rule."""
        replaced = {old for rid in findings for old in self.rules_by_id[rid].replaces}
        return {rid: f for rid, f in findings.items() if rid not in replaced}

    def decide(self, record: PatientRecord, as_of: date, triggered: Mapping[str, Finding]) -> Decision:
        """Section 4 of docs/reference/clinical-rules.md: the modifiers, in outcome order, over this patient."""
        candidates = {
            rid: Candidate(f, self._priority(rid, f), self.window_of(self.rules_by_id[rid], f))
            for rid, f in triggered.items() if self.rules_by_id[rid].priority is not None and not f.risk_factor_only
        }
        ctx = DecisionContext(record, as_of, self.settings, self.profile, self.bands, self.rules_by_id, candidates)
        return decide(ctx, self._plan)

    def _priority(self, rule_id: str, finding: Finding) -> Priority:
        priority = finding.priority or self.rules_by_id[rule_id].priority
        assert priority is not None
        return priority

