"""Merge the partial facts of each patient and screen them.

Pure functions shared by the local and the Spark engine, so both give byte-identical outputs: facts are
put in a canonical order, ``urn:uuid:x`` merges into ``Patient/x``, medication uses waiting for the
whole input's Medication pool are extracted, and the validation policy is applied
(:mod:`b12screen.sources.validation`).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from ..core.dataend import record_newest
from ..core.outcome import ScreeningResult
from ..core.pickling import positional_pickle
from ..core.record import PatientRecord
from ..screening import Screener, screen_facts
from ..sinks.flag import flag_json
from ..sinks.rows import csv_line
from ..sinks.rows import row as analyst_row
from ..sources import limits
from ..sources.extract import Extractor, Fact, resource_ref
from ..sources.grouping import merge_target
from ..sources.models import ResourceProblem
from ..sources.validation import EVIDENCE, extractor_for
from .followup import FollowUp, bands_of, follow_up
from .stream import LINE_MARK, Partial, Pos

_DUMP = orjson.OPT_NON_STR_KEYS


@dataclass
class EvalContext:
    """What evaluation needs besides the facts."""

    screener: Screener
    as_of: date
    files: Sequence[str]
    pool: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    line_bases: Mapping[tuple[int, int], int] = field(default_factory=dict)
    policy: str = EVIDENCE
    keep_result: bool = False  # PatientOutput.result holds the ScreeningResult (for the Python door)
    follow_up_months: float | None = None  # PatientOutput.follow_up holds the audit's window (batch/followup.py)
    extractor: Extractor = field(init=False)

    def __post_init__(self) -> None:
        self.extractor = extractor_for(self.screener.terminology, self.policy)

    def portable(self) -> dict[str, Any]:
        """The fields besides the Screener (which holds plugins and need not pickle), as keyword arguments:
        ``EvalContext(screener, **ctx.portable())`` is the same context."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "screener"}

    def error(self, pos: Pos, reason: str) -> dict[str, Any]:
        """An errors.ndjson row for an input problem at ``pos``."""
        file_id, piece, rel, location = pos
        line = None if rel is None else self.line_bases.get((file_id, piece), 0) + rel
        return {"file": self.files[file_id], "line": line, "location": location, "reason": reason}

    def line_of(self, pos: Pos) -> int | None:
        return None if pos[2] is None else self.line_bases.get((pos[0], pos[1]), 0) + pos[2]


@positional_pickle
@dataclass(frozen=True, slots=True)
class PatientOutput:
    """One patient's lines of report.ndjson and flags.ndjson, with counts and any errors."""

    key: str
    report: bytes
    flag: bytes | None
    outcome: str
    rules: tuple[str, ...]
    rule_errors: tuple[bytes, ...] = ()
    input_errors: tuple[dict[str, Any], ...] = ()
    #: Screened data the patient had: a medication, a condition, a laboratory result, a B12 result.
    coverage: tuple[bool, bool, bool, bool] = (False, False, False, False)
    #: The analyst row (:func:`b12screen.sinks.rows.row`) as JSON, and as a line of report.csv.
    row: bytes = b"{}"
    csv: bytes = b""
    #: The row's ``flagged``, ``priority`` and ``reasons``, for the summary counts (no JSON decode per patient).
    flagged: bool = False
    priority: str | None = None
    reasons: tuple[str, ...] = ()
    #: The row's ``age_band`` and ``sex``, for the summary and counts.csv.
    age_band: str | None = None
    sex: str | None = None
    #: The newest clinical date of the patient's screened facts (:mod:`b12screen.core.dataend`).
    newest: date | None = None
    #: The ScreeningResult itself, when the evaluation was asked to keep it (``EvalContext.keep_result``).
    result: ScreeningResult | None = None
    #: Lines of this patient that turned out not to be JSON at evaluation (not read, as ``screen`` counts).
    rejected: int = 0
    #: What followed the as-of date, when the evaluation was asked for it (``EvalContext.follow_up_months``).
    follow_up: FollowUp | None = None

    @property
    def reported(self) -> bool:
        """False for a patient known only from lines that could not be read: ``screen`` never learns of
        them, so neither report nor Flag is written; only their errors are."""
        return bool(self.report)


def bare_id(key: str) -> str:
    """The id part shared by ``Patient/x`` and ``urn:uuid:x``."""
    if key.startswith("Patient/"):
        return key[8:]
    if key.startswith("urn:uuid:"):
        return key[9:]
    return key


def partition_of(key: str, partitions: int) -> int:
    """A stable partition (never Python's salted hash): ``Patient/x`` and ``urn:uuid:x`` share one."""
    return zlib.crc32(bare_id(key).encode("utf-8", "surrogatepass")) % partitions


def merge_keys(partials: Mapping[str, list[Partial]]) -> dict[str, list[Partial]]:
    """``urn:uuid:x`` joins ``Patient/x`` when that patient is known; other keys stay as they are."""
    merged: dict[str, list[Partial]] = {}
    for key in sorted(partials):
        merged.setdefault(merge_target(key, partials), []).extend(partials[key])
    return merged


