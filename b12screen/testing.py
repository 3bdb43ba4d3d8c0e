"""Helpers for testing b12screen plugins: fresh plugin managers, patient records from a few resources, and
one rule run at an as-of date.

Everything here uses a plugin manager with the built-in rules and the plugins you name, never the
installed entry points or the ``B12SCREEN_*`` environment variables, so a test sees exactly what it asks
for::

    from datetime import date
    from b12screen.testing import ICD10CM, make_condition, make_patient, run_rule
    import my_site_rules

    finding = run_rule("SITE-1", [make_patient("p1"), make_condition("K86.1", ICD10CM)],
                       date(2026, 11, 24), plugins=[my_site_rules])
    assert finding is not None and finding.evidence == ("Condition/condition-K86.1",)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from .core.config import Config
from .core.model import Finding, Rule, RuleContext
from .core.record import PatientRecord
from .core.terminology import ATC, ICD10CM, LOINC, RXNORM, SNOMED
from .errors import InputError
from .plugins import DEFAULT_PLUGINS, PluginManager, builtin_plugin_manager
from .screening import Screener, ScreeningResults, group, screen_grouped
from .sources import Entry, read_value
from .sources.validation import ALL

__all__ = [
    "ATC",
    "ICD10CM",
    "LOINC",
    "RXNORM",
    "SNOMED",
    "fresh_plugin_manager",
    "make_condition",
    "make_medication_request",
    "make_observation",
    "make_patient",
    "make_procedure",
    "make_screener",
    "record_from",
    "run_rule",
    "screen_resources",
]

_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


# -- plugin managers and screeners ---------------------------------------------------------------


def fresh_plugin_manager(*plugins: object, builtins: bool = True) -> PluginManager:
    """A new plugin manager with the built-in rules (unless ``builtins=False``) and ``plugins`` (modules
    or objects with ``@hookimpl`` functions) registered under their ``__name__`` (or class name; ``-2``,
    ``-3``... is appended when two share one)."""
    manager = builtin_plugin_manager(skip=() if builtins else DEFAULT_PLUGINS)
    for plugin in plugins:
        base = getattr(plugin, "__name__", None) or type(plugin).__name__
        name, n = base, 1
        while manager.pm.has_plugin(name):
            n += 1
            name = f"{base}-{n}"
        manager.register(plugin, name=name)
    return manager


def make_screener(*plugins: object, profile: str = "default", config: Config | None = None,
                  plugin_manager: PluginManager | None = None) -> Screener:
    """A :class:`Screener` over ``plugin_manager``, or over a fresh one with ``plugins`` registered."""
    if plugin_manager is not None and plugins:
        raise ValueError("pass either plugins or plugin_manager, not both")
    return Screener(profile=profile, config=config, plugin_manager=plugin_manager or fresh_plugin_manager(*plugins))


# -- records ----------------------------------------------------------------------------------------


def _entries(resources: Iterable[Any]) -> list[Entry | InputError]:
    return list(read_value(list(resources), "<test>"))


def record_from(*resources: Any, patient: str | None = None, plugins: Iterable[object] = (),
                screener: Screener | None = None) -> PatientRecord:
    """One patient's :class:`PatientRecord` built from resources (dicts, Bundles or lists of them), read
    with the value sets of the built-in rules plus ``plugins`` (or of ``screener``).

    With several patients in the input, ``patient`` (``"p1"`` or ``"Patient/p1"``) picks one. Any input
    problem raises ``ValueError``: a test fixture should be valid.
    """
    scr = screener or make_screener(*plugins)
    grouped = group(scr, _entries(resources), ALL)
    if grouped.errors:
        raise ValueError("input problems: " + "; ".join(str(e) for e in grouped.errors))
    records = grouped.patients
    if patient is not None:
        key = patient if patient.startswith(("Patient/", "urn:")) else f"Patient/{patient}"
        if key not in records:
            raise KeyError(f"no patient {key!r} in the input (found: {', '.join(sorted(records)) or 'none'})")
        return records[key].record()
    if len(records) != 1:
        raise ValueError(f"{len(records)} patients in the input ({', '.join(sorted(records))}); "
                         "name one with patient=")
    return next(iter(records.values())).record()


# -- running rules ----------------------------------------------------------------------------------


def _context(scr: Screener, rule: Rule, record: PatientRecord, as_of: date, findings: dict[str, Finding],
             modifiers: dict[str, list[str]], rules: Mapping[str, Rule]) -> RuleContext:
    """The context the engine gives ``rule`` (kept in step with ``Screener.run_rules`` by a test)."""
    earlier = frozenset(r.id for r in rules.values() if r.counts_for_later_rules and r.stage < rule.stage)
    return RuleContext(record=record, as_of=as_of, terminology=scr.terminology, rule=rule,
                       overrides=scr.rule_params.get(rule.id, {}), findings=findings, counted_rules=earlier,
                       modifiers=modifiers, settings=scr.settings, rules=rules)


def run_rule(rule: Rule | str, data: PatientRecord | Mapping[str, Any] | Iterable[Any], as_of: date, *,
             plugins: Iterable[object] = (), config: Config | None = None, profile: str = "default",
             plugin_manager: PluginManager | None = None, screener: Screener | None = None) -> Finding | None:
    """Evaluate one rule (a :class:`Rule` or a registered rule id) for one patient at ``as_of``.

    ``data`` is a :class:`PatientRecord` or resources as for :func:`record_from`. As in the engine, the
    enabled rules ordered before it (stage, then id) run first, so ``ctx.findings`` holds what they found.
    Unlike the engine, an exception raised by ``rule`` propagates, so a test shows its traceback.
    ``config`` sets the rule's parameters (``Config(rules={"SITE-1": {"min_years": 2}})``); pass a
    ``screener`` instead to reuse one across many calls.
    """
    scr = screener or make_screener(*plugins, profile=profile, config=config, plugin_manager=plugin_manager)
    if isinstance(rule, str):
        if rule not in scr.rules_by_id:
            raise KeyError(f"no rule {rule!r} is registered (rules: {', '.join(sorted(scr.rules_by_id))})")
        rule = scr.rules_by_id[rule]
    record = data if isinstance(data, PatientRecord) else record_from(data, screener=scr)
    rules = {**scr.rules_by_id, rule.id: rule}
    findings: dict[str, Finding] = {}
    modifiers: dict[str, list[str]] = {}
    for earlier in scr.rules:
        if (earlier.stage, earlier.id) >= (rule.stage, rule.id):
            break
        if not scr.enabled(earlier):
            continue
        try:
            found = earlier.evaluate(_context(scr, earlier, record, as_of, findings, modifiers, rules))
        except Exception:  # the engine records these as rule errors; here only ``rule`` matters
            continue
        if found is not None:
            findings[earlier.id] = found
    return rule.evaluate(_context(scr, rule, record, as_of, findings, modifiers, rules))


def screen_resources(*resources: Any, as_of: date, plugins: Iterable[object] = (), profile: str = "default",
                     config: Config | None = None, plugin_manager: PluginManager | None = None) -> ScreeningResults:
    """Screen resources (dicts, Bundles or lists of them) at ``as_of``: one result per patient, sorted by
    patient, with input problems in ``.errors`` and rule failures in each result's ``rule_errors``."""
    scr = make_screener(*plugins, profile=profile, config=config, plugin_manager=plugin_manager)
    return screen_grouped(scr, group(scr, _entries(resources)), as_of)


