"""Turn raw FHIR R4 resources (JSON dicts) into facts.

Cheap JSON checks come first (resource type, codes against the value sets); a resource that a rule can
use is reduced to a compact fact. Under the ``all`` validation policy (``validate=True``) it is first checked
against its fhir.resources R4B model; under the default ``evidence`` policy only the resources a result rests
on are checked, after screening, and the patient is screened again without any that fail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..core.dates import parse_date
from ..core.facts import (
    MEDICATION_TYPES,
    ConditionFact,
    Dose,
    MedicationUse,
    ObservationFact,
    PatientFact,
    ProcedureFact,
    Strength,
    concept_label,
    dose_of,
    effective_dates,
    first_code,
    length_in_cm,
    notes_text,
    period_bounds,
    strengths_from_medication,
    strengths_from_name,
)
from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..core.terminology import Terminology
from .models import ResourceProblem, validate_resource

log = logging.getLogger(__name__)

Fact = PatientFact | MedicationUse | ConditionFact | ProcedureFact | ObservationFact

#: Resource types b12screen reads; every other valid R4 type is counted and skipped.
UNDERSTOOD_TYPES = frozenset(
    {"Patient", "Medication", "Condition", "Procedure", "Observation", "Flag", "Encounter", "FamilyMemberHistory",
     *MEDICATION_TYPES}
)
#: Value sets whose presence in a relative's condition means a family history of B12 deficiency.
FAMILY_HISTORY_SOURCES = frozenset({"b12-deficiency-dx", "family-history-b12"})
#: Understood types that must name their patient.
PATIENT_SCOPED_TYPES = UNDERSTOOD_TYPES - {"Patient", "Medication"}

_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_TYPED_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def normalize_reference(reference: str) -> str:
    """``Type/id`` for relative and absolute RESTful references; other forms (``urn:uuid:``) unchanged."""
    m = _TYPED_REF.search(reference)
    return f"{m.group(1)}/{m.group(2)}" if m else reference


def patient_reference(resource: Mapping[str, Any]) -> str | None:
    """The raw reference string of the patient a resource is about (subject, else patient)."""
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return None


def is_patient_reference(reference: str) -> bool:
    return bool(_PATIENT_REF.search(reference)) or reference.startswith("urn:uuid:")


def resource_ref(resource: Mapping[str, Any], full_url: str | None) -> str | None:
    """How evidence names a resource: ``Type/id``, else its fullUrl, else None."""
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return full_url or None


def pooled(target: str, medications: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Medication a (non-contained) reference ``target`` names in ``medications``, or None."""
    return medications.get(target) or medications.get(normalize_reference(target))


