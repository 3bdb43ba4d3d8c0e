"""Cards (CDS Hooks 2.0) from screening results: one card per flagged result, never a "no risk" card.

Every optional field without a value is omitted (the spec forbids ``null``, ``""``, ``[]`` and ``{}``);
:func:`prune` enforces it on whole responses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import date
from typing import Any

from .._version import __version__
from ..core.display import DECIMALS, measured
from ..core.model import Rule
from ..core.outcome import (
    DEFICIENCY_WITHOUT_TREATMENT,
    OUTCOME_DISPLAY,
    SUGGEST_MMA,
    UNACTIONED_LOW_B12,
    ScreeningResult,
    outcome_display,
)
from ..core.record import PatientRecord
from .flag import (
    BASE,
    OUTCOME_SYSTEM,
    distinct_reasons,
    flag_dict,
    flag_identifier,
    latest_b12_text,
    results_text,
    test_name,
    unactioned_head,
    with_article,
)

OVERRIDE_SYSTEM = f"{BASE}/CodeSystem/override-reason"
OVERRIDE_REASONS = (
    ("already-tested", "Already tested elsewhere"),
    ("on-b12-therapy", "Already on B12 therapy"),
    ("patient-declined", "Patient declined"),
    ("not-clinically-relevant", "Not clinically relevant"),
)
#: Stable namespace for card and suggestion uuids (uuid5 of hookInstance + Flag identifier).
UUID_NAMESPACE = uuid.UUID("5b0c7a52-1f3e-4c8e-9a57-b12b12b12b12")
MAX_SUMMARY = 139
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


#: What :func:`md` changes: a special character, or whitespace other than single inner spaces.
_MD_WORK = re.compile(r"[\\`*_\[\]<>|#~]|[^\S ]|  |^ | $")


def md(text: str) -> str:
    """EHR-supplied text made inert in Markdown (no links, images, HTML or emphasis)."""
    text = str(text)
    if _MD_WORK.search(text) is None:  # most titles, labels and dates: nothing to do
        return text
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


_LEAVES = frozenset({str, int, float, bool, type(None)})


def prune(value: Any) -> Any:
    """Drop ``None``, ``""``, ``[]`` and ``{}`` everywhere (recursively)."""
    kind = type(value)
    if kind is dict or (kind not in _LEAVES and isinstance(value, Mapping)):
        return _kept(value.items())
    if kind is list:
        return list(_kept(enumerate(value)).values())
    return value


def _kept(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """The pairs whose value is not empty, containers pruned; leaves are judged inline rather than by a
    call each (a card has hundreds of them)."""
    out = {}
    for k, v in pairs:
        kind = type(v)
        if kind in _LEAVES:
            if v is None or (kind is str and not v):
                continue
        elif kind is dict or kind is list or isinstance(v, Mapping):
            v = prune(v)
            if not v:
                continue
        out[k] = v
    return out


def _shorten(text: str, limit: int = MAX_SUMMARY) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def _main_rule(result: ScreeningResult, rules: Mapping[str, Rule]) -> str | None:
    def rank(rid: str) -> tuple[int, str]:
        rule = rules.get(rid)
        return (-(rule.priority.rank if rule is not None and rule.priority is not None else 0), rid)

    return min(result.rules, key=rank) if result.rules else None


def _title(result: ScreeningResult, rules: Mapping[str, Rule], rule_id: str) -> str:
    """A rule's title as the result carries it (with the parameter values in force), else as declared."""
    return result.rule_titles.get(rule_id) or rules[rule_id].title


def summary(result: ScreeningResult, rules: Mapping[str, Rule]) -> str:
    """One sentence under 140 characters naming the suggestion and the main reason."""
    if result.outcome == UNACTIONED_LOW_B12:
        return unactioned_head(result, "Low vitamin B12 result with no recorded diagnosis or treatment: please review")
    if result.outcome == DEFICIENCY_WITHOUT_TREATMENT:
        return "Vitamin B12 deficiency recorded without B12 treatment: please review"
    name = test_name(result.recommended_test or {})
    main = _main_rule(result, rules)
    # the title with the values in force ("Age 80 or over" after --set AGE-75.age=80); never a rule id
    reason = _title(result, rules, main) if main is not None and main in rules else "risk factors"
    more = len(result.rules) - 1
    extra = f" (+{more} more)" if more > 0 else ""
    if result.outcome == SUGGEST_MMA:
        head = "Consider an MMA test (last B12 indeterminate)"
    else:
        head = f"Consider {with_article(name)} test"
    return _shorten(f"{head}: {reason}{extra}")


def _evidence_index(record: PatientRecord | None, wanted: Collection[str]) -> dict[str, str]:
    """How each fact among ``wanted`` (evidence references) reads in the detail; no other fact is described."""
    index: dict[str, str] = {}
    if record is None:
        return index
    wanted = set(wanted)
    for fact in record.medications:
        if fact.ref in wanted:
            index[fact.ref] = _describe(fact.label, fact.start, fact.status)
    for c in record.conditions:
        if c.ref in wanted:
            index[c.ref] = _describe(c.label, c.onset, c.clinical_status)
    for p in record.procedures:
        if p.ref in wanted:
            index[p.ref] = _describe(p.label, p.performed, p.status)
    for o in record.observations:
        if o.ref in wanted:
            kind = next((k for k in DECIMALS if k in o.concepts), None)
            value = measured(o.value, o.unit, kind) if o.value is not None else None
            index[o.ref] = _describe(o.label, o.effective, value)
    return index