# -- resource builders --------------------------------------------------------------------------------


def _rid(kind: str, code: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9.-]', '-', code)}"[:64]


def _concept(code: str, system: str, display: str | None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def make_patient(pid: str = "p1", birth_date: str | None = "1960-01-01", **extra: Any) -> dict[str, Any]:
    """A Patient resource (``birth_date=None`` leaves the birthDate out)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if birth_date:
        resource["birthDate"] = birth_date
    return {**resource, **extra}


def make_condition(code: str, system: str = SNOMED, *, patient: str = "p1", onset: str | None = None,
                   display: str | None = None, clinical_status: str | None = "active", rid: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """A Condition with one coding (id ``condition-<code>`` unless ``rid``)."""
    resource: dict[str, Any] = {"resourceType": "Condition", "id": rid or _rid("condition", code),
                                "code": _concept(code, system, display), "subject": {"reference": f"Patient/{patient}"}}
    if clinical_status:
        resource["clinicalStatus"] = {"coding": [{"system": _CONDITION_CLINICAL, "code": clinical_status}]}
    if onset:
        resource["onsetDateTime"] = onset
    return {**resource, **extra}


def make_medication_request(code: str, system: str = RXNORM, *, patient: str = "p1", authored: str | None = None,
                            status: str = "active", display: str | None = None, rid: str | None = None,
                            **extra: Any) -> dict[str, Any]:
    """A MedicationRequest (intent order) for one coded drug."""
    resource: dict[str, Any] = {"resourceType": "MedicationRequest", "id": rid or _rid("medreq", code),
                                "status": status, "intent": "order",
                                "medicationCodeableConcept": _concept(code, system, display),
                                "subject": {"reference": f"Patient/{patient}"}}
    if authored:
        resource["authoredOn"] = authored
    return {**resource, **extra}


def make_observation(code: str, system: str = LOINC, *, patient: str = "p1", effective: str | None = None,
                     value: float | None = None, unit: str | None = None, display: str | None = None,
                     status: str = "final", rid: str | None = None, **extra: Any) -> dict[str, Any]:
    """An Observation with an optional ``valueQuantity`` (``value`` ``unit``, UCUM)."""
    resource: dict[str, Any] = {"resourceType": "Observation", "id": rid or _rid("obs", code), "status": status,
                                "code": _concept(code, system, display), "subject": {"reference": f"Patient/{patient}"}}
    if effective:
        resource["effectiveDateTime"] = effective
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit:
            quantity.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
        resource["valueQuantity"] = quantity
    return {**resource, **extra}


def make_procedure(code: str, system: str = SNOMED, *, patient: str = "p1", performed: str | None = None,
                   status: str = "completed", display: str | None = None, rid: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """A Procedure (status completed unless given)."""
    resource: dict[str, Any] = {"resourceType": "Procedure", "id": rid or _rid("procedure", code), "status": status,
                                "code": _concept(code, system, display), "subject": {"reference": f"Patient/{patient}"}}
    if performed:
        resource["performedDateTime"] = performed
    return {**resource, **extra}
