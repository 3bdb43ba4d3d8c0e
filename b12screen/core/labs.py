"""Laboratory logic: B12 result bands with unit conversion, haemoglobin and MCV signs, eGFR."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import Enum

from .dates import months
from .display import measured, number, unit_kind
from .facts import ObservationFact
from .record import PatientRecord

PMOL_PER_NG = 0.738  # 1 pg/mL = 1 ng/L = 0.738 pmol/L (cobalamin)
LOW_INTERPRETATIONS = frozenset({"L", "LL", "low", "critical low", "<"})
NORMAL_INTERPRETATIONS = frozenset({"N", "normal", "H", "HH", "high"})

_MASS_UNITS = {"pg/ml": 1.0, "ng/l": 1.0, "ng/ml": 1000.0, "pg/l": 0.001}
_MOLAR_UNITS = {"pmol/l": 1.0, "nmol/l": 1000.0, "pmol/ml": 1000.0}


class Band(Enum):
    DEFICIENT = "deficient"
    INDETERMINATE = "indeterminate"
    NORMAL = "normal"


@dataclass(frozen=True)
class B12Result:
    ref: str
    when: date
    band: Band
    kind: str  # "b12-total" or "b12-active"
    text: str
    value: float | None = None
    unit: str | None = None

    def report(self) -> dict[str, object]:
        """The report entry's ``latest_b12``: value, unit, date and band."""
        return {"value": self.value, "unit": self.unit, "date": self.when.isoformat(), "band": self.band.value}


@dataclass(frozen=True)
class Bands:
    """Band limits (docs/reference/clinical-rules.md section 1), configurable through settings."""

    total_deficient_ng_l: float = 180.0
    total_normal_ng_l: float = 350.0
    active_deficient_pmol_l: float = 25.0
    active_normal_pmol_l: float = 70.0


def _unit(unit: str | None) -> str:
    return (unit or "").strip().lower().replace("µ", "u")


def total_b12_ng_l(value: float, unit: str | None) -> float | None:
    """A total B12 value in ng/L (= pg/mL); pmol/L converted; None for an unknown unit."""
    u = _unit(unit)
    if u in _MASS_UNITS:
        return value * _MASS_UNITS[u]
    if u in _MOLAR_UNITS:
        return value * _MOLAR_UNITS[u] / PMOL_PER_NG
    return None


def active_b12_pmol_l(value: float, unit: str | None) -> float | None:
    u = _unit(unit)
    if u in _MOLAR_UNITS:
        return value * _MOLAR_UNITS[u]
    if u in _MASS_UNITS:
        return value * _MASS_UNITS[u] * PMOL_PER_NG
    return None


def _band_from_number(value: float, low: float, high: float, comparator: str | None) -> Band:
    if value < low or (comparator in ("<", "<=") and value <= low):
        return Band.DEFICIENT
    if value > high or (comparator in (">", ">=") and value >= high):
        return Band.NORMAL
    return Band.INDETERMINATE


def band_of(obs: ObservationFact, kind: str, bands: Bands = Bands()) -> Band | None:
    """The band of one total/active B12 result: number with units first, then the reference range,
    then the interpretation code."""
    if obs.value is not None:
        if kind == "b12-total":
            value = total_b12_ng_l(obs.value, obs.unit)
            if value is None and not obs.unit:
                value = obs.value  # 2132-9 is reported in pg/mL (= ng/L)
            limits = (bands.total_deficient_ng_l, bands.total_normal_ng_l)
        else:
            value = active_b12_pmol_l(obs.value, obs.unit)
            if value is None and not obs.unit:
                value = obs.value
            limits = (bands.active_deficient_pmol_l, bands.active_normal_pmol_l)
        if value is not None:
            return _band_from_number(value, *limits, obs.comparator)
        if obs.ref_low is not None and obs.value < obs.ref_low:
            return Band.DEFICIENT
        if obs.ref_low is not None:
            return Band.INDETERMINATE if obs.ref_high is None or obs.value <= obs.ref_high else Band.NORMAL
    if obs.interpretation & LOW_INTERPRETATIONS:
        return Band.DEFICIENT
    if obs.interpretation & NORMAL_INTERPRETATIONS:
        return Band.NORMAL
    return None


