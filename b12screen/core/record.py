"""PatientRecord: one patient's facts, with the temporal look-ups of docs/reference/clinical-rules.md section 1."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from .dates import age_in_years
from .facts import ConditionFact, MedicationUse, ObservationFact, PatientFact, ProcedureFact

ACTIVE_STATEMENT = frozenset({"active", "intended", "on-hold"})
ACTIVE_REQUEST = frozenset({"active", "on-hold"})
PAST_USE = frozenset({"stopped", "completed", "cancelled", "not-taken", "entered-in-error", "ended"})
#: Past-use statuses of a use that was taken: with an end on or after the as-of date it was still active then.
ENDED = frozenset({"stopped", "completed", "ended"})
NOT_GIVEN = frozenset({"entered-in-error", "not-done", "cancelled", "declined", "preparation"})
COUNTABLE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
HISTORY_CLINICAL = frozenset({"inactive", "resolved", "remission"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
COUNTABLE_OBSERVATION = frozenset({"final", "amended", "corrected", "preliminary"})

#: B12 status tests (docs/reference/clinical-rules.md section 1): total B12, active B12, MMA.
B12_STATUS_TESTS = ("b12-total", "b12-active", "mma")

DEFAULT_SUPPLY_DAYS = 30.0
SUPPLY_GRACE_DAYS = 90

_MASS_TO_MG = {"mg": 1.0, "g": 1000.0, "mcg": 0.001, "ug": 0.001, "µg": 0.001, "microgram": 0.001}
_COUNT_UNITS = frozenset(
    {"", "1", "{tbl}", "{tablet}", "{tablets}", "tab", "tabs", "tablet", "tablets", "cap", "caps", "capsule",
     "capsules", "{capsule}", "{count}", "each", "ea", "unit", "units", "{unit}", "{dose}", "dose", "puff"}
)


def mass_in_mg(value: float, unit: str | None) -> float | None:
    """``value unit`` in mg, None when the unit is not a mass."""
    factor = _MASS_TO_MG.get((unit or "").strip().lower())
    return value * factor if factor is not None else None


def is_count_unit(unit: str | None) -> bool:
    return (unit or "").strip().lower() in _COUNT_UNITS


def abated_later(condition: ConditionFact, as_of: date) -> bool:
    """Resolved, inactive or in remission now, but abated after ``as_of``: still current at ``as_of``."""
    return (condition.clinical_status in HISTORY_CLINICAL and condition.abatement is not None
            and condition.abatement > as_of)


def earliest_start(uses: Iterable[MedicationUse]) -> date | None:
    """The earliest known start among ``uses``; None when none is known."""
    return min((u.start for u in uses if u.start is not None), default=None)


@dataclass
class PatientRecord:
    """Everything known about one patient, as compact facts. ``key`` is ``Patient/<id>`` (or the
    ``urn:uuid:`` the input used when no Patient resource names it)."""

    key: str
    patient: PatientFact | None = None
    medications: list[MedicationUse] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    procedures: list[ProcedureFact] = field(default_factory=list)
    observations: list[ObservationFact] = field(default_factory=list)
    resource_count: int = 0  # how many resources were filed for this patient

    def add(self, fact: object) -> None:
        """File a fact under its kind."""
        if isinstance(fact, MedicationUse):
            self.medications.append(fact)
        elif isinstance(fact, ConditionFact):
            self.conditions.append(fact)
        elif isinstance(fact, ProcedureFact):
            self.procedures.append(fact)
        elif isinstance(fact, ObservationFact):
            self.observations.append(fact)
        elif isinstance(fact, PatientFact):
            self.patient = fact

    def sort(self) -> None:
        """Put facts in a canonical order so results never depend on input order."""
        self.medications.sort(key=lambda f: (f.start or date.min, f.ref))
        self.conditions.sort(key=lambda f: (f.onset or date.min, f.ref))
        self.procedures.sort(key=lambda f: (f.performed or date.min, f.ref))
        self.observations.sort(key=lambda f: (f.effective or date.min, f.ref))

    # -- demographics -----------------------------------------------------------------------

    def age(self, as_of: date) -> int | None:
        """Whole years at ``as_of``; None without a birthDate."""
        if self.patient is None or self.patient.birth_date is None:
            return None
        return age_in_years(self.patient.birth_date, as_of)

    def is_deceased(self, as_of: date) -> bool:
        p = self.patient
        if p is None or not p.deceased:
            return False
        return p.deceased_date is None or p.deceased_date <= as_of

    # -- medications ------------------------------------------------------------------------

    def uses(self, concepts: Iterable[str], as_of: date) -> list[MedicationUse]:
        """Uses of any of ``concepts`` known at ``as_of`` (not entered in error, not dated later)."""
        wanted = frozenset(concepts)
        return [
            u for u in self.medications
            if u.concepts & wanted
            and u.status != "entered-in-error"
            and not (u.resource_type in ("MedicationDispense", "MedicationAdministration") and u.status in NOT_GIVEN)
            and (u.start is None or u.start <= as_of)
        ]

    @staticmethod
    def is_active(use: MedicationUse, as_of: date) -> bool:
        """Active at ``as_of`` per docs/reference/clinical-rules.md section 1."""
        status = use.status
        if use.resource_type == "MedicationStatement":
            if status in PAST_USE and not (status in ENDED and use.end is not None and use.end >= as_of):
                return False  # past use, unless its period shows it ran to the as-of date (ended later)
            if use.end is not None and use.end < as_of:
                return False
            if status in ACTIVE_STATEMENT:
                return True
            # no active status: only an effective period that covers the date makes it active
            return use.period and use.start is not None and use.start <= as_of
        if use.resource_type == "MedicationRequest":
            return status in ACTIVE_REQUEST
        # Dispense / Administration: the supply reaches to within 90 days of the as-of date.
        given = use.end or use.start
        if given is None or given > as_of:
            return False
        supply_end = given + timedelta(days=use.supply_days or DEFAULT_SUPPLY_DAYS)
        return supply_end >= as_of - timedelta(days=SUPPLY_GRACE_DAYS)

    def active_uses(self, concepts: Iterable[str], as_of: date) -> list[MedicationUse]:
        return [u for u in self.uses(concepts, as_of) if self.is_active(u, as_of)]

    def exposure_start(self, concepts: Iterable[str], as_of: date) -> date | None:
        """Earliest start among all uses (past and present) of a class that is active now."""
        uses = self.uses(concepts, as_of)
        return earliest_start(uses) if any(self.is_active(u, as_of) for u in uses) else None

    @staticmethod
    def daily_dose_mg(use: MedicationUse, concept: str) -> float | None:
        """Daily dose of one ingredient in mg; None when any part is missing."""
        if not use.doses:
            return None
        total = 0.0
        for dose in use.doses:
            if dose.value is None or dose.per_day is None:
                return None
            per_admin = mass_in_mg(dose.value, dose.unit)
            if per_admin is None:
                if not is_count_unit(dose.unit):
                    return None
                strength = next((s for s in use.strengths if s.concept == concept), None)
                if strength is None:
                    return None
                per_unit = mass_in_mg(strength.value, strength.unit)
                if per_unit is None:
                    return None
                per_admin = dose.value * per_unit
            total += per_admin * dose.per_day
        return total

    # -- conditions, procedures, observations -------------------------------------------------

    def conditions_in(self, concepts: Iterable[str], as_of: date) -> list[ConditionFact]:
        """Countable Conditions (active/recurrence/relapse or no status; not refuted) recorded by ``as_of``."""
        wanted = set(concepts)
        return [
            c for c in self.conditions
            if c.concepts & wanted
            and (c.clinical_status is None or c.clinical_status in COUNTABLE_CLINICAL or abated_later(c, as_of))
            and c.verification_status not in EXCLUDED_VERIFICATION
            and (c.onset is None or c.onset <= as_of)
            and (c.abatement is None or c.abatement > as_of or c.clinical_status in COUNTABLE_CLINICAL)
        ]

    def condition_history(self, concepts: Iterable[str], as_of: date) -> list[ConditionFact]:
        """Resolved / inactive / remission Conditions (history) recorded by ``as_of``."""
        wanted = set(concepts)
        return [
            c for c in self.conditions
            if c.concepts & wanted
            and c.clinical_status in HISTORY_CLINICAL
            and not abated_later(c, as_of)
            and c.verification_status not in EXCLUDED_VERIFICATION
            and (c.onset is None or c.onset <= as_of)
        ]

    def procedures_in(self, concepts: Iterable[str], as_of: date) -> list[ProcedureFact]:
        """Countable Procedures (completed or no status) performed by ``as_of``."""
        wanted = set(concepts)
        return [
            p for p in self.procedures
            if p.concepts & wanted
            and (p.status is None or p.status == "completed")
            and (p.performed is None or p.performed <= as_of)
        ]

    def observations_in(self, concepts: Iterable[str], as_of: date, by_value: bool = False) -> list[ObservationFact]:
        """Countable Observations whose code (or value, with ``by_value``) is in ``concepts``, dated by ``as_of``."""
        wanted = set(concepts)
        return [
            o for o in self.observations
            if ((o.value_concepts if by_value else o.concepts) & wanted)
            and (o.status is None or o.status in COUNTABLE_OBSERVATION)
            and (o.effective is None or o.effective <= as_of)
        ]

    def b12_status_tests(self, as_of: date) -> list[tuple[date, str]]:
        """Dated B12 status tests (observations, or billed procedures) up to ``as_of``, oldest first."""
        tests = [(o.effective, o.ref) for o in self.observations_in(B12_STATUS_TESTS, as_of) if o.effective]
        tests += [(p.performed, p.ref) for p in self.procedures_in(B12_STATUS_TESTS, as_of) if p.performed]
        return sorted(tests)
