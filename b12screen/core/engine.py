"""The engine: runs rule plugins over patient records and decides one outcome per patient.

It does no I/O and never reads the clock: every call takes an explicit as-of date.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .._version import __version__
from ..errors import ConfigError, InputError
from ..plugins import PluginManager, collect_rules, collect_value_sets, get_plugin_manager
from ..sources import group_entries, read_value
from ..sources.extract import Extractor
from ..sources.validation import ALL, EVIDENCE, extractor_for, screen_grouped
from .clinical import breastfeeding, pregnancy
from .config import PROFILES, Config
from .labs import Band, Bands, latest_b12, latest_egfr, mma_after
from .model import SINCE_ONSET, Finding, Priority, Rule, RuleContext
from .outcome import (
    DEFICIENCY_WITHOUT_TREATMENT,
    NO_SUGGESTION,
    NOT_EVALUATED,
    SUGGEST_B12_TEST,
    SUGGEST_MMA,
    SUPPRESSED,
    TESTS,
    UNACTIONED_LOW_B12,
    ScreeningResult,
    ScreeningResults,
)
from .record import PatientRecord
from .terminology import Terminology, builtin_value_sets
from .therapy import b12_therapy

log = logging.getLogger(__name__)


@dataclass
class _Decision:
    outcome: str
    priority: Priority | None = None
    rules: list[str] = field(default_factory=list)
    modifiers: dict[str, list[str]] = field(default_factory=dict)
    test: str | None = "total-b12"
    notes: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    """A triggered rule on its way to the outcome, with its effective priority and window."""

    finding: Finding
    priority: Priority
    window: float | None


class Screener:
    """Screens patient data with the rules of the loaded plugins.

    ``profile`` is ``default`` or ``nice``; ``config`` switches rules off and tunes parameters;
    ``plugin_manager`` defaults to one with the built-in and installed plugins.
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
        self._check_config()
        value_sets = [("b12screen", vs) for vs in builtin_value_sets()]
        value_sets += collect_value_sets(self.plugin_manager)
        self.terminology = Terminology(value_sets)
        self._extractor: Extractor | None = None
        self.settings = self.config.setting_values()
        self._bands = Bands(
            float(self.settings["total_b12_deficient_ng_l"]), float(self.settings["total_b12_normal_ng_l"]),
            float(self.settings["active_b12_deficient_pmol_l"]), float(self.settings["active_b12_normal_pmol_l"]),
        )
        self.ruleset_version = self._ruleset_version()
        # Rules may read the findings of risk-factor rules of earlier stages only.
        self._earlier_risk_factors = {
            stage: frozenset(r.id for r in self.rules if r.counts_for_later_rules and r.stage < stage)
            for stage in {r.stage for r in self.rules}
        }

    # -- set-up -----------------------------------------------------------------------------

    def _check_config(self) -> None:
        known = set(self.rules_by_id)
        unknown = (set(self.config.disabled_rules) | set(self.config.rules)) - known
        if unknown:
            raise ConfigError(f"configuration names unknown rule(s): {', '.join(sorted(unknown))}")
        for rule_id, params in self.config.rules.items():
            allowed = set(self.rules_by_id[rule_id].params) | {"window_months"}
            bad = set(params) - allowed
            if bad:
                raise ConfigError(
                    f"rule {rule_id} has no parameter(s) {', '.join(sorted(bad))} "
                    f"(it has: {', '.join(sorted(allowed))})"
                )

    def _ruleset_version(self) -> str:
        blob = json.dumps({
            "rules": [(r.id, r.version, self.rule_owners[r.id]) for r in self.rules],
            "value_sets": [(i.id, i.version, i.concept_count(), len(i.terms)) for i in self.terminology.sets.values()],
            "config": self.config.fingerprint(),
        }, sort_keys=True)
        return f"{__version__}+{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def enabled(self, rule: Rule) -> bool:
        return rule.id not in self.config.disabled_rules

    def window_of(self, rule: Rule, finding: Finding) -> float | None:
        override = self.config.rules.get(rule.id, {}).get("window_months")
        if override is not None:
            return float(override)
        return finding.window_months if finding.window_months is not None else rule.window_months

    # -- reading ----------------------------------------------------------------------------

    @property
    def extractor(self) -> Extractor:
        """An extractor that validates every resource a rule can use (policy "all"), for grouping by hand."""
        if self._extractor is None:
            self._extractor = extractor_for(self.terminology, ALL)
        return self._extractor

    def screen(self, data: Any, as_of: date, source: str = "<input>", policy: str = EVIDENCE) -> ScreeningResults:
        """Screen a Bundle, a resource or a list of resources (parsed JSON) at ``as_of`` under the
        validation policy (:mod:`b12screen.sources.validation`). A convenience over
        :func:`b12screen.sources.group_entries` and :meth:`screen_records`."""
        grouped = group_entries(read_value(data, source), extractor_for(self.terminology, policy))
        return screen_grouped(self, grouped, as_of, policy)

    def screen_records(self, records: Iterable[PatientRecord], as_of: date,
                       errors: Iterable[InputError] = (), resources_read: int = 0) -> ScreeningResults:
        results = [self.evaluate(r, as_of) for r in sorted(records, key=lambda r: r.key)]
        return ScreeningResults(results, errors, resources_read)

    # -- evaluation -------------------------------------------------------------------------

    def run_rules(self, record: PatientRecord, as_of: date) -> tuple[dict[str, Finding], dict[str, list[str]],
                                                                       list[dict[str, str]]]:
        """Findings of every enabled rule, the modifiers rules noted, and rule errors."""
        findings: dict[str, Finding] = {}
        modifiers: dict[str, list[str]] = {}
        errors: list[dict[str, str]] = []
        for rule in self.rules:
            if not self.enabled(rule):
                continue
            ctx = RuleContext(
                record=record, as_of=as_of, terminology=self.terminology, rule=rule,
                overrides=self.config.rules.get(rule.id, {}), findings=findings,
                risk_factor_rules=self._earlier_risk_factors[rule.stage], modifiers=modifiers, settings=self.settings,
                rules=self.rules_by_id,
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
        """Screen one patient at ``as_of`` (docs/clinical-rules.md section 4)."""
        findings, noted, rule_errors = self.run_rules(record, as_of)
        replaced = {old for rid in findings for old in self.rules_by_id[rid].replaces}
        triggered = {rid: f for rid, f in findings.items() if rid not in replaced}
        decision = self._decide(record, as_of, triggered)
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
            rule_errors=rule_errors,
            rule_titles={rid: self.rules_by_id[rid].title for rid in decision.rules},
        )
        return result

    def _decide(self, record: PatientRecord, as_of: date, triggered: Mapping[str, Finding]) -> _Decision:
        """Section 4 of docs/clinical-rules.md, step by step."""
        settings = self.settings
        age = record.age(as_of)
        # 1. MOD-AGE-MIN (and deceased patients)
        if record.is_deceased(as_of) and not settings["evaluate_deceased"]:
            return _Decision(NOT_EVALUATED, modifiers={"MOD-DECEASED": []}, test=None)
        if age is not None and age < settings["min_age"]:
            return _Decision(NOT_EVALUATED, modifiers={"MOD-AGE-MIN": []}, test=None)
        therapy = b12_therapy(record, as_of, settings["parenteral_months"], settings["high_dose_oral_ug"])
        treated = {"MOD-TX-IM": therapy.parenteral, "MOD-TX-ORAL-HI": therapy.high_oral}
        treated = {k: v for k, v in treated.items() if v}
        # 2. MOD-DX
        conditions = record.conditions_in(("b12-deficiency-dx",), as_of)
        diagnoses = [c.ref for c in conditions]
        if diagnoses:
            if treated:
                return _Decision(SUPPRESSED, modifiers={"MOD-DX": diagnoses, **treated}, test=None)
            recorded = "; ".join(
                (c.label or "B12 deficiency") + (f" (recorded {c.onset.isoformat()})" if c.onset else "")
                for c in conditions)
            return _Decision(DEFICIENCY_WITHOUT_TREATMENT, Priority.HIGH, modifiers={"MOD-DX": diagnoses},
                             test=None, notes=[f"Diagnosis: {recorded}; no parenteral or high-dose oral B12 "
                                               "is recorded: consider starting replacement or recording it"])
        # 3. MOD-TX-IM
        if therapy.parenteral:
            return _Decision(SUPPRESSED, modifiers={"MOD-TX-IM": therapy.parenteral}, test=None)
        # 4. MOD-LOW
        latest = latest_b12(record, as_of, settings["latest_b12_months"], self._bands)
        if latest is not None and latest.band is Band.DEFICIENT and not therapy.any_after(latest.when):
            return _Decision(UNACTIONED_LOW_B12, Priority.HIGH, modifiers={"MOD-LOW": [latest.ref]}, test=None,
                             notes=[f"Latest B12 {latest.text} on {latest.when.isoformat()} is in the deficient "
                                    "range with no diagnosis or treatment recorded after it"])
        # 5. rules whose triggers are met; the profile decides which may suggest a new test
        triggered_rules = {
            rid: _Candidate(f, self._priority(rid, f), self.window_of(self.rules_by_id[rid], f))
            for rid, f in triggered.items() if self.rules_by_id[rid].priority is not None
        }
        modifiers: dict[str, list[str]] = {}
        history = [c.ref for c in record.condition_history(("b12-deficiency-dx",), as_of)]
        if history:
            modifiers["MOD-DX-HIST"] = history
        if not triggered_rules:
            return _Decision(NO_SUGGESTION, modifiers=modifiers, test=None)
        # 6. oral therapy
        for rid in list(triggered_rules):
            effect = self.rules_by_id[rid].oral_therapy
            if therapy.high_oral and effect in ("suppress-high", "suppress-any"):
                del triggered_rules[rid]
                modifiers["MOD-TX-ORAL-HI"] = therapy.high_oral
            elif therapy.low_oral and effect == "suppress-any":
                del triggered_rules[rid]
                modifiers["MOD-TX-ORAL-LO"] = therapy.low_oral
            elif therapy.high_oral and effect == "reduce":
                triggered_rules[rid] = _Candidate(triggered_rules[rid].finding, Priority.LOW, 12.0)
                modifiers["MOD-TX-ORAL-HI"] = therapy.high_oral
        if not triggered_rules:
            return _Decision(SUPPRESSED, modifiers=modifiers, test=None)
        candidates = {rid: c for rid, c in triggered_rules.items() if self.rules_by_id[rid].suggests_in(self.profile)}
        notes: list[str] = []
        pregnant = pregnancy(record, as_of)
        if pregnant:
            modifiers["MOD-PREG"] = pregnant
        # 7. MOD-INDET (as in the default profile whatever the profile: any triggered rule counts)
        if latest is not None and latest.band is Band.INDETERMINATE and not mma_after(record, latest.when, as_of):
            modifiers["MOD-INDET"] = [latest.ref]
            symptomatic = any(c.finding.symptomatic for c in triggered_rules.values())
            priority = Priority.HIGH if symptomatic else max((c.priority for c in triggered_rules.values()),
                                                               key=lambda p: p.rank)
            notes.append(f"Latest B12 {latest.text} on {latest.when.isoformat()} is indeterminate; "
                         "MMA tells whether it is functionally low")
            egfr = latest_egfr(record, as_of)
            if egfr is not None and egfr.value is not None and egfr.value < settings["renal_egfr"]:
                modifiers["MOD-RENAL"] = [egfr.ref]
                notes.append(f"eGFR {egfr.value:g} (< {settings['renal_egfr']}): MMA may be falsely high")
            return _Decision(SUGGEST_MMA, priority, sorted(triggered_rules), modifiers, "mma", notes)
        if not candidates:
            return _Decision(NO_SUGGESTION, modifiers=modifiers, test=None)
        # 8. MOD-RECENT
        tests = record.b12_status_tests(as_of)
        remaining: dict[str, _Candidate] = {}
        satisfied_by: list[str] = []
        for rid, candidate in candidates.items():
            test = self._satisfying_test(candidate, tests, as_of)
            if test is None:
                remaining[rid] = candidate
            else:
                satisfied_by.append(test)
        if satisfied_by:
            modifiers["MOD-RECENT"] = sorted(set(satisfied_by))
        if not remaining:
            return _Decision(SUPPRESSED, modifiers=modifiers, test=None)
        priority = max((c.priority for c in remaining.values()), key=lambda p: p.rank)
        test_key = "total-b12"
        if any(c.finding.recommended_test for c in remaining.values()):
            test_key = next(c.finding.recommended_test for c in remaining.values() if c.finding.recommended_test)
            if test_key == "homocysteine":
                notes.append("Nitrous oxide inactivates B12: serum B12 may be normal; homocysteine or MMA "
                             "shows functional deficiency")
        elif pregnant:
            test_key = "active-b12"
            notes.append("Pregnant: total B12 falls in pregnancy, so active B12 (holotranscobalamin) is suggested")
        if "DIET-V" in remaining and breastfeeding(record, as_of):
            notes.append("Breastfeeding on a vegan diet: the infant is at risk of B12 deficiency too")
        return _Decision(SUGGEST_B12_TEST, priority, sorted(remaining), modifiers, test_key, notes)

    def _priority(self, rule_id: str, finding: Finding) -> Priority:
        priority = finding.priority or self.rules_by_id[rule_id].priority
        assert priority is not None
        return priority

    @staticmethod
    def _satisfying_test(candidate: _Candidate, tests: list[tuple[date, str]], as_of: date) -> str | None:
        """The reference of a B12 status test inside the rule's window (MOD-RECENT), if any."""
        window, finding = candidate.window, candidate.finding
        if window is None:
            return None
        for when, ref in reversed(tests):
            if finding.test_after is not None and when < finding.test_after:
                continue
            if window == SINCE_ONSET or (as_of - when).days <= window * 30.44:
                return ref
        return None


def screen(data: Any, as_of: date, profile: str = "default", config: Config | None = None,
           plugin_manager: PluginManager | None = None) -> ScreeningResults:
    """Screen parsed FHIR JSON (Bundle, resource or list of resources) at ``as_of``.

    Returns one :class:`ScreeningResult` per patient; input problems are in ``.errors``.
    """
    return Screener(profile=profile, config=config, plugin_manager=plugin_manager).screen(data, as_of)