def b12_results(record: PatientRecord, as_of: date, bands: Bands = Bands()) -> list[B12Result]:
    """Every dated total or active B12 result with a band, up to ``as_of``, oldest first."""
    found: list[B12Result] = []
    for kind in ("b12-total", "b12-active"):
        for obs in record.observations_in((kind,), as_of):
            if obs.effective is None:
                continue
            band = band_of(obs, kind, bands)
            if band is None:
                continue
            shown = measured(obs.value, obs.unit, kind) if obs.value is not None else "low"
            found.append(B12Result(obs.ref, obs.effective, band, kind, shown, obs.value, obs.unit))
    return sorted(found, key=lambda r: (r.when, r.ref))


def latest_b12(record: PatientRecord, as_of: date, within_months: float | None = 12,
               bands: Bands = Bands()) -> B12Result | None:
    """The latest total or active B12 result with a band, dated within ``within_months`` (None: any date)."""
    since = date.min if within_months is None else as_of - months(within_months)
    results = [r for r in b12_results(record, as_of, bands) if r.when >= since]
    return results[-1] if results else None


def mma_after(record: PatientRecord, when: date, as_of: date) -> list[str]:
    """MMA results dated on or after ``when``."""
    return [o.ref for o in record.observations_in(("mma",), as_of) if o.effective and o.effective >= when]


_UMOL_UNITS = {"umol/l": 1.0, "nmol/l": 0.001, "nmol/ml": 1.0, "mmol/l": 1000.0}
#: The value sets of the metabolite tests, by name (MMA is a B12 status test; homocysteine a follow-up).
METABOLITES = {"mma": "MMA", "homocysteine": "homocysteine"}


def umol_l(value: float, unit: str | None) -> float | None:
    """A metabolite concentration in µmol/L (MMA, homocysteine); None without a unit or with another unit (a
    serum MMA of 300 nmol/L reported without its unit must not read as 300 µmol/L)."""
    u = _unit(unit)
    return value * _UMOL_UNITS[u] if u in _UMOL_UNITS else None


@dataclass(frozen=True)
class MetaboliteResult:
    """A dated MMA or homocysteine result with its value in µmol/L (None when unreadable)."""

    ref: str
    when: date
    kind: str  # "mma" or "homocysteine"
    umol_l: float | None

    def shown(self) -> str:
        """"MMA 0.62 µmol/L" (two decimals, docs/reference/clinical-rules.md 7.10)."""
        value = "no value" if self.umol_l is None else f"{self.umol_l:.2f} µmol/L"
        name = METABOLITES[self.kind]
        return f"{name[:1].upper()}{name[1:]} {value}"

    def text(self) -> str:
        """"MMA 0.62 µmol/L on 2026-05-01"."""
        return f"{self.shown()} on {self.when.isoformat()}"

    def raised(self, limit: float) -> bool:
        return self.umol_l is not None and self.umol_l > limit


def metabolites(record: PatientRecord, as_of: date, kinds: tuple[str, ...] = ("mma", "homocysteine"),
                ) -> list[MetaboliteResult]:
    """Dated MMA / homocysteine results up to ``as_of``, oldest first."""
    found = []
    for kind in kinds:
        for obs in record.observations_in((kind,), as_of):
            if obs.effective is None:
                continue
            value = umol_l(obs.value, obs.unit) if obs.value is not None else None
            found.append(MetaboliteResult(obs.ref, obs.effective, kind, value))
    return sorted(found, key=lambda m: (m.when, m.ref))


def _g_dl(value: float, unit: str | None) -> float | None:
    u = _unit(unit)
    if u in ("g/dl", "g/100ml"):
        return value
    if u == "g/l":
        return value / 10
    if u == "mmol/l":
        return value * 1.611
    return None


#: WHO haemoglobin limits in g/dL when a result carries no reference range (docs/reference/clinical-rules.md 6.5).
WHO_HB_G_DL = {"male": 13.0, "other": 12.0, "pregnant": 11.0}


@dataclass(frozen=True)
class LabSign:
    """A lab result that counts as a sign, with the figures it was judged on."""

    ref: str
    when: date
    text: str  # e.g. "haemoglobin 12.9 g/dL on 2020-12-05, below 13.0"
    kind: str = ""  # "haemoglobin" or "mcv"
    #: How far a haemoglobin is below its limit in g/dL (None: unknown, e.g. flagged low without a number).
    below_by_g_dl: float | None = None


def _judgeable(obs: ObservationFact, since: date) -> bool:
    return obs.effective is not None and obs.effective >= since and (obs.value is not None or bool(obs.interpretation))


