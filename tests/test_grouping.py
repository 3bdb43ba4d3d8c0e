"""Unit tests of :mod:`b12screen.sources.grouping`: patient keys, the per-input index and the grouping of
entries by patient, fed with entries built in the test."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from conftest import metformin_request, patient
from unit_helpers import extractor

from b12screen.errors import InputError
from b12screen.sources.grouping import (
    BundleIndex,
    GroupedInput,
    group_entries,
    merge_target,
    patient_key,
    patient_resource_key,
)
from b12screen.sources.models import ResourceProblem
from b12screen.sources.reader import Entry
from b12screen.sources.validation import ALL, EVIDENCE
from b12screen.testing import ICD10CM, make_condition, make_observation

LONG_ID = "x" * 65


def entries(*resources: Any, full_urls: dict[int, str] | None = None) -> list[Entry | InputError]:
    """Entries of ``resources`` from ``in.json``, located ``entry[i]`` (``full_urls`` by position)."""
    urls = full_urls or {}
    return [Entry(r, "in.json", f"entry[{i}]", urls.get(i)) for i, r in enumerate(resources)]


def grouped(*resources: Any, validate: bool = False, **kw: Any) -> GroupedInput:
    return group_entries(entries(*resources, full_urls=kw.pop("full_urls", None)), extractor(validate), **kw)


def errors(out: GroupedInput) -> list[tuple[str, str | None, str]]:
    return [(e.source, e.location, e.reason) for e in out.errors]


# -- keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "key"), [
    ("Patient/p1", "Patient/p1"),
    ("https://ehr.example/fhir/Patient/p1", "Patient/p1"),
    ("Patient/p1/_history/3", "Patient/p1"),
    ("urn:uuid:7f0c", "urn:uuid:7f0c"),
    ("Patient/" + "y" * 64, "Patient/" + "y" * 64),
    (f"Patient/{LONG_ID}", f"Patient/{LONG_ID}"),
    (f"https://ehr.example/fhir/Patient/{LONG_ID}/_history/1", f"Patient/{LONG_ID}"),
    ("Group/g1", None),
    ("Patient/", None),
    ("#contained", None),
])
def test_patient_key_is_one_rule_for_every_form_of_reference(reference: str, key: str | None) -> None:
    assert patient_key(reference) == key


def test_a_urn_joins_the_patient_of_the_same_id_only_when_that_patient_is_known() -> None:
    assert merge_target("urn:uuid:p1", {"Patient/p1"}) == "Patient/p1"
    assert merge_target("urn:uuid:p1", {"Patient/p2"}) == "urn:uuid:p1"
    assert merge_target("Patient/p1", {"Patient/p1"}) == "Patient/p1"


def test_a_patient_resource_is_keyed_by_its_id_else_its_full_url() -> None:
    assert patient_resource_key(patient("p1"), "urn:uuid:u") == "Patient/p1"
    assert patient_resource_key({"resourceType": "Patient", "id": ""}, "urn:uuid:u") == "urn:uuid:u"
    assert patient_resource_key({"resourceType": "Patient"}, None) is None


def test_the_index_pools_medications_and_maps_patient_full_urls() -> None:
    index = BundleIndex()
    medication = {"resourceType": "Medication", "id": "m1"}
    assert index.add(medication, "Medication", "urn:uuid:m") is False
    assert index.medications == {"Medication/m1": medication, "urn:uuid:m": medication}
    assert index.add(patient("p1"), "Patient", "https://ehr.example/fhir/Patient/p1") is True
    assert index.full_urls == {"https://ehr.example/fhir/Patient/p1": "Patient/p1", "Patient/p1": "Patient/p1"}
    with pytest.raises(ResourceProblem, match="Patient has neither id nor fullUrl"):
        index.add({"resourceType": "Patient"}, "Patient", None)
    assert index.add(make_condition("E53.8", ICD10CM), "Condition", None) is True


# -- grouping -----------------------------------------------------------------------------------------


def test_entries_are_grouped_by_patient_with_their_facts_in_input_order() -> None:
    out = grouped(patient("p1"), patient("p2"), metformin_request("m1", "p1", "2024-01-01"),
                  make_condition("E53.8", ICD10CM, patient="p2"), metformin_request("m2", "p1", "2020-01-01"))
    assert (out.policy, out.resources_read, out.errors) == (EVIDENCE, 5, [])
    assert sorted(out.patients) == ["Patient/p1", "Patient/p2"]
    p1 = out.patients["Patient/p1"]
    assert p1.patient is not None and p1.patient.birth_date == date(1960, 1, 1)
    assert p1.resource_count == 3
    assert [(fact.ref, where) for fact, _, where in p1.facts] == [
        ("MedicationRequest/m1", ("in.json", "entry[2]")), ("MedicationRequest/m2", ("in.json", "entry[4]"))]
    assert [m.ref for m in p1.record().medications] == ["MedicationRequest/m2", "MedicationRequest/m1"]
    assert out.newest_date() == date(2024, 1, 1)


def test_resources_no_rule_uses_are_counted_but_give_no_fact() -> None:
    immunization = {"resourceType": "Immunization", "id": "i1", "status": "completed",
                    "patient": {"reference": "Patient/p1"}}
    unmatched = make_condition("J45", ICD10CM)  # asthma: in no value set
    out = grouped(patient("p1"), immunization, unmatched)
    assert out.patients["Patient/p1"].resource_count == 3 and out.patients["Patient/p1"].facts == []
    assert out.newest_date() is None  # a birth date is not a clinical date


def test_one_bad_entry_costs_that_entry_only_naming_where_and_why() -> None:
    read_error = InputError("in.json", "line 4", "malformed JSON")
    items = [read_error, *entries(["not", "a", "resource"], {"id": "x"}, {"resourceType": "Nonsense"},
                                  make_condition("E53.8", ICD10CM, subject=None), patient("p1"),
                                  {"resourceType": "Patient"})]
    out = group_entries(items, extractor())
    assert errors(out) == [
        ("in.json", "line 4", "malformed JSON"),
        ("in.json", "entry[0]", "not a FHIR resource (a JSON list, expected an object)"),
        ("in.json", "entry[1]", "not a FHIR resource (no resourceType)"),
        ("in.json", "entry[2]", "unknown resourceType 'Nonsense'"),
        ("in.json", "entry[5]", "Patient has neither id nor fullUrl"),
        ("in.json", "entry[3]", "Condition has no usable reference to a Patient"),
    ]
    assert list(out.patients) == ["Patient/p1"] and out.resources_read == 3


def test_a_resource_outside_patient_scope_without_a_patient_is_skipped_silently() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "d1"}
    out = grouped(practitioner, {"resourceType": "Organization", "id": "o1"})
    assert (out.patients, out.errors, out.resources_read) == ({}, [], 2)


def test_an_extraction_problem_names_the_entry_and_keeps_the_rest() -> None:
    dangling = {**metformin_request("m1", "p1", "2024-01-01"), "medicationReference": {"reference": "Medication/gone"}}
    del dangling["medicationCodeableConcept"]
    out = grouped(patient("p1"), dangling, metformin_request("m2", "p1", "2024-01-01"))
    assert errors(out) == [("in.json", "entry[1]",
                            "medicationReference 'Medication/gone' does not resolve to a Medication")]
    assert [f.ref for f, _, _ in out.patients["Patient/p1"].facts] == ["MedicationRequest/m2"]


def test_a_medication_reference_resolves_against_the_pooled_medications() -> None:
    medication = {"resourceType": "Medication", "id": "met", "code": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "861007"}]}}
    by_reference = {**metformin_request("m1", "p1", "2024-01-01"),
                    "medicationReference": {"reference": "Medication/met"}}
    del by_reference["medicationCodeableConcept"]
    out = grouped(by_reference, medication, patient("p1"))  # the Medication may come after its user
    (fact, _, _), = out.patients["Patient/p1"].facts
    assert "metformin" in fact.concepts and out.resources_read == 3


def test_urn_references_resolve_through_the_patients_full_url() -> None:
    out = grouped(make_condition("E53.8", ICD10CM, patient="ignored", subject={"reference": "urn:uuid:u1"}),
                  patient("p1"), full_urls={1: "urn:uuid:u1"})
    assert list(out.patients) == ["Patient/p1"]
    assert out.patients["Patient/p1"].resource_count == 2 and len(out.patients["Patient/p1"].facts) == 1


def test_a_urn_naming_a_known_patient_id_is_merged_into_that_patient() -> None:
    first = make_condition("E53.8", ICD10CM, subject={"reference": "urn:uuid:p1"})
    out = grouped(first, patient("p1"), make_condition("D51.0", ICD10CM, subject={"reference": "urn:uuid:p9"}))
    assert sorted(out.patients) == ["Patient/p1", "urn:uuid:p9"]
    merged = out.patients["Patient/p1"]
    assert merged.resource_count == 2 and merged.patient is not None and len(merged.facts) == 1


def test_deleted_resources_are_counted_as_read_and_left_out() -> None:
    out = grouped(patient("p1"), make_condition("E53.8", ICD10CM, rid="c1"), make_condition("D51.0", ICD10CM),
                  deleted=frozenset({"Condition/c1"}))
    assert out.resources_read == 3
    assert [f.ref for f, _, _ in out.patients["Patient/p1"].facts] == ["Condition/condition-D51.0"]
    assert out.patients["Patient/p1"].resource_count == 2


def test_under_the_all_policy_an_invalid_resource_is_an_error_when_read() -> None:
    invalid = make_observation("2132-9", effective="2026-01-01", value=150, unit="ng/L", bogusField=1)
    assert grouped(patient("p1"), invalid).errors == []
    strict = grouped(patient("p1"), invalid, validate=True)
    assert strict.policy == ALL
    assert errors(strict) == [
        ("in.json", "entry[1]", "invalid Observation: bogusField: Extra inputs are not permitted")]
    assert strict.patients["Patient/p1"].facts == []


def test_empty_input_groups_nothing() -> None:
    out = group_entries([], extractor())
    assert (out.patients, out.errors, out.resources_read, out.newest_date()) == ({}, [], 0, None)
