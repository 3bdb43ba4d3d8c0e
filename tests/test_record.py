"""Unit tests of :mod:`b12screen.core.record`: the temporal look-ups of docs/clinical-rules.md section 1 on
records built from facts (nothing read, nothing matched)."""

from __future__ import annotations

from datetime import date

import pytest
from unit_helpers import AS_OF, cond, days_before, med, obs, person, proc, record

from b12screen.core.facts import Dose, Strength
from b12screen.core.record import (
    DEFAULT_SUPPLY_DAYS,
    SUPPLY_GRACE_DAYS,
    PatientRecord,
    abated_later,
    earliest_start,
    is_count_unit,
    mass_in_mg,
)

# -- units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "unit", "mg"), [(2, "g", 2000.0), (500, "mg", 500.0), (1000, "mcg", 1.0),
                                                   (1000, "ug", 1.0), (1000, "µg", 1.0), (250, " MG ", 250.0)])
def test_mass_in_mg_converts_each_mass_unit(value: float, unit: str, mg: float) -> None:
    assert mass_in_mg(value, unit) == pytest.approx(mg)


@pytest.mark.parametrize("unit", [None, "", "mL", "tablet", "mmol"])
def test_mass_in_mg_is_none_for_what_is_not_a_mass(unit: str | None) -> None:
    assert mass_in_mg(5, unit) is None


def test_count_units_are_counted_and_masses_are_not() -> None:
    assert is_count_unit(None) and is_count_unit("{tbl}") and is_count_unit(" Tablets ")
    assert not is_count_unit("mg") and not is_count_unit("mL")


# -- demographics -----------------------------------------------------------------------------------


def test_age_turns_on_the_birthday_and_is_none_without_a_birth_date() -> None:
    born = record(patient=person(date(1960, 11, 24)))
    assert born.age(AS_OF) == 66
    assert born.age(date(2026, 11, 23)) == 65
    assert record(patient=person(None)).age(AS_OF) is None
    assert PatientRecord("Patient/x").age(AS_OF) is None


def test_a_death_counts_from_its_date_and_an_undated_death_always() -> None:
    died = record(patient=person(deceased=True, deceased_date=AS_OF))
    assert died.is_deceased(AS_OF)
    assert not died.is_deceased(days_before(1))  # nothing dated after the as-of date changes the outcome
    assert record(patient=person(deceased=True)).is_deceased(AS_OF)
    assert not record(patient=person()).is_deceased(AS_OF)
    assert not PatientRecord("Patient/x").is_deceased(AS_OF)


# -- medications --------------------------------------------------------------------------------


def test_uses_leave_out_errors_uses_not_given_and_uses_started_after_the_as_of_date() -> None:
    on_day = med("metformin", start=AS_OF, ref="MedicationRequest/on-day")
    later = med("metformin", start=days_before(-1), ref="MedicationRequest/later")
    undated = med("metformin", ref="MedicationRequest/undated")
    error = med("metformin", status="entered-in-error", start=days_before(5), ref="MedicationRequest/error")
    not_given = med("metformin", resource_type="MedicationAdministration", status="not-done", start=days_before(5),
                    ref="MedicationAdministration/a")
    other = med("ppi", start=days_before(5), ref="MedicationRequest/ppi")
    rec = record(on_day, later, undated, error, not_given, other)
    assert {u.ref for u in rec.uses(["metformin"], AS_OF)} == {"MedicationRequest/on-day", "MedicationRequest/undated"}
    assert rec.uses([], AS_OF) == []


def test_a_cancelled_request_is_a_use_but_not_an_active_one() -> None:
    rec = record(med("metformin", status="cancelled", start=days_before(5)))
    assert len(rec.uses(["metformin"], AS_OF)) == 1
    assert rec.active_uses(["metformin"], AS_OF) == []


@pytest.mark.parametrize(("status", "active"), [("active", True), ("on-hold", True), ("completed", False),
                                                ("stopped", False), (None, False)])
def test_a_request_is_active_by_its_status(status: str | None, active: bool) -> None:
    assert PatientRecord.is_active(med("x", status=status, start=days_before(4000)), AS_OF) is active