def _describe(label: str | None, when: date | None, extra: str | None) -> str:
    parts = [md(label) if label else None, when.isoformat() if when else None, md(extra) if extra else None]
    return ", ".join(p for p in parts if p)


def detail(result: ScreeningResult, rules: Mapping[str, Rule], record: PatientRecord | None,
           unavailable: list[str], incomplete: list[str], distinct: Mapping[str, str] | None = None) -> str:
    """GitHub-flavoured Markdown: reasons with their basis, evidence, test, notes and data gaps
    (``distinct``: the result's :func:`distinct_reasons`, when the caller already has them)."""
    lines = [f"**{md(outcome_display(result.outcome, result.recommended_test))}** (priority {result.priority})", ""]
    if result.rules:
        lines.append("**Why**")
        lines.append("")
        reasons = distinct_reasons(result) if distinct is None else distinct
        for rid in result.rules:  # rule ids stay in the Flag's extensions and the report (section 7 point 10)
            rule = rules.get(rid)
            title = md(_title(result, rules, rid)) if rule else "Risk factor"
            reason = reasons.get(rid)
            lines.append(f"- **{title}**" + (f": {md(reason)}" if reason else ""))
            if rule is not None and rule.basis:
                lines.append(f"  - Basis: {md(rule.basis)}")
        lines.append("")
    if result.evidence:
        index = _evidence_index(record, result.evidence)
        lines.append("**Evidence**")
        lines.append("")
        for ref in result.evidence:  # readable names with dates, not resource ids (section 7 point 10)
            lines.append(f"- {index.get(ref) or 'a record without a readable name'}")
        lines.append("")
    if not any(n.startswith("Latest B12 ") for n in result.notes):
        lines.append(f"**B12 on file:** {md(latest_b12_text(result))}.")
        lines.append("")
    if result.results:
        lines += [f"**{md(results_text(result))}.**", ""]
    test = result.recommended_test
    if test:
        lines.append(f"**Suggested test:** {md(test_name(test))} (LOINC {md(test['code'])})")
        lines.append("")
    for note in result.notes:
        lines.append(f"- {md(note)}")
    if result.notes:
        lines.append("")
    if unavailable:  # each gap and the footer a paragraph of its own (Markdown joins adjacent lines)
        lines += [f"**Not available to this screen:** {md('; '.join(unavailable))}.", ""]
    if incomplete:
        lines += [f"**Possibly incomplete:** {md('; '.join(incomplete))}.", ""]
    lines.append(f"Screened as of {result.as_of.isoformat()} by b12screen {__version__} "
                 f"(ruleset {md(result.ruleset_version)}). Decision support, not a diagnosis.")
    return "\n".join(lines).strip()


def service_request(result: ScreeningResult, patient_id: str) -> dict[str, Any] | None:
    test = result.recommended_test
    if not test:
        return None
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [dict(test)], "text": test["display"]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": f"Vitamin B12 deficiency risk (b12screen: {', '.join(result.rules)})"
                        if result.rules else "Vitamin B12 deficiency risk (b12screen)"}],
    }


def flag_resource(result: ScreeningResult, rules: Mapping[str, Rule],
                  distinct: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Flag batch mode writes (``flag_dict``, without
    re-serialising the model), without ``id``: a create must not carry one."""
    return {k: v for k, v in flag_dict(result, distinct).items() if k != "id"}


def card(result: ScreeningResult, rules: Mapping[str, Rule], *, hook_instance: str, patient_id: str,
         record: PatientRecord | None, unavailable: list[str], incomplete: list[str], source_label: str,
         source_url: str | None) -> dict[str, Any]:
    ident = flag_identifier(result)
    card_uuid = uuid.uuid5(UUID_NAMESPACE, f"{hook_instance}|{ident}")
    distinct = distinct_reasons(result)  # once for the Flag and the detail
    suggestions = []
    order = service_request(result, patient_id)
    test = result.recommended_test
    if order is not None and test:
        suggestions.append({
            "label": f"Order {test_name(test)} test (LOINC {test['code']})",
            "uuid": str(uuid.uuid5(card_uuid, "order-test")),
            "isRecommended": True,
            "actions": [{"type": "create", "description": f"Draft order: {test['display']}", "resource": order}],
        })
    suggestions.append({
        "label": "Record B12 risk flag",
        "uuid": str(uuid.uuid5(card_uuid, "record-flag")),
        "isRecommended": order is None,
        "actions": [{"type": "create", "description": "Record a Flag: vitamin B12 deficiency risk",
                     "resource": flag_resource(result, rules, distinct)}],
    })
    return prune({
        "uuid": str(card_uuid),
        "summary": summary(result, rules),
        "detail": detail(result, rules, record, unavailable, incomplete, distinct),
        "indicator": "warning" if result.priority == "high" else "info",
        "source": {
            "label": source_label,
            "url": source_url,
            "topic": {"system": OUTCOME_SYSTEM, "code": result.outcome, "display": OUTCOME_DISPLAY[result.outcome]},
        },
        "suggestions": suggestions,
        "selectionBehavior": "any",
        "overrideReasons": [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS],
    })


def system_actions(results: list[ScreeningResult], rules: Mapping[str, Rule]) -> list[dict[str, Any]]:
    """The opt-in ``auto_write_flag`` systemActions: create each Flag."""
    return [{"type": "create", "description": "Record a Flag: vitamin B12 deficiency risk",
             "resource": flag_resource(r, rules)} for r in results if r.flagged]
