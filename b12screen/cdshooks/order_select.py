"""``order-select``: the moment a clinician picks an order, before signing.

Only the drafts named in ``context.selections`` count. A selected draft for metformin, a PPI or an H2RA
(value sets ``metformin``, ``ppi``, ``h2ra``) is what may raise a card; a selected B12 test or B12 therapy
means no card. The record is screened with the selected medication drafts as active use (as order-sign
does), and a flagged result gives one concise info card: the reason and the latest B12 result on file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from ..core.labs import latest_b12
from ..core.model import Rule
from ..core.outcome import ScreeningResult
from ..core.record import PatientRecord
from ..core.terminology import Terminology
from .orders import DraftOrders, analyse_drafts

TRIGGER_SETS = frozenset({"metformin", "ppi", "h2ra"})
_TRIGGER_NAMES = {"metformin": "metformin", "ppi": "a proton-pump inhibitor", "h2ra": "an H2-receptor antagonist"}


def _reference(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def selected_drafts(context: Mapping[str, Any], terminology: Terminology, patient_id: str,
                    as_of: date) -> tuple[DraftOrders, list[str]]:
    """The selected drafts' effect, and which trigger medicines (value set ids) they include."""
    selections = {s for s in context.get("selections") or [] if isinstance(s, str)}
    drafts_given = context.get("draftOrders")
    bundle: Mapping[str, Any] = drafts_given if isinstance(drafts_given, Mapping) else {}
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, Mapping) and isinstance(e.get("resource"),
                                                                                                 Mapping)]
    chosen = [e for e in entries if e["resource"].get("resourceType") == "Medication"
              or _reference(e["resource"]) in selections]
    drafts = analyse_drafts({**bundle, "entry": chosen}, terminology, patient_id, as_of)
    triggers: list[str] = []
    for resource in drafts.resources:
        if resource.get("resourceType") == "MedicationRequest":
            found = terminology.match_concept(resource.get("medicationCodeableConcept")) & TRIGGER_SETS
            if not found and isinstance(resource.get("medicationReference"), Mapping):
                found = terminology.match_text(resource["medicationReference"].get("display")) & TRIGGER_SETS
            triggers += sorted(found - set(triggers))
    return drafts, triggers


def concise(card: dict[str, Any], result: ScreeningResult, rules: Mapping[str, Rule], record: PatientRecord,
            triggers: list[str], as_of: date) -> dict[str, Any]:
    """The order-select version of a card: info, the reason and the latest B12 result on file."""
    picked = " and ".join(_TRIGGER_NAMES[t] for t in triggers)
    reasons = "; ".join(result.rule_titles.get(r, rules[r].title) for r in result.rules if r in rules)
    latest = latest_b12(record, as_of, within_months=1200)
    on_file = (f"Latest B12 on file: {latest.text} on {latest.when.isoformat()}." if latest is not None
               else "No B12 result on file.")
    out = dict(card)
    out["indicator"] = "info"
    out["summary"] = f"Selected {picked}: consider a vitamin B12 check"[:140]
    out["detail"] = f"Why: {reasons}.\n\n{on_file}"
    return out