def test_a_dispense_is_active_while_its_supply_reaches_within_the_grace_period() -> None:
    """Given on day d with 30 days' supply: active while d + 30 >= as-of - 90, i.e. up to 120 days ago."""
    reach = int(DEFAULT_SUPPLY_DAYS) + SUPPLY_GRACE_DAYS
    assert reach == 120

    def dispense(days_ago: int, supply: float | None = None) -> bool:
        use = med("x", resource_type="MedicationDispense", status="completed", start=days_before(days_ago),
                  supply_days=supply)
        return PatientRecord.is_active(use, AS_OF)

    assert dispense(120) and not dispense(121)
    assert dispense(180, supply=90) and not dispense(181, supply=90)
    assert dispense(0) and not dispense(-1)  # handed over after the as-of date: not yet


def test_an_administration_counts_from_its_end() -> None:
    use = med("x", resource_type="MedicationAdministration", status="completed", start=days_before(400),
              end=days_before(120))
    assert PatientRecord.is_active(use, AS_OF)
    assert not PatientRecord.is_active(med("x", resource_type="MedicationAdministration", status="completed"), AS_OF)


def test_a_statement_is_active_until_its_end_and_a_past_use_only_when_it_ended_on_or_after_the_as_of_date() -> None:
    def statement(status: str | None, end: date | None = None, period: bool = False) -> bool:
        use = med("x", resource_type="MedicationStatement", status=status, start=days_before(300), end=end,
                  period=period)
        return bool(PatientRecord.is_active(use, AS_OF))

    assert statement("active") and statement("active", end=AS_OF)
    assert not statement("active", end=days_before(1))
    # an end comes from an effectivePeriod: a completed use whose period ran to the as-of date was current then
    assert statement("completed", end=AS_OF, period=True)
    assert not statement("completed", end=days_before(1), period=True)
    assert not statement("completed") and not statement("not-taken", end=AS_OF, period=True)
    assert statement("unknown", period=True) and not statement("unknown")


def test_exposure_starts_at_the_earliest_use_of_a_class_still_in_use() -> None:
    old = med("metformin", status="completed", start=date(2018, 3, 1), ref="MedicationRequest/old")
    current = med("metformin", start=date(2024, 1, 1), ref="MedicationRequest/new")
    assert record(old, current).exposure_start(["metformin"], AS_OF) == date(2018, 3, 1)
    assert record(old).exposure_start(["metformin"], AS_OF) is None
    assert earliest_start([med("x"), current]) == date(2024, 1, 1)
    assert earliest_start([]) is None


def test_daily_dose_adds_dosage_lines_and_converts_micrograms() -> None:
    use = med("b12-oral", doses=(Dose(500, "mcg", 2), Dose(1, "mg", 1)))
    assert PatientRecord.daily_dose_mg(use, "b12-oral") == pytest.approx(2.0)


def test_daily_dose_in_tablets_uses_the_strength_of_the_ingredient() -> None:
    strengths = (Strength("metformin", 500, "mg"), Strength("b12-ingredient", 1000, "ug"))
    use = med("metformin", doses=(Dose(2, "{tbl}", 2),), strengths=strengths)
    assert PatientRecord.daily_dose_mg(use, "metformin") == pytest.approx(2000.0)
    assert PatientRecord.daily_dose_mg(use, "b12-ingredient") == pytest.approx(4.0)


@pytest.mark.parametrize("doses", [(), (Dose(None, "mg", 1),), (Dose(500, "mg", None),), (Dose(5, "mL", 1),),
                                   (Dose(1, "tablet", 1),)])
def test_daily_dose_is_unknown_when_any_part_is_missing(doses: tuple[Dose, ...]) -> None:
    """No dose, no amount, no timing, a volume, or tablets of an unknown strength."""
    use = med("metformin", doses=doses, strengths=(Strength("other", 5, "mg"),))
    assert PatientRecord.daily_dose_mg(use, "metformin") is None


# -- conditions, procedures, observations ------------------------------------------------------------


def test_countable_conditions_by_status_verification_and_onset() -> None:
    def counted(**kw: object) -> bool:
        return bool(record(cond("dx", **kw)).conditions_in(["dx"], AS_OF))  # type: ignore[arg-type]

    assert counted() and counted(clinical=None) and counted(clinical="relapse") and counted(onset=AS_OF)
    assert not counted(onset=days_before(-1))
    assert not counted(verification="refuted") and not counted(verification="entered-in-error")
    assert counted(verification="provisional")
    assert not counted(clinical="resolved", abatement=AS_OF)
    assert counted(clinical="resolved", abatement=days_before(-1))  # resolved only after the as-of date
    assert counted(clinical="active", abatement=days_before(10))  # an active status wins over an abatement date
    assert not record(cond("other")).conditions_in(["dx"], AS_OF)