def _latest(observations: list[ObservationFact], since: date) -> ObservationFact | None:
    found = [o for o in observations if _judgeable(o, since)]
    return max(found, key=lambda o: (o.effective, o.ref)) if found else None


def _shown(value: float, unit: str | None, kind: str = "haemoglobin", limit: float | None = None) -> str:
    return measured(value, unit, kind, limit)


def hb_limit(gender: str | None, pregnant: bool) -> float:
    """The WHO limit (g/dL) used when a haemoglobin result has no reference range."""
    if pregnant:
        return WHO_HB_G_DL["pregnant"]
    return WHO_HB_G_DL["male"] if gender == "male" else WHO_HB_G_DL["other"]


def low_haemoglobin(obs: ObservationFact, gender: str | None, pregnant: bool = False) -> str | None:
    """Why ``obs`` is a low haemoglobin ("12.9 g/dL, below 13.0"), or None when it is not low: below its
    reference range, else flagged low, else below the WHO limit."""
    if obs.value is not None and obs.ref_low is not None:
        low = number(obs.ref_low, unit_kind(obs.unit, "haemoglobin"))
        return f"{_shown(obs.value, obs.unit, limit=obs.ref_low)}, below {low}" if obs.value < obs.ref_low else None
    if obs.interpretation & LOW_INTERPRETATIONS:
        return f"{_shown(obs.value, obs.unit)}, flagged low" if obs.value is not None else "flagged low"
    if obs.value is None:
        return None
    g_dl = _g_dl(obs.value, obs.unit)
    limit = hb_limit(gender, pregnant)
    if g_dl is None or g_dl >= limit:
        return None
    if _unit(obs.unit) != "g/dl":
        return f"{_shown(obs.value, obs.unit)}, below {number(limit, 'haemoglobin')} g/dL"
    return f"{_shown(obs.value, obs.unit, limit=limit)}, below {limit:.1f}"


def hb_deficit_g_dl(obs: ObservationFact, gender: str | None, pregnant: bool = False) -> float | None:
    """How many g/dL a haemoglobin result is below its limit (its reference range, else the WHO limit);
    None when the value or a unit cannot be read in g/dL."""
    if obs.value is None:
        return None
    value = _g_dl(obs.value, obs.unit)
    if value is None:
        return None
    limit = _g_dl(obs.ref_low, obs.unit) if obs.ref_low is not None else hb_limit(gender, pregnant)
    return None if limit is None else limit - value


def high_mcv(obs: ObservationFact, limit_fl: float = 100.0) -> str | None:
    """Why ``obs`` is a raised MCV ("104 fL, above 100"), or None: above ``limit_fl`` femtolitres."""
    if obs.value is None:
        return None
    u = _unit(obs.unit)
    if u not in ("fl", "um3", "", "fl/cell"):
        return None
    if obs.value <= limit_fl:
        return None
    return f"{_shown(obs.value, obs.unit or 'fL', 'mcv', limit_fl)}, above {limit_fl:g}"


def lab_signs(record: PatientRecord, as_of: date, since: date, pregnant: bool = False) -> list[LabSign]:
    """Low haemoglobin and raised MCV, each judged on the latest result since ``since`` (a later normal
    result cancels an earlier abnormal one; docs/reference/clinical-rules.md section 6 point 5)."""
    gender = record.patient.gender if record.patient else None
    signs = []
    hb = _latest(record.observations_in(("haemoglobin",), as_of), since)
    why = low_haemoglobin(hb, gender, pregnant) if hb is not None else None
    if hb is not None and hb.effective is not None and why:
        value, _, limit = why.partition(", ")
        signs.append(LabSign(hb.ref, hb.effective, f"haemoglobin {value} on {hb.effective.isoformat()}, {limit}"
                             if limit else f"haemoglobin {value} on {hb.effective.isoformat()}", "haemoglobin",
                             hb_deficit_g_dl(hb, gender, pregnant)))
    mcv = _latest(record.observations_in(("mcv",), as_of), since)
    why = high_mcv(mcv) if mcv is not None else None
    if mcv is not None and mcv.effective is not None and why:
        value, _, limit = why.partition(", ")
        signs.append(LabSign(mcv.ref, mcv.effective, f"MCV {value} on {mcv.effective.isoformat()}, {limit}", "mcv"))
    return signs


def latest_egfr(record: PatientRecord, as_of: date) -> ObservationFact | None:
    values = [o for o in record.observations_in(("egfr",), as_of) if o.value is not None and o.effective]
    return max(values, key=lambda o: (o.effective, o.ref)) if values else None
