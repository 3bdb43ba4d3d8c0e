"""Unit tests of :mod:`b12screen.sources.extract`: references, resource types and the fact each raw
resource becomes, with the reason when it cannot be used."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from conftest import AS_OF, metformin_request
from unit_helpers import extractor

from b12screen.core.facts import Dose, Strength
from b12screen.sources.extract import (
    check_resource_type,
    is_patient_reference,
    normalize_reference,
    patient_reference,
    resource_ref,
)
from b12screen.sources.models import ResourceProblem
from b12screen.testing import (
    ICD10CM,
    SNOMED,
    make_condition,
    make_medication_request,
    make_observation,
    make_patient,
    make_procedure,
    screen_resources,
)

VEGAN = {"coding": [{"system": SNOMED, "code": "24930006", "display": "Vegan"}]}


def vegan_flag(status: str = "active", **period: str) -> dict[str, Any]:
    return {"resourceType": "Flag", "id": "fl", "status": status, "code": VEGAN,
            "subject": {"reference": "Patient/p1"}, "period": period}


def vegan_encounter(**period: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "enc", "status": "finished", "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"}, "period": period,
            "hospitalization": {"dietPreference": [VEGAN]}}


# -- Flag and Encounter periods --------------------------------------------------------------------


def test_a_flags_period_dates_its_fact() -> None:
    fact = extractor().extract(vegan_flag("inactive", start="2019-05-01", end="2022-01-01"), "Flag/fl", {})
    assert fact is not None and (fact.onset, fact.abatement) == (date(2019, 5, 1), date(2022, 1, 1))
    assert fact.clinical_status == "inactive" and fact.concepts == {"vegan-diet"}


def test_an_encounters_period_dates_its_diet_preference() -> None:
    fact = extractor().extract(vegan_encounter(start="2026-02-10", end="2026-02-14"), "Encounter/enc", {})
    assert fact is not None and (fact.onset, fact.abatement, fact.label) == (date(2026, 2, 10), None,
                                                                             "diet preference")


def test_a_diet_recorded_after_the_as_of_date_does_not_count_then() -> None:
    for later in (vegan_flag(start="2027-06-01"), vegan_encounter(start="2027-01-02")):
        person = {"resourceType": "Patient", "id": "p1", "birthDate": "1990-01-01"}
        assert screen_resources(person, later, as_of=AS_OF)[0].outcome == "no-suggestion"
        assert screen_resources(person, later, as_of=date(2027, 7, 1))[0].rules == ["DIET-V"]


# -- references and types ----------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "normal"), [
    ("Medication/m1", "Medication/m1"),
    ("https://ehr.example/fhir/Medication/m1/_history/2", "Medication/m1"),
    ("urn:uuid:7f0c", "urn:uuid:7f0c"),
    ("#med", "#med"),
    ("Medication/" + "x" * 65, "Medication/" + "x" * 65),
])
def test_normalize_reference(reference: str, normal: str) -> None:
    assert normalize_reference(reference) == normal


def test_the_patient_of_a_resource_is_its_subject_else_its_patient() -> None:
    assert patient_reference({"subject": {"reference": "Patient/a"}, "patient": {"reference": "Patient/b"}}) == (
        "Patient/a")
    assert patient_reference({"subject": {"reference": 7}, "patient": {"reference": "Patient/b"}}) == "Patient/b"
    assert patient_reference({"subject": "Patient/a"}) is None
    assert is_patient_reference("urn:uuid:x") and is_patient_reference("https://h/Patient/a")
    assert not is_patient_reference("Group/a") and not is_patient_reference("Patient/" + "x" * 65)


def test_resource_ref_is_type_and_id_else_the_full_url() -> None:
    assert resource_ref({"resourceType": "Condition", "id": "c1"}, "urn:uuid:u") == "Condition/c1"
    assert resource_ref({"resourceType": "Condition", "id": ""}, "urn:uuid:u") == "urn:uuid:u"
    assert resource_ref({"resourceType": "Condition"}, "") is None


@pytest.mark.parametrize(("value", "reason"), [
    ([1], "not a FHIR resource (a JSON list, expected an object)"),
    ("Patient", "not a FHIR resource (a JSON str, expected an object)"),
    ({"id": "x"}, "not a FHIR resource (no resourceType)"),
    ({"resourceType": ""}, "not a FHIR resource (no resourceType)"),
    ({"resourceType": 5}, "not a FHIR resource (no resourceType)"),
    ({"resourceType": "Patients"}, "unknown resourceType 'Patients'"),
    ({"resourceType": "X" * 100}, f"unknown resourceType {'X' * 60!r}"),
])
def test_what_is_not_an_r4_resource_is_refused_with_the_reason(value: Any, reason: str) -> None:
    with pytest.raises(ResourceProblem) as caught:
        check_resource_type(value)
    assert str(caught.value) == reason


def test_every_r4_type_is_accepted() -> None:
    assert check_resource_type({"resourceType": "Immunization"}) == "Immunization"


# -- facts ---------------------------------------------------------------------------------------------


def extract(resource: dict[str, Any], validate: bool = False, pool: dict[str, Any] | None = None) -> Any:
    return extractor(validate).extract(resource, f"{resource['resourceType']}/{resource.get('id')}", pool or {})


def test_a_patients_birth_gender_and_death() -> None:
    fact = extract(make_patient("p1", "1960", gender="male", deceasedDateTime="2026-03-04T10:00:00+01:00"))
    assert (fact.birth_date, fact.gender, fact.deceased, fact.deceased_date) == (
        date(1960, 1, 1), "male", True, date(2026, 3, 4))
    assert extract(make_patient("p1", deceasedBoolean=True)).deceased
    assert not extract(make_patient("p1", deceasedBoolean=False)).deceased


def test_a_request_with_its_dose_strength_and_route() -> None:
    request = metformin_request("m1", "p1", "2024-02-03", dosageInstruction=[{
        "timing": {"code": {"coding": [{"code": "BID"}]}}, "route": {"text": "Oral"},
        "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}]}])
    fact = extract(request)
    assert (fact.resource_type, fact.status, fact.start, fact.end) == ("MedicationRequest", "active",
                                                                      date(2024, 2, 3), None)
    assert fact.concepts == {"metformin"}
    assert fact.doses == (Dose(2.0, "tablet", 2.0),)
    assert fact.strengths == (Strength("metformin", 500.0, "mg"),)
    assert fact.route.endswith(" oral") and fact.label == "metformin hydrochloride 500 MG Oral Tablet"


def test_a_request_without_authored_on_starts_with_its_validity_period() -> None:
    request = metformin_request("m1", "p1", "", dispenseRequest={"validityPeriod": {"start": "2023-05-06"}})
    del request["authoredOn"]
    assert extract(request).start == date(2023, 5, 6)


def test_a_dispense_a_statement_and_an_administration_are_dated_each_their_way() -> None:
    code = metformin_request("x", "p1", "")["medicationCodeableConcept"]
    base = {"medicationCodeableConcept": code, "subject": {"reference": "Patient/p1"}, "status": "completed"}
    dispense = extract({"resourceType": "MedicationDispense", "id": "d", **base, "whenPrepared": "2025-01-01",
                        "whenHandedOver": "2025-01-03", "daysSupply": {"value": 90}})
    assert (dispense.start, dispense.supply_days) == (date(2025, 1, 3), 90.0)
    statement = extract({"resourceType": "MedicationStatement", "id": "s", **base,
                         "effectivePeriod": {"start": "2020-01-01", "end": "2021-01-01"}})
    assert (statement.start, statement.end, statement.period) == (date(2020, 1, 1), date(2021, 1, 1), True)
    given = extract({"resourceType": "MedicationAdministration", "id": "a", **base,
                     "effectiveDateTime": "2025-02-02", "dosage": {"dose": {"value": 500, "unit": "mg"}}})
    assert (given.start, given.period, given.doses) == (date(2025, 2, 2), False, (Dose(500.0, "mg", None),))


def test_a_drug_no_value_set_names_gives_no_fact() -> None:
    assert extract(make_medication_request("198211")) is None  # simvastatin


def test_a_medication_reference_resolves_contained_pooled_or_by_its_display() -> None:
    medication = {"resourceType": "Medication", "id": "met", "code": metformin_request("x", "p", "")[
        "medicationCodeableConcept"]}
    base = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p1"}}
    contained = extract({**base, "contained": [medication], "medicationReference": {"reference": "#met"}})
    pooled = extract({**base, "medicationReference": {"reference": "https://h/fhir/Medication/met"}},
                     pool={"Medication/met": medication})
    by_display = extract({**base, "medicationReference": {"reference": "Medication/gone", "display": "Metformin"}})
    assert contained.concepts == pooled.concepts == by_display.concepts == {"metformin"}
    assert contained.strengths == (Strength("metformin", 500.0, "mg"),)
    with pytest.raises(ResourceProblem, match="medicationReference 'Medication/gone' does not resolve to a Medication"):
        extract({**base, "medicationReference": {"reference": "Medication/gone"}})


def test_a_condition_with_statuses_onset_and_abatement() -> None:
    fact = extract(make_condition("E53.8", ICD10CM, clinical_status="resolved", onset="2020-02-02",
                                  abatementDateTime="2021-03-03",
                                  verificationStatus={"coding": [{"code": "confirmed"}]}))
    assert (fact.clinical_status, fact.verification_status, fact.onset, fact.abatement) == (
        "resolved", "confirmed", date(2020, 2, 2), date(2021, 3, 3))
    assert fact.concepts == {"b12-deficiency-dx"}
    recorded = extract(make_condition("E53.8", ICD10CM, recordedDate="2019-09-09"))
    assert recorded.onset == date(2019, 9, 9)
    assert extract(make_condition("J45", ICD10CM)) is None


def test_coded_atrophic_gastritis_is_a_diagnosis_only_when_its_text_says_autoimmune() -> None:
    plain = make_condition("84568007", display="Atrophic gastritis")
    autoimmune = extract({**plain, "code": {**plain["code"], "text": "Autoimmune atrophic gastritis"}})
    plain = extract(plain)
    assert autoimmune.concepts == {"atrophic-gastritis", "b12-deficiency-dx"}
    assert plain.concepts == {"atrophic-gastritis"}


def test_flag_statuses_read_as_condition_statuses() -> None:
    assert extract(vegan_flag("entered-in-error")).verification_status == "entered-in-error"
    assert extract(vegan_flag("active")).clinical_status == "active"
    assert extract({**vegan_flag(), "code": {"text": "allergy"}}) is None


def test_a_relatives_pernicious_anaemia_is_a_family_history() -> None:
    history = {"resourceType": "FamilyMemberHistory", "id": "f", "status": "completed",
               "patient": {"reference": "Patient/p1"}, "relationship": {"text": "mother"}, "date": "2020-05-01",
               "condition": [{"code": {"text": "asthma"}}, {"code": {"text": "pernicious anaemia"}}]}
    fact = extract(history)
    assert (fact.concepts, fact.onset, fact.label) == ({"family-history-b12"}, date(2020, 5, 1),
                                                       "family history of pernicious anaemia")
    assert extract({**history, "condition": [{"code": {"text": "asthma"}}]}) is None


def test_an_encounter_without_a_known_diet_gives_no_fact() -> None:
    assert extract({**vegan_encounter(), "hospitalization": {}}) is None
    assert extract({**vegan_encounter(), "hospitalization": {"dietPreference": [{"text": "halal"}]}}) is None


def test_a_procedure_is_dated_by_its_performed_period() -> None:
    fact = extract(make_procedure("43775", "http://www.ama-assn.org/go/cpt",
                                  performedPeriod={"start": "2018-04-04", "end": "2018-04-05"}))
    assert fact is not None and (fact.performed, fact.status) == (date(2018, 4, 4), "completed")


def test_an_observation_with_its_value_unit_comparator_interpretation_and_range() -> None:
    fact = extract(make_observation("2132-9", effective="2026-01-02T08:00:00Z", value=150, unit="pg/mL",
                                    interpretation=[{"coding": [{"code": "L"}], "text": "Low"}],
                                    referenceRange=[{"low": {"value": 200}, "high": {"value": 900}},
                                                    {"low": {"value": 1}}]))
    assert (fact.concepts, fact.effective, fact.value, fact.unit) == ({"b12-total"}, date(2026, 1, 2), 150.0, "pg/mL")
    assert (fact.interpretation, fact.ref_low, fact.ref_high) == ({"L", "low"}, 200.0, 900.0)
    below = extract(make_observation("2132-9", value=100, issued="2026-02-03T00:00:00Z",
                                     valueQuantity={"value": 100, "comparator": "<", "unit": "pg/mL"}))
    assert (below.comparator, below.unit, below.effective) == ("<", "pg/mL", date(2026, 2, 3))


def test_an_observation_matched_by_its_value_only() -> None:
    fact = extract(make_observation("x", "http://example.org", valueCodeableConcept=VEGAN))
    assert (fact.concepts, fact.value_concepts) == (frozenset(), {"vegan-diet"})
    assert extract(make_observation("x", "http://example.org", value=1)) is None


def test_an_unexpected_shape_is_refused_naming_the_field_the_model_rejects() -> None:
    with pytest.raises(ResourceProblem, match=r"invalid Observation: valueQuantity\.value"):
        extract(make_observation("2132-9", valueQuantity={"value": "low"}))
    with pytest.raises(ResourceProblem, match=r"invalid MedicationDispense: daysSupply\.value"):
        extract({"resourceType": "MedicationDispense", "id": "d", "status": "completed",
                 "medicationCodeableConcept": metformin_request("x", "p", "")["medicationCodeableConcept"],
                 "daysSupply": {"value": "ninety"}})


def test_validation_applies_to_resources_a_rule_can_use_only() -> None:
    invalid = make_condition("E53.8", ICD10CM, onsetString=5)
    assert extract(invalid) is not None
    with pytest.raises(ResourceProblem, match=r"invalid Condition: onsetString"):
        extract(invalid, validate=True)
    assert extract(make_condition("J45", ICD10CM, onsetString=5), validate=True) is None