def test_condition_history_is_what_had_resolved_by_the_as_of_date() -> None:
    def history(**kw: object) -> bool:
        return bool(record(cond("dx", **kw)).condition_history(["dx"], AS_OF))  # type: ignore[arg-type]

    assert history(clinical="resolved") and history(clinical="remission", abatement=AS_OF)
    assert not history(clinical="resolved", abatement=days_before(-1))
    assert not history(clinical="active") and not history(clinical=None)
    assert not history(clinical="inactive", verification="refuted")
    assert not history(clinical="inactive", onset=days_before(-1))


def test_procedures_count_when_completed_or_without_status_by_the_as_of_date() -> None:
    def counted(**kw: object) -> bool:
        return bool(record(proc("gastrectomy", **kw)).procedures_in(["gastrectomy"], AS_OF))  # type: ignore[arg-type]

    assert counted() and counted(status=None) and counted(performed=AS_OF)
    assert not counted(performed=days_before(-1))
    assert not counted(status="in-progress") and not counted(status="not-done")


def test_observations_count_by_code_or_value_status_and_date() -> None:
    coded = obs("b12-total", effective=AS_OF, value=200)
    valued = obs("diet", value_concepts=("vegan-diet",), effective=days_before(3), ref="Observation/o2")
    rec = record(coded, valued)
    assert rec.observations_in(["b12-total"], AS_OF) == [coded]
    assert rec.observations_in(["vegan-diet"], AS_OF) == []
    assert rec.observations_in(["vegan-diet"], AS_OF, by_value=True) == [valued]
    assert rec.observations_in(["b12-total"], days_before(1)) == []
    for status in ("registered", "cancelled", "entered-in-error"):
        assert record(obs("b12-total", status=status)).observations_in(["b12-total"], AS_OF) == []
    assert record(obs("b12-total", status="preliminary")).observations_in(["b12-total"], AS_OF)


def test_b12_status_tests_are_dated_results_and_billed_procedures_oldest_first() -> None:
    rec = record(obs("b12-total", effective=days_before(10), ref="Observation/total"),
                 obs("mma", effective=days_before(400), ref="Observation/mma"),
                 obs("b12-active", ref="Observation/undated"),
                 obs("haemoglobin", effective=days_before(5), ref="Observation/hb"),
                 proc("b12-total", performed=days_before(30), ref="Procedure/billed"),
                 obs("b12-total", effective=days_before(-1), ref="Observation/later"))
    assert rec.b12_status_tests(AS_OF) == [(days_before(400), "Observation/mma"),
                                           (days_before(30), "Procedure/billed"),
                                           (days_before(10), "Observation/total")]
    assert record().b12_status_tests(AS_OF) == []


def test_abated_later_only_for_history_statuses_abated_after_the_as_of_date() -> None:
    assert abated_later(cond("dx", clinical="resolved", abatement=days_before(-1)), AS_OF)
    assert not abated_later(cond("dx", clinical="resolved", abatement=AS_OF), AS_OF)
    assert not abated_later(cond("dx", clinical="resolved"), AS_OF)
    assert not abated_later(cond("dx", clinical="active", abatement=days_before(-1)), AS_OF)


def test_facts_are_filed_by_kind_and_sorted_whatever_the_input_order() -> None:
    late = med("x", start=days_before(1), ref="MedicationRequest/b")
    early = med("x", start=days_before(9), ref="MedicationRequest/c")
    undated = med("x", ref="MedicationRequest/a")
    rec = record(late, obs("o"), early, person(ref="Patient/p9"), undated, cond("c"), proc("p"))
    assert [m.ref for m in rec.medications] == ["MedicationRequest/a", "MedicationRequest/c", "MedicationRequest/b"]
    assert rec.patient is not None and rec.patient.ref == "Patient/p9"
    assert (len(rec.conditions), len(rec.procedures), len(rec.observations)) == (1, 1, 1)
    rec.add("not a fact")
    assert len(rec.medications) == 3
