"""Split entries by patient and reduce each patient's resources to facts (the front door,
:mod:`b12screen.screening`, builds each patient's record from them once)."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..core.dataend import newest_date
from ..core.facts import PatientFact
from ..core.record import PatientRecord
from ..errors import InputError
from .extract import (
    PATIENT_SCOPED_TYPES,
    UNDERSTOOD_TYPES,
    Extractor,
    Fact,
    ResourceProblem,
    check_resource_type,
    is_patient_reference,
    normalize_reference,
    patient_reference,
    resource_ref,
)
from .reader import Entry
from .validation import ALL, EVIDENCE

_LONG_PATIENT = re.compile(r"(?:^|/)(Patient/[A-Za-z0-9\-.]{65,})(?:/_history/[^/]+)?$")


def patient_key(reference: str) -> str | None:
    """The patient key of a reference, the one rule of every door: ``Patient/<id>`` (ids over 64
    characters too, so such a patient is screened rather than lost) or the ``urn:uuid:`` it names."""
    if is_patient_reference(reference):
        return normalize_reference(reference)
    m = _LONG_PATIENT.search(reference)
    return m.group(1) if m else None


@dataclass
class PatientInput:
    """What some input holds about one patient: their Patient fact, how many resources were filed for them,
    and every other fact with the resource and the (source, location) it came from, in input order."""

    key: str
    patient: PatientFact | None = None
    resource_count: int = 0
    facts: list[tuple[Fact, Mapping[str, Any], tuple[str, str]]] = field(default_factory=list)

    def record(self) -> PatientRecord:
        """The patient's record (facts in canonical order)."""
        record = PatientRecord(self.key, patient=self.patient, resource_count=self.resource_count)
        for fact, _resource, _where in self.facts:
            record.add(fact)
        record.sort()
        return record


@dataclass
class GroupedInput:
    """Each patient's facts from some input, with every problem met on the way, and the validation policy
    its facts were extracted under (``all`` when the extractor validated them, else ``evidence``)."""

    policy: str
    patients: dict[str, PatientInput] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)
    resources_read: int = 0

    def newest_date(self) -> date | None:
        """The newest clinical date of every patient's facts (:mod:`b12screen.core.dataend`)."""
        return newest_date(f for p in self.patients.values() for f in (p.patient, *(x for x, _, _ in p.facts)))

    def patient(self, key: str) -> PatientInput:
        found = self.patients.get(key)
        if found is None:
            found = self.patients[key] = PatientInput(key)
        return found


def patient_resource_key(resource: Mapping[str, Any], full_url: str | None) -> str | None:
    """The key of a Patient resource: ``Patient/<id>``, else its fullUrl."""
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"Patient/{rid}"
    return full_url


@dataclass
class BundleIndex:
    """What the other entries of one input need: its Medications (for medicationReference) and the
    fullUrls of its Patients (for ``urn:uuid:`` references)."""

    medications: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    full_urls: dict[str, str] = field(default_factory=dict)

    def add(self, resource: Mapping[str, Any], resource_type: str, full_url: str | None) -> bool:
        """Index one resource; True when it is still to be filed under its patient. A Patient with
        neither id nor fullUrl is a :class:`ResourceProblem`."""
        if resource_type == "Medication":
            ref = resource_ref(resource, full_url)
            for key in filter(None, (ref, full_url)):
                self.medications[key] = resource
            return False
        if resource_type == "Patient":
            patient_key = patient_resource_key(resource, full_url)
            if patient_key is None:
                raise ResourceProblem("Patient has neither id nor fullUrl")
            if full_url:
                self.full_urls[full_url] = patient_key
                self.full_urls[normalize_reference(full_url)] = patient_key
        return True


def group_entries(items: Iterable[Entry | InputError], extractor: Extractor,
                  deleted: frozenset[str] = frozenset()) -> GroupedInput:
    """Group entries by patient (``Patient/x``, ``urn:uuid:`` fullUrls and absolute URLs all resolve to
    the same key, :func:`patient_key`) and extract facts; Medications are pooled for medicationReference
    look-ups. Resources listed in ``deleted`` (Bulk Data ``deleted/``) are counted as read and dropped."""
    out = GroupedInput(ALL if extractor.validate else EVIDENCE)
    entries: list[tuple[Entry, str]] = []
    index = BundleIndex()
    for item in items:
        if isinstance(item, InputError):
            out.errors.append(item)
            continue
        try:
            resource_type = check_resource_type(item.resource)
            out.resources_read += 1
            if deleted and resource_ref(item.resource, None) in deleted:
                continue
            if index.add(item.resource, resource_type, item.full_url):
                entries.append((item, resource_type))
        except ResourceProblem as exc:
            out.errors.append(InputError(item.source, item.location, str(exc)))

    resolved: dict[str, str | None] = {}  # raw reference -> key: a patient's resources repeat one reference
    for item, resource_type in entries:
        resource = item.resource
        if resource_type == "Patient":
            key = patient_resource_key(resource, item.full_url)
        else:
            raw = patient_reference(resource)
            key = None
            if raw:
                if raw in resolved:
                    key = resolved[raw]
                else:
                    key = patient_key(raw)
                    if key is not None:
                        key = index.full_urls.get(raw) or key
                    resolved[raw] = key
            if key is None:
                if resource_type in PATIENT_SCOPED_TYPES:
                    out.errors.append(
                        InputError(item.source, item.location, f"{resource_type} has no usable reference to a Patient")
                    )
                continue
        assert key is not None
        found = out.patient(key)
        found.resource_count += 1
        if resource_type not in UNDERSTOOD_TYPES:
            continue
        ref = resource_ref(resource, item.full_url) or f"{resource_type} at {item.location}"
        try:
            fact = extractor.extract(resource, ref, index.medications)
        except ResourceProblem as exc:
            out.errors.append(InputError(item.source, item.location, str(exc)))
            continue
        if isinstance(fact, PatientFact):
            found.patient = fact
        elif fact is not None:
            found.facts.append((fact, resource, (item.source, item.location)))
    _merge_uuid_keys(out)
    return out


def merge_target(key: str, known: Container[str]) -> str:
    """The key a patient's resources are filed under: ``urn:uuid:x`` joins ``Patient/x`` when that
    patient is known (the same rule in every door)."""
    if key.startswith("urn:uuid:") and f"Patient/{key[9:]}" in known:
        return f"Patient/{key[9:]}"
    return key


def _merge_uuid_keys(out: GroupedInput) -> None:
    for key in [k for k in out.patients if merge_target(k, out.patients) != k]:
        target = out.patients[merge_target(key, out.patients)]
        source = out.patients.pop(key)
        target.resource_count += source.resource_count
        target.patient = target.patient or source.patient
        target.facts.extend(source.facts)
