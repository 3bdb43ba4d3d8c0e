"""The validation policy of every door: which resources get a fhir.resources R4B model.

``evidence`` (the default): facts come from the raw JSON; only the resources that become evidence of a
result are validated, and a patient whose evidence holds an invalid resource is reported and screened
again without it. ``all``: every resource a rule can use is validated when its fact is extracted (an
invalid one is reported and left out), which costs a model per relevant resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import orjson

from ..core.facts import PatientFact
from ..core.outcome import ScreeningResult, ScreeningResults
from ..core.record import PatientRecord
from ..errors import B12ScreenError, InputError
from .extract import Extractor
from .models import ResourceProblem, validate_resource

if TYPE_CHECKING:
    from ..core.terminology import Terminology
    from .grouping import GroupedInput

EVIDENCE, ALL = "evidence", "all"


class Screener(Protocol):
    """What the policy needs of :class:`b12screen.core.engine.Screener` (so that this module does not
    import the engine, which uses it)."""

    def evaluate(self, record: PatientRecord, as_of: date) -> ScreeningResult: ...


POLICIES = (EVIDENCE, ALL)
P = TypeVar("P")


def check_policy(policy: str) -> str:
    """``policy`` when it is one of :data:`POLICIES`, else a :class:`B12ScreenError`."""
    if policy not in POLICIES:
        raise B12ScreenError(f"unknown validation policy {policy!r} (choose from {', '.join(POLICIES)})")
    return policy


def extractor_for(terminology: Terminology, policy: str) -> Extractor:
    """The extractor of a policy: ``all`` validates at extraction, ``evidence`` later."""
    return Extractor(terminology, validate=check_policy(policy) == ALL)


def validation_problem(raw: bytes | Mapping[str, Any]) -> str | None:
    """Why a resource (raw JSON or parsed) is not a valid R4B resource, or None."""
    try:
        validate_resource(orjson.loads(raw) if isinstance(raw, bytes) else raw)
    except ResourceProblem as exc:
        return str(exc)
    return None


@dataclass
class Checked(Generic[P]):
    """A patient's result under the policy, the record it came from and the resources found invalid."""

    result: ScreeningResult
    record: PatientRecord
    problems: list[tuple[P, str]] = field(default_factory=list)


def screen_checked(screener: Screener, key: str, patient: PatientFact | None,
                   facts: Sequence[tuple[Any, Any, P]], resources: int, as_of: date, policy: str) -> Checked[P]:
    """Screen one patient from ``(fact, raw JSON or resource, position)`` items in input order; under
    ``evidence`` validate what the result rests on and screen again without any invalid resource."""
    items = list(facts)
    valid: set[int] = set()  # ids of resources already validated
    problems: list[tuple[P, str]] = []
    while True:
        record = PatientRecord(key, patient=patient, resource_count=resources)
        for fact, _raw, _pos in items:
            record.add(fact)
        record.sort()
        result = screener.evaluate(record, as_of)
        if policy == ALL:
            return Checked(result, record, problems)
        evidence = set(result.evidence)
        bad: set[int] = set()
        for i, (fact, raw, pos) in enumerate(items):
            if fact.ref not in evidence or id(raw) in valid:
                continue
            problem = validation_problem(raw)
            if problem is None:
                valid.add(id(raw))
            else:
                bad.add(i)
                problems.append((pos, problem))
        if not bad:
            return Checked(result, record, problems)
        items = [item for i, item in enumerate(items) if i not in bad]


def screen_one(screener: Screener, grouped: GroupedInput, key: str, as_of: date,
               policy: str) -> Checked[tuple[str, str]] | None:
    """One patient of grouped input under the policy; None when the input has no such patient."""
    record = grouped.records.get(key)
    if record is None:
        return None
    facts = [item for item in grouped.sourced.get(key, ()) if not isinstance(item[0], PatientFact)]
    return screen_checked(screener, key, record.patient, facts, record.resource_count, as_of, policy)


def screen_grouped(screener: Screener, grouped: GroupedInput, as_of: date, policy: str) -> ScreeningResults:
    """Every patient of grouped input under the policy, sorted by key, with every input error."""

    results = []
    errors = list(grouped.errors)
    for key in sorted(grouped.records):
        checked = screen_one(screener, grouped, key, as_of, policy)
        assert checked is not None
        results.append(checked.result)
        errors.extend(InputError(source, location, reason) for (source, location), reason in checked.problems)
    return ScreeningResults(results, errors, grouped.resources_read)