def _norm(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(_norm(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, (frozenset, set)):
        return tuple(sorted(repr(_norm(v)) for v in value))
    if isinstance(value, (tuple, list)):
        return tuple(_norm(v) for v in value)
    return value


def canonical(value: Any) -> str:
    """A text that orders facts by content alone (frozensets sorted), identical in every process."""
    return repr(_norm(value))


def _position(item: tuple[Fact, bytes, Pos]) -> tuple[int, int, int, str]:
    file_id, piece, rel, location = item[2]
    return (file_id, piece, rel or 0, location or "")


def _extract(ctx: EvalContext, resource: dict[str, Any], ref: str, raw: bytes, pos: Pos,
             facts: list[tuple[Fact, bytes, Pos]], errors: list[dict[str, Any]]) -> None:
    """Extract a resource that waited for the whole Medication pool into ``facts``, or its error."""
    try:
        fact = ctx.extractor.extract(resource, ref, ctx.pool)
    except ResourceProblem as exc:
        errors.append(ctx.error(pos, str(exc)))
        return
    if fact is not None:
        facts.append((fact, raw, pos))


def evaluate_patient(ctx: EvalContext, key: str, parts: Iterable[Partial]) -> PatientOutput:
    """Screen one patient from the partial facts of every unit that saw it."""
    screener = ctx.screener
    resources = 0
    patients = []
    facts: list[tuple[Fact, bytes, Pos]] = []
    errors: list[dict[str, Any]] = []
    rejected = 0
    for part in parts:
        resources += part.resources
        patients.extend(part.patients)
        facts.extend(part.facts)
        for raw, pos in part.lines:
            try:
                resource = limits.loads(raw)
            except limits.JSONProblem as exc:
                errors.append(ctx.error(pos, str(exc)))
                rejected += 1
                continue
            ref = resource_ref(resource, None) or f"{resource['resourceType']} at line {ctx.line_of(pos)}"
            _extract(ctx, resource, ref, raw, pos, facts, errors)
        for raw, ref, pos in part.pending:  # Bundle entries, read once already
            _extract(ctx, orjson.loads(raw), ref, raw, pos, facts, errors)
    resources -= rejected
    if not resources:  # known only from lines that are not JSON
        return PatientOutput(key, b"", None, "", (), input_errors=tuple(errors), rejected=rejected)
    for i, (fact, raw, pos) in enumerate(facts):
        if LINE_MARK in fact.ref:
            fact = dataclasses.replace(fact, ref=fact.ref.replace(LINE_MARK, f"line {ctx.line_of(pos)}"))
            facts[i] = (fact, raw, pos)
    facts.sort(key=_position)  # input order, whatever the chunking or the order units finished in
    patient = min(patients, key=canonical) if len(patients) > 1 else patients[0] if patients else None
    checked = screen_facts(screener, key, patient, facts, resources, ctx.as_of, ctx.policy)
    result = checked.result
    errors.extend(ctx.error(pos, problem) for pos, problem in checked.problems)
    flag = flag_json(result)
    rule_errors = tuple(
        orjson.dumps({"patient": key, "rule": e.get("rule"), "reason": e.get("error")}, option=_DUMP)
        for e in result.rule_errors
    )
    errors.sort(key=lambda e: (e["file"], e["line"] or 0, e["location"] or "", e["reason"]))
    report = orjson.dumps(result.report(), option=_DUMP)
    flag_line = None if flag is None else orjson.dumps(flag, option=_DUMP)
    # the analyst row is made from the JSON written, as a reader of report.ndjson and flags.ndjson would
    values = analyst_row(orjson.loads(report), None if flag_line is None else orjson.loads(flag_line),
                         result.demographics)
    return PatientOutput(
        key=key,
        report=report,
        flag=flag_line,
        outcome=result.outcome,
        rules=tuple(result.rules),
        rule_errors=rule_errors,
        input_errors=tuple(errors),
        coverage=coverage(checked.record),
        row=orjson.dumps(values),
        csv=csv_line(values),
        flagged=values["flagged"],
        priority=values["priority"],
        reasons=tuple(values["reasons"]),
        age_band=values["age_band"],
        sex=values["sex"],
        newest=record_newest(checked.record),
        result=result if ctx.keep_result else None,
        rejected=rejected,
        follow_up=None if ctx.follow_up_months is None else follow_up(
            checked.record, ctx.as_of, ctx.follow_up_months, bands_of(screener.settings)),
    )


B12_RESULTS = frozenset({"b12-total", "b12-active"})


def coverage(record: PatientRecord) -> tuple[bool, bool, bool, bool]:
    """Which kinds of screened data (resources matching a value set) the record holds."""
    return (bool(record.medications), bool(record.conditions or record.procedures),
            any(o.value is not None for o in record.observations),
            any(o.concepts & B12_RESULTS for o in record.observations))


def evaluate_partials(ctx: EvalContext, partials: Mapping[str, list[Partial]]) -> list[PatientOutput]:
    """Screen every patient of a group of keys, sorted by patient key."""
    merged = merge_keys(partials)
    return [evaluate_patient(ctx, key, merged[key]) for key in sorted(merged)]
