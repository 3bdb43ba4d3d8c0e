"""What happened after the as-of date, for ``b12screen audit``: the first B12 status test in the follow-up
window (as-of date, as-of date + N months] with its band, and whether a B12 deficiency diagnosis or B12
therapy started in that window (docs/analyst/audit.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from ..core.dates import months
from ..core.facts import ObservationFact
from ..core.labs import Band, Bands, band_of
from ..core.record import B12_STATUS_TESTS, EXCLUDED_VERIFICATION, PatientRecord

#: Methylmalonic acid above this (µmol/L) is raised, when the result carries no reference range
#: (British Society for Haematology guideline on cobalamin and folate disorders, 2014: MMA > 0.28 µmol/L).
MMA_RAISED_UMOL_L = 0.28
_RAISED = frozenset({"H", "HH", "high", "critical high", ">"})
_NOT_RAISED = frozenset({"N", "normal", "L", "LL", "low", "<"})
_MMA_UNITS = {"umol/l": 1.0, "nmol/l": 0.001, "mmol/l": 1000.0}
#: B12 therapy: a B12 injection, a B12 ingredient or an oral B12 product (a multivitamin is not therapy).
THERAPY_SETS = ("b12-parenteral", "b12-ingredient", "b12-oral")
DEFICIENCY_DX = "b12-deficiency-dx"

#: One patient's follow-up: tested, first test date (ISO) or None, its band or None, treated.
FollowUp = tuple[bool, str | None, str | None, bool]


def bands_of(settings: Mapping[str, Any]) -> Bands:
    """The B12 band limits of a screener's settings (the ones its rules use)."""
    return Bands(float(settings["total_b12_deficient_ng_l"]), float(settings["total_b12_normal_ng_l"]),
                 float(settings["active_b12_deficient_pmol_l"]), float(settings["active_b12_normal_pmol_l"]))


def window_end(as_of: date, follow_up_months: float) -> date:
    """The last day of the follow-up window (a month is the rules' 30.44 days)."""
    return as_of + months(follow_up_months)


def mma_band(obs: ObservationFact) -> Band | None:
    """A raised MMA is deficient, one not raised normal: the reference range first, then the value in
    µmol/L against :data:`MMA_RAISED_UMOL_L`, then the interpretation code; None when none tells."""
    if obs.value is not None:
        if obs.ref_high is not None:
            return Band.DEFICIENT if obs.value > obs.ref_high else Band.NORMAL
        factor = _MMA_UNITS.get((obs.unit or "").strip().lower().replace("µ", "u"))
        if factor is not None:
            return Band.DEFICIENT if obs.value * factor > MMA_RAISED_UMOL_L else Band.NORMAL
    if obs.interpretation & _RAISED:
        return Band.DEFICIENT
    if obs.interpretation & _NOT_RAISED:
        return Band.NORMAL
    return None


def _band(obs: ObservationFact, bands: Bands) -> Band | None:
    if "mma" in obs.concepts:
        return mma_band(obs)
    kind = "b12-total" if "b12-total" in obs.concepts else "b12-active"
    return band_of(obs, kind, bands)


def follow_up(record: PatientRecord, as_of: date, follow_up_months: float, bands: Bands) -> FollowUp:
    """The patient's follow-up in (``as_of``, ``as_of`` + ``follow_up_months``]: the first B12 status test
    (an Observation, or a billed Procedure, which has no band) and whether a B12 deficiency diagnosis
    (any status but refuted or entered in error) or B12 therapy started in the window."""
    end = window_end(as_of, follow_up_months)
    tests: list[tuple[date, str, Band | None]] = [
        (o.effective, o.ref, _band(o, bands)) for o in record.observations_in(B12_STATUS_TESTS, end)
        if o.effective is not None and o.effective > as_of]
    tests += [(p.performed, p.ref, None) for p in record.procedures_in(B12_STATUS_TESTS, end)
              if p.performed is not None and p.performed > as_of]
    diagnosed = any(
        DEFICIENCY_DX in c.concepts and c.verification_status not in EXCLUDED_VERIFICATION
        and c.onset is not None and as_of < c.onset <= end for c in record.conditions)
    started = any(u.start is not None and u.start > as_of for u in record.uses(THERAPY_SETS, end))
    if not tests:
        return (False, None, None, diagnosed or started)
    # the first day's banded result wins over an unbanded one (a billed test) of the same day
    when, _ref, band = min(tests, key=lambda t: (t[0], t[2] is None, t[1]))
    return (True, when.isoformat(), band.value if band else None, diagnosed or started)
