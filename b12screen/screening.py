"""The front door: the one screening pipeline every door calls.

read entries → group them by patient (:mod:`b12screen.sources.grouping`) → screen each patient with the rule
engine → validate the resources the result rests on (the ``evidence`` policy of
:mod:`b12screen.sources.validation`) → screen again without any that fail.

``b12screen screen``, ``explain`` and ``fetch``, the CDS service, :func:`b12screen.screen_paths` and
:mod:`b12screen.testing` group and screen through :func:`group`, :func:`screen_grouped` and
:func:`screen_patient`; the batch engines, which group lines themselves, screen each patient through
:func:`screen_facts`. Layers: ``docs/reference/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, TypeVar

from .core.config import Config
from .core.engine import RuleEngine
from .core.facts import PatientFact
from .core.outcome import ScreeningResult
from .core.record import PatientRecord
from .errors import InputError
from .plugins import PluginManager
from .sinks.flag import flag_json
from .sinks.rows import demographics, row, to_pandas
from .sources.grouping import GroupedInput, group_entries
from .sources.reader import Entry, read_value
from .sources.validation import ALL, EVIDENCE, extractor_for, validation_problem

P = TypeVar("P")


class ScreeningResults(list[ScreeningResult]):
    """A list of results (one per patient, sorted by patient) that also carries the input errors."""

    def __init__(self, results: Iterable[ScreeningResult] = (), errors: Iterable[InputError] = (),
                 resources_read: int = 0) -> None:
        super().__init__(results)
        self.errors: list[InputError] = list(errors)
        self.resources_read = resources_read

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows of ``report.csv`` as dicts (lists stay lists): ``pandas.DataFrame(results.to_rows())``."""
        return [row(result.report(), flag_json(result), result.demographics) for result in self]

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas: ``pip install 'b12screen[pandas]'``)."""
        return to_pandas(self.to_rows())


class Screener(RuleEngine):
    """The rule engine with its reading front door: what the public API and every door build.

    ``profile`` is ``default`` or ``nice``; ``config`` switches rules off and tunes parameters;
    ``plugin_manager`` defaults to one with the built-in and installed plugins.
    """

    def screen(self, data: Any, as_of: date, source: str = "<input>", policy: str = EVIDENCE) -> ScreeningResults:
        """Screen a Bundle, a resource or a list of resources (parsed JSON) at ``as_of`` under the
        validation policy (:mod:`b12screen.sources.validation`)."""
        return screen_grouped(self, group(self, read_value(data, source), policy), as_of)


def group(screener: RuleEngine, items: Iterable[Entry | InputError], policy: str = EVIDENCE,
          deleted: frozenset[str] = frozenset()) -> GroupedInput:
    """Entries grouped by patient, with facts extracted as the validation policy says (the policy goes with
    the grouped input, so screening it needs no second mention)."""
    return group_entries(items, extractor_for(screener.terminology, policy), deleted)


@dataclass
class Checked(Generic[P]):
    """A patient's result under the policy, the record it came from and the resources found invalid."""

    result: ScreeningResult
    record: PatientRecord
    problems: list[tuple[P, str]] = field(default_factory=list)


def screen_facts(screener: RuleEngine, key: str, patient: PatientFact | None,
                 facts: Sequence[tuple[Any, Any, P]], resources: int, as_of: date, policy: str) -> Checked[P]:
    """Screen one patient from ``(fact, raw JSON or resource, position)`` items in input order; under
    ``evidence`` validate what the result rests on and screen again without any invalid resource. The result
    carries the patient's demographics (the analyst rows), taken once from the final record."""
    checked = _screen_valid(screener, key, patient, facts, resources, as_of, policy)
    checked.result.demographics = demographics(checked.record, as_of)
    return checked


def _screen_valid(screener: RuleEngine, key: str, patient: PatientFact | None,
                  facts: Sequence[tuple[Any, Any, P]], resources: int, as_of: date, policy: str) -> Checked[P]:
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


def screen_one(screener: RuleEngine, grouped: GroupedInput, key: str, as_of: date,
               ) -> Checked[tuple[str, str]] | None:
    """One patient of grouped input under its policy; None when the input has no such patient."""
    found = grouped.patients.get(key)
    if found is None:
        return None
    return screen_facts(screener, key, found.patient, found.facts, found.resource_count, as_of, grouped.policy)


def screen_grouped(screener: RuleEngine, grouped: GroupedInput, as_of: date) -> ScreeningResults:
    """Every patient of grouped input under its policy, sorted by key, with every input error."""
    results = []
    errors = list(grouped.errors)
    for key in sorted(grouped.patients):
        checked = screen_one(screener, grouped, key, as_of)
        assert checked is not None
        results.append(checked.result)
        errors.extend(InputError(source, location, reason) for (source, location), reason in checked.problems)
    return ScreeningResults(results, errors, grouped.resources_read)


@dataclass
class PatientScreening:
    """One patient screened from some input (``checked`` is None when the input does not hold them), with
    every entry that could not be used: input errors first, then invalid evidence."""

    checked: Checked[tuple[str, str]] | None
    errors: list[InputError]
    resources_read: int


def screen_patient(screener: RuleEngine, items: Iterable[Entry | InputError], key: str, as_of: date,
                   policy: str = EVIDENCE) -> PatientScreening:
    """Read, group and screen the one patient ``key`` of some input (a FHIR server's answer, a CDS request)."""
    grouped = group(screener, items, policy)
    checked = screen_one(screener, grouped, key, as_of)
    errors = list(grouped.errors)
    if checked is not None:
        errors.extend(InputError(source, location, reason) for (source, location), reason in checked.problems)
    return PatientScreening(checked, errors, grouped.resources_read)


def screen(data: Any, as_of: date, profile: str = "default", config: Config | None = None,
           plugin_manager: PluginManager | None = None) -> ScreeningResults:
    """Screen parsed FHIR JSON (Bundle, resource or list of resources) at ``as_of``.

    Returns one :class:`ScreeningResult` per patient; input problems are in ``.errors``.
    """
    return Screener(profile=profile, config=config, plugin_manager=plugin_manager).screen(data, as_of)
