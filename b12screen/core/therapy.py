"""B12 therapy (docs/reference/clinical-rules.md section 1): parenteral, high-dose oral, low-dose oral."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .dates import months
from .facts import MedicationUse
from .record import PatientRecord

B12_SETS = ("b12-parenteral", "b12-ingredient", "b12-oral", "multivitamin")
_INJECTION_WORDS = ("inject", "intramuscular", "subcutaneous", "parenteral", "ampoule", "vial", " im ", "i.m.",
                    "deep im")


@dataclass
class Therapy:
    """The patient's B12 therapy at the as-of date, as evidence references per kind."""

    parenteral: list[str] = field(default_factory=list)
    high_oral: list[str] = field(default_factory=list)
    low_oral: list[str] = field(default_factory=list)
    starts: list[tuple[date, str]] = field(default_factory=list)
    #: Active parenteral orders/statements authored or started before ``parenteral_order_months`` (they do not
    #: suppress).
    stale: list[tuple[date | None, str]] = field(default_factory=list)
    #: Active parenteral orders/statements inside that window (they count as therapy), with their dates.
    current_orders: list[tuple[date, str]] = field(default_factory=list)

    def stale_notes(self) -> list[str]:
        """What the clinician should confirm about each stale injection order (docs/reference/clinical-rules.md 6.6)."""
        return [f"An active B12 injection order from {when.isoformat() if when else 'an unknown date'} is on "
                "file: confirm that treatment is current" for when, _ in sorted(self.stale, key=_oldest_first)]

    def order_figures(self, as_of: date, order_months: float) -> list[str]:
        """Each active injection order against the order window, in words (for ``b12screen explain``)."""
        span = f"{order_months:g}-month order window (from {(as_of - months(order_months)).isoformat()})"
        inside = [f"injection order {ref} from {when.isoformat()}: inside the {span}"
                  for when, ref in sorted(self.current_orders)]
        outside = [f"injection order {ref} from {when.isoformat() if when else 'an unknown date'}: outside the {span}"
                   for when, ref in sorted(self.stale, key=_oldest_first)]
        return inside + outside

    def any_after(self, when: date) -> list[str]:
        """Therapy started or given on or after ``when``."""
        return [ref for start, ref in self.starts if start >= when]


def _oldest_first(item: tuple[date | None, str]) -> tuple[date, str]:
    return item[0] or date.min, item[1]


#: MedicationRequest/Statement kinds whose date is when the order was written or the use began.
ORDER_TYPES = frozenset({"MedicationRequest", "MedicationStatement"})


def is_parenteral(use: MedicationUse) -> bool:
    if "b12-parenteral" in use.concepts:
        return True
    if "b12-ingredient" not in use.concepts:
        return False
    route = f" {use.route} "
    return any(word in route for word in _INJECTION_WORDS)


def b12_therapy(record: PatientRecord, as_of: date, parenteral_months: float,
                high_dose_ug: float, order_months: float) -> Therapy:
    """B12 therapy at ``as_of``. A parenteral order or statement counts only when authored or started within
    ``order_months`` (an older one still "active" is reported in ``stale``); an administration or dispense
    counts when active or given within ``parenteral_months``."""
    therapy = Therapy()
    recent = as_of - months(parenteral_months)
    order_since = as_of - months(order_months)
    for use in record.uses(B12_SETS, as_of):
        active = record.is_active(use, as_of)
        when = use.end or use.start
        if use.start is not None:
            therapy.starts.append((use.start, use.ref))
        if is_parenteral(use):
            if active and use.resource_type in ORDER_TYPES and (use.start is None or use.start < order_since):
                therapy.stale.append((use.start, use.ref))
            elif active or (when is not None and when >= recent):
                therapy.parenteral.append(use.ref)
                if active and use.resource_type in ORDER_TYPES and use.start is not None:
                    therapy.current_orders.append((use.start, use.ref))
            continue
        if not active:
            continue
        dose_mg = record.daily_dose_mg(use, "b12-ingredient") if use.concepts & {"b12-ingredient", "b12-oral"} else None
        if dose_mg is None and "b12-oral" in use.concepts:
            dose_mg = record.daily_dose_mg(use, "b12-oral")
        if dose_mg is not None and dose_mg * 1000 >= high_dose_ug:
            therapy.high_oral.append(use.ref)
        else:
            therapy.low_oral.append(use.ref)
    return therapy


def therapy_at(record: PatientRecord, as_of: date, settings: Mapping[str, Any]) -> Therapy:
    """B12 therapy at ``as_of`` with the windows and threshold of the screening ``settings``
    (``parenteral_months``, ``high_dose_oral_ug``, ``parenteral_order_months``)."""
    return b12_therapy(record, as_of, settings["parenteral_months"], settings["high_dose_oral_ug"],
                       settings["parenteral_order_months"])