def names_other_medication(resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether ``resource`` names by ``medicationReference`` a Medication that is neither contained nor in
    ``medications`` (one Bundle's): it may sit in another file of the input, so it resolves once every
    Medication is known."""
    reference = resource.get("medicationReference")
    target = reference.get("reference") if isinstance(reference, Mapping) else None
    return isinstance(target, str) and bool(target) and not target.startswith("#") and \
        pooled(target, medications) is None


def check_resource_type(resource: Any) -> str:
    """The resourceType of a JSON value, or :class:`ResourceProblem` if it is not a FHIR resource."""
    if not isinstance(resource, Mapping):
        raise ResourceProblem(f"not a FHIR resource (a JSON {type(resource).__name__}, expected an object)")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise ResourceProblem("not a FHIR resource (no resourceType)")
    if resource_type not in R4_RESOURCE_TYPES:
        raise ResourceProblem(f"unknown resourceType {resource_type[:60]!r}")
    return resource_type


class Extractor:
    """Extract facts from raw resources, resolving medicationReference against a Medication pool."""

    def __init__(self, terminology: Terminology, validate: bool = True) -> None:
        self.terminology = terminology
        self.validate = validate
        self._drug_cache: dict[bytes, tuple[frozenset[str], str, tuple[Strength, ...]]] = {}

    def extract(
        self, resource: Mapping[str, Any], ref: str, medications: Mapping[str, Mapping[str, Any]]
    ) -> Fact | None:
        """The fact of one resource, None when no rule can use it; :class:`ResourceProblem` if unusable."""
        resource_type = resource["resourceType"]
        try:
            if resource_type == "Patient":
                return self._checked(resource, self._patient, ref)
            if resource_type in MEDICATION_TYPES:
                return self._medication_use(resource, ref, medications)
            if resource_type == "Condition":
                return self._condition(resource, ref)
            if resource_type == "Procedure":
                return self._procedure(resource, ref)
            if resource_type == "Observation":
                return self._observation(resource, ref)
            if resource_type == "Flag":
                return self._flag(resource, ref)
            if resource_type == "Encounter":
                return self._encounter_diet(resource, ref)
            if resource_type == "FamilyMemberHistory":
                return self._family_history(resource, ref)
        except ResourceProblem:
            raise
        except (TypeError, AttributeError, KeyError, ValueError):
            # The cheap path met an unexpected shape: let the model say precisely what is wrong.
            validate_resource(resource)
            raise ResourceProblem(f"{resource_type} has an unexpected structure") from None
        return None

    def _checked(self, resource: Mapping[str, Any], build: Any, ref: str) -> Any:
        if self.validate:
            validate_resource(resource)
        return build(resource, ref)

    # -- per type ---------------------------------------------------------------------------

    @staticmethod
    def _patient(resource: Mapping[str, Any], ref: str) -> PatientFact:
        deceased_date = parse_date(resource.get("deceasedDateTime"))
        deceased = bool(resource.get("deceasedBoolean")) or deceased_date is not None
        return PatientFact(
            ref=ref,
            birth_date=parse_date(resource.get("birthDate")),
            deceased=deceased,
            deceased_date=deceased_date,
            gender=resource.get("gender"),
        )

    def _resolve_medication(
        self, resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
    ) -> tuple[Mapping[str, Any] | None, str]:
        """(Medication resource or None, display of the reference)."""
        reference = resource.get("medicationReference")
        if not isinstance(reference, Mapping):
            return None, ""
        target = reference.get("reference")
        display = str(reference.get("display") or "")
        if isinstance(target, str) and target:
            if target.startswith("#"):
                for contained in resource.get("contained") or []:
                    if isinstance(contained, Mapping) and contained.get("id") == target[1:]:
                        return contained, display
            else:
                found = pooled(target, medications)
                if found is not None:
                    return found, display
            if not display:
                raise ResourceProblem(f"medicationReference {target[:80]!r} does not resolve to a Medication")
        return None, display

    def _medication_use(
        self, resource: Mapping[str, Any], ref: str, medications: Mapping[str, Mapping[str, Any]]
    ) -> MedicationUse | None:
        code = resource.get("medicationCodeableConcept")
        if code is not None and "medicationReference" not in resource:
            # refills repeat one drug many times: resolve each distinct coded drug once
            key = orjson.dumps(code, option=orjson.OPT_SORT_KEYS)
            drug = self._drug_cache.get(key)
            if drug is None:
                drug = self._drug(code, None, "")
                if len(self._drug_cache) < 100_000:
                    self._drug_cache[key] = drug
        else:
            medication, display = self._resolve_medication(resource, medications)
            drug = self._drug(code, medication, display)
        concepts, label, strengths = drug
        if not concepts:
            return None
        if self.validate:
            validate_resource(resource)
        return self._medication_fact(resource, ref, concepts, label, list(strengths))

    def _drug(self, code: Any, medication: Mapping[str, Any] | None,
              display: str) -> tuple[frozenset[str], str, tuple[Strength, ...]]:
        """(value sets, label, strengths) of a drug named by a CodeableConcept and/or a Medication."""
        terminology = self.terminology
        concepts: frozenset[str] = terminology.match_concept(code) if code else frozenset()
        label = terminology.label(code)
        strengths = []
        if medication is not None:
            med_code = medication.get("code")
            concepts |= terminology.match_concept(med_code)
            for ingredient in medication.get("ingredient") or []:
                if isinstance(ingredient, Mapping):
                    concepts |= terminology.match_concept(ingredient.get("itemCodeableConcept"))
            label = label or terminology.label(med_code) or display
            strengths.extend(strengths_from_medication(medication, terminology))
            if not strengths and concepts:
                strengths.extend(strengths_from_name(concept_label(med_code), concepts, terminology))
        elif display:
            concepts |= terminology.match_text(display)
            label = label or display
        if concepts and not strengths and isinstance(code, Mapping):
            names = [label] + [c.get("display") for c in code.get("coding") or [] if isinstance(c, Mapping)]
            for name in names:
                strengths.extend(strengths_from_name(name or "", concepts, terminology))
                if strengths:
                    break
        return concepts, label, tuple(strengths)

    @staticmethod
    def _medication_fact(
        resource: Mapping[str, Any], ref: str, concepts: frozenset[str], label: str, strengths: list[Any]
    ) -> MedicationUse:
        resource_type = resource["resourceType"]
        status = resource.get("status")
        supply_days: float | None = None
        end = None
        dosages: list[Any]
        if resource_type == "MedicationStatement":
            start, end = effective_dates(resource, "effective")
            dosages = list(resource.get("dosage") or [])
        elif resource_type == "MedicationRequest":
            start = parse_date(resource.get("authoredOn"))
            if start is None:
                validity = (resource.get("dispenseRequest") or {}).get("validityPeriod") or {}
                start = parse_date(validity.get("start"))
            dosages = list(resource.get("dosageInstruction") or [])
        elif resource_type == "MedicationDispense":
            start = parse_date(resource.get("whenHandedOver")) or parse_date(resource.get("whenPrepared"))
            days = resource.get("daysSupply")
            if isinstance(days, Mapping) and days.get("value") is not None:
                supply_days = float(days["value"])
            dosages = list(resource.get("dosageInstruction") or [])
        else:  # MedicationAdministration
            start, end = effective_dates(resource, "effective")
            dosage = resource.get("dosage")
            dosages = [dosage] if dosage else []
        doses: list[Dose] = [d for d in (dose_of(x) for x in dosages) if d is not None]
        route_parts = [label]
        for dosage in dosages:
            if isinstance(dosage, Mapping):
                route_parts.append(concept_label(dosage.get("route")))
        return MedicationUse(
            ref=ref,
            resource_type=resource_type,
            concepts=concepts,
            status=status if isinstance(status, str) else None,
            start=start,
            end=end,
            supply_days=supply_days,
            doses=tuple(doses),
            strengths=tuple(strengths),
            route=" ".join(p for p in route_parts if p).lower(),
            label=label,
            period="effectivePeriod" in resource,
        )

    def _condition(self, resource: Mapping[str, Any], ref: str) -> ConditionFact | None:
        concepts = self.terminology.match_concept(resource.get("code"))
        if not concepts:
            return None
        if self.validate:
            validate_resource(resource)
        onset, _ = effective_dates(resource, "onset")
        abatement, _ = effective_dates(resource, "abatement")
        label = self.terminology.label(resource.get("code"))
        if "atrophic-gastritis" in concepts:
            # codes cannot tell autoimmune from other atrophic gastritis; the text can (a MOD-DX diagnosis)
            concepts |= self.terminology.match_text(label) & {"b12-deficiency-dx"}
        return ConditionFact(
            ref=ref,
            resource_type="Condition",
            concepts=concepts,
            clinical_status=first_code(resource.get("clinicalStatus")),
            verification_status=first_code(resource.get("verificationStatus")),
            onset=onset or parse_date(resource.get("recordedDate")),
            abatement=abatement,
            label=label,
            length_cm=length_in_cm(notes_text(resource)),
        )

    def _flag(self, resource: Mapping[str, Any], ref: str) -> ConditionFact | None:
        concepts = self.terminology.match_concept(resource.get("code"))
        if not concepts:
            return None
        if self.validate:
            validate_resource(resource)
        start, end = period_bounds(resource.get("period"))  # Flag.period is a Period, not a choice element
        status = resource.get("status")
        return ConditionFact(
            ref=ref,
            resource_type="Flag",
            concepts=concepts,
            clinical_status="active" if status == "active" else "inactive",
            verification_status="entered-in-error" if status == "entered-in-error" else None,
            onset=start,
            abatement=end,
            label=concept_label(resource.get("code")),
        )

    def _encounter_diet(self, resource: Mapping[str, Any], ref: str) -> ConditionFact | None:
        hospitalization = resource.get("hospitalization")
        if not isinstance(hospitalization, Mapping) or not hospitalization.get("dietPreference"):
            return None
        concepts: frozenset[str] = frozenset()
        for pref in hospitalization["dietPreference"]:
            concepts |= self.terminology.match_concept(pref)
        if not concepts:
            return None
        if self.validate:
            validate_resource(resource)
        start, _end = period_bounds(resource.get("period"))  # Encounter.period is a Period, not a choice element
        return ConditionFact(
            ref=ref,
            resource_type="Encounter",
            concepts=concepts,
            clinical_status="active",
            verification_status="entered-in-error" if resource.get("status") == "entered-in-error" else None,
            onset=start,
            abatement=None,
            label="diet preference",
        )

    def _family_history(self, resource: Mapping[str, Any], ref: str) -> ConditionFact | None:
        """A relative's B12 deficiency or pernicious anaemia, as a ``family-history-b12`` fact."""
        labels = []
        for condition in resource.get("condition") or []:
            if isinstance(condition, Mapping) and self.terminology.match_concept(condition.get("code")) & (
                    FAMILY_HISTORY_SOURCES):
                labels.append(concept_label(condition.get("code")))
        if not labels:
            return None
        if self.validate:
            validate_resource(resource)
        status = resource.get("status")
        return ConditionFact(
            ref=ref,
            resource_type="FamilyMemberHistory",
            concepts=frozenset({"family-history-b12"}),
            clinical_status=None,
            verification_status="entered-in-error" if status == "entered-in-error" else None,
            onset=parse_date(resource.get("date")),
            abatement=None,
            label=f"family history of {labels[0] or 'B12 deficiency'}",
        )

    def _procedure(self, resource: Mapping[str, Any], ref: str) -> ProcedureFact | None:
        concepts = self.terminology.match_concept(resource.get("code"))
        if not concepts:
            return None
        if self.validate:
            validate_resource(resource)
        performed, _ = effective_dates(resource, "performed")
        label = self.terminology.label(resource.get("code"))
        return ProcedureFact(
            ref=ref,
            concepts=concepts,
            status=resource.get("status"),
            performed=performed,
            label=label,
            length_cm=length_in_cm(notes_text(resource), label),
        )

    def _observation(self, resource: Mapping[str, Any], ref: str) -> ObservationFact | None:
        terminology = self.terminology
        concepts = terminology.match_concept(resource.get("code"))
        value_concepts = terminology.match_concept(resource.get("valueCodeableConcept"))
        if not concepts and not value_concepts:
            return None
        if self.validate:
            validate_resource(resource)
        effective, _ = effective_dates(resource, "effective")
        value = unit = comparator = None
        quantity = resource.get("valueQuantity")
        if isinstance(quantity, Mapping) and quantity.get("value") is not None:
            value = float(quantity["value"])
            unit = str(quantity.get("code") or quantity.get("unit") or "") or None
            comparator = quantity.get("comparator")
        interpretation: set[str] = set()
        for concept in resource.get("interpretation") or []:
            if isinstance(concept, Mapping):
                for coding in concept.get("coding") or []:
                    if isinstance(coding, Mapping) and coding.get("code"):
                        interpretation.add(str(coding["code"]))
                if concept.get("text"):
                    interpretation.add(str(concept["text"]).lower())
        low = high = None
        for rng in resource.get("referenceRange") or []:
            if isinstance(rng, Mapping):
                if isinstance(rng.get("low"), Mapping) and rng["low"].get("value") is not None:
                    low = float(rng["low"]["value"])
                if isinstance(rng.get("high"), Mapping) and rng["high"].get("value") is not None:
                    high = float(rng["high"]["value"])
                break
        return ObservationFact(
            ref=ref,
            concepts=concepts,
            value_concepts=value_concepts,
            status=resource.get("status"),
            effective=effective or parse_date(resource.get("issued")),
            value=value,
            unit=unit,
            comparator=comparator,
            interpretation=frozenset(interpretation),
            ref_low=low,
            ref_high=high,
            label=concept_label(resource.get("code")),
        )
