"""Why a patient got their outcome: every rule (fired, not fired, disabled) with the figures it compared,
every modifier of section 4 considered, the step that decided, and the evidence. No I/O, no clock."""

from __future__ import annotations

import math
from datetime import date
from typing import TYPE_CHECKING, Any

from .abnormal import answering_tests, low_figures
from .dates import DAYS_PER_MONTH
from .labs import METABOLITES
from .modifiers import STEPS
from .therapy import therapy_at

if TYPE_CHECKING:
    from .engine import RuleEngine
    from .record import PatientRecord


def window_figure(tests: list[tuple[date, str]], as_of: date, window: float, what: str = "B12 test") -> str:
    """The latest test that may satisfy a rule (MOD-RECENT: not a deficient B12, a raised MMA or an
    indeterminate B12 nobody followed up) against the rule's window, in words."""
    span = "since onset" if window == math.inf else f"{window:g}-month window"
    if not tests:
        return f"no {what} on record that counts ({span})"
    when = tests[-1][0]
    inside = window == math.inf or (as_of - when).days <= window * DAYS_PER_MONTH
    return f"latest {what} that counts {when.isoformat()}, {'inside' if inside else 'outside'} the {span}"


def explain(screener: RuleEngine, record: PatientRecord, as_of: date) -> dict[str, Any]:
    """The explanation of one patient at ``as_of`` under ``screener``'s profile and configuration."""
    result = screener.evaluate(record, as_of)
    trace: dict[str, list[str]] = {}
    findings, _, errors = screener.run_rules(record, as_of, trace)
    failed = {e["rule"]: e["error"] for e in errors}
    replaced_by = {old: rid for rid in findings for old in screener.rules_by_id[rid].replaces}
    mma_limit = float(screener.settings["mma_raised_umol_l"])
    rules = []
    for rule in screener.rules:
        entry: dict[str, Any] = {"id": rule.id, "title": screener.rule_titles[rule.id], "version": rule.version,
                                 "figures": trace.get(rule.id, [])}
        if not screener.enabled(rule):
            entry["status"] = "disabled"
        elif rule.id in failed:
            entry.update(status="failed", error=failed[rule.id])
        elif rule.id in findings:
            finding = findings[rule.id]
            entry.update(status="fired", reason=finding.reason, evidence=list(finding.evidence))
            if rule.id in replaced_by:
                entry["replaced_by"] = replaced_by[rule.id]
            entry["decided"] = rule.id in result.rules
            window = screener.window_of(rule, finding)
            if rule.priority is not None and window is not None:
                kinds = finding.answered_by
                tests = answering_tests(record, as_of, screener.bands, mma_limit, kinds).tests
                what = " or ".join(METABOLITES.get(k, k) for k in kinds) + " result" if kinds else "B12 test"
                entry["figures"] = entry["figures"] + [window_figure(tests, as_of, window, what)]
        else:
            entry["status"] = "not fired"
            entry["figures"] = entry["figures"] or [f"not met: {entry['title']}"]  # the rule noted no figure
        rules.append(entry)
    step = screener.decide(record, as_of, screener.triggered(findings)).step
    figures = {"MOD-TX-IM": therapy_at(record, as_of, screener.settings).order_figures(
        as_of, screener.settings["parenteral_order_months"]),
        "MOD-LOW": low_figures(record, as_of, screener.settings, screener.bands)}
    modifiers = [{"id": m.id, "step": m.step, "effect": m.effect, "applied": m.id in result.modifiers,
                  "figures": figures.get(m.id, [])} for m in screener.modifiers]
    return {
        "patient": result.patient, "as_of": as_of.isoformat(), "profile": result.profile,
        "ruleset_version": result.ruleset_version, "outcome": result.outcome, "priority": result.priority,
        "decided_at": {"step": step, "what": STEPS[step]}, "rules": rules, "modifiers": modifiers,
        "notes": list(result.notes), "evidence": list(result.evidence),
    }


def render(explanation: dict[str, Any]) -> str:
    """The explanation as text for a clinician."""
    lines = [f"{explanation['patient']} at {explanation['as_of']} ({explanation['profile']} profile): "
             f"{explanation['outcome']}" + (f", {explanation['priority']} priority" if explanation["priority"] else ""),
             f"decided at step {explanation['decided_at']['step']}: {explanation['decided_at']['what']}", "rules:"]
    for rule in explanation["rules"]:
        extra = f": {rule['reason']}" if rule.get("reason") else f": {rule['error']}" if rule.get("error") else ""
        if rule.get("replaced_by"):
            extra += f" (replaced by {rule['replaced_by']})"
        lines.append(f"  {rule['id']:<10} {rule['status']}{extra}")
        lines.extend(f"  {'':<10}   {figure}" for figure in rule["figures"])
    lines.append("modifiers:")
    for mod in explanation["modifiers"]:
        lines.append(f"  {'applied    ' if mod['applied'] else 'not applied'} {mod['id']:<15} (step {mod['step']}) "
                     f"{mod['effect']}")
        lines.extend(f"  {'':<27}   {figure}" for figure in mod.get("figures", []))
    lines.extend(f"note: {note}" for note in explanation["notes"])
    lines.append("evidence: " + (", ".join(explanation["evidence"]) or "none"))
    return "\n".join(lines)
