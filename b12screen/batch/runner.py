"""``run_batch``: plan, stream, screen and write the outputs, with either engine."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from .._version import __version__
from ..core.config import ENGINES
from ..core.dataend import stale_warning
from ..core.model import Priority
from ..core.outcome import FLAGGED_OUTCOMES, OUTCOMES
from ..errors import B12ScreenError, InputError, run_exit_code
from ..screening import Screener
from ..sinks import parquet, summary_page
from ..sinks.glossary import definitions
from ..sinks.rows import csv_header
from ..sinks.summary_page import AGE_ALONE, age_alone_share
from ..sources.files import Discovery, discover, read_deleted
from ..sources.limits import line_cap
from ..sources.lines import CHANGED_SIZE
from ..sources.validation import EVIDENCE, check_policy, extractor_for
from .counts import MIN_CELL, Counts
from .evaluate import EvalContext, PatientOutput
from .local import WorkerLost
from .outputs import (
    COUNTS,
    COVERAGE,
    ERRORS,
    FLAGS,
    OUTPUT_NAMES,
    REPORT,
    REPORT_CSV,
    REPORT_PARQUET,
    SUMMARY,
    SUMMARY_HTML,
    AtomicFile,
    dump_summary,
    error_key,
    existing_outputs,
    fsync_dir,
    merged_errors,
)
from .progress import Progress
from .scan import Plan, Unit, scan
from .stream import Pos, StreamContext, stream_unit
from .workdir import clean_stale, hold_point, make_work

log = logging.getLogger(__name__)

MIB = 1 << 20


class OutputsExistError(B12ScreenError):
    """The output folder already holds outputs and overwriting was not asked for."""


class OutputError(B12ScreenError):
    """The outputs could not be written (a full disk, a read-only or vanished ``--out``)."""


class MissingInputError(B12ScreenError):
    """An input path does not exist (found before any output is written)."""


@dataclass
class BatchOptions:
    """How to run a batch. ``workers`` None: the machine's cores; ``progress`` None: when stderr is a
    terminal; ``unit_bytes`` None: chosen from the input size and worker count."""

    as_of: date
    workers: int | None = None
    engine: str = "local"
    overwrite: bool = False
    progress: bool | None = None
    unit_bytes: int | None = None
    max_line_bytes: int = field(default_factory=line_cap)  # B12SCREEN_MAX_LINE_BYTES or 64 MiB
    validate: str = EVIDENCE  # the validation policy (b12screen.sources.validation)
    spark_master: str | None = None
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    screener_spec: Any = None  # what Spark executors rebuild the Screener from (spark engine only)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # the run record's times
    keep_results: bool = False  # each PatientOutput also carries its ScreeningResult (the Python door)
    min_cell: int = MIN_CELL  # counts.csv suppresses counts below this
    given: Mapping[str, Any] = field(default_factory=dict)  # the options that made the configuration, as given
    follow_up_months: float | None = None  # each PatientOutput also carries its follow-up (b12screen audit)


@dataclass
class BatchResult:
    """The summary written to summary.json, with the error counts behind the exit code."""

    summary: dict[str, Any]
    input_errors: int
    rule_errors: int
    out: Path

    @property
    def exit_code(self) -> int:
        """0 all screened; 1 some input unreadable or a rule failed; 2 nothing readable."""
        return run_exit_code(self.input_errors, self.summary["resources_read"], self.rule_errors)


class Engine(Protocol):
    def stream(self, ctx: StreamContext, units: Sequence[Unit]) -> list[Any]: ...
    def unit_errors(self, unit: int) -> list[tuple[Pos, str]]: ...
    def evaluate(self, ctx: EvalContext) -> Iterator[PatientOutput]: ...
    def close(self) -> None: ...  # the run is over
    def abort(self) -> None: ...  # the run failed or was interrupted: stop the work now


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _input_error_row(error: InputError) -> dict[str, Any]:
    line = None
    location = error.location
    if location and location.startswith("line "):
        head, _, rest = location[5:].partition(" ")
        if head.isdigit():
            line, location = int(head), rest or None
    return {"file": error.source, "line": line, "location": location, "reason": error.reason}


def _line_bases(summaries: Sequence[Any]) -> dict[tuple[int, int], int]:
    counts = sorted((f, i, n) for s in summaries for f, i, n in s.lines)
    bases: dict[tuple[int, int], int] = {}
    running: dict[int, int] = {}
    for file_id, index, lines in counts:
        bases[(file_id, index)] = running.get(file_id, 0)
        running[file_id] = running.get(file_id, 0) + lines
    return bases


def _once_per_file(errors: Iterable[tuple[Pos, str]]) -> Iterator[tuple[Pos, str]]:
    """Errors in file order, a file that changed size while being read named once (at its first range that
    found it so), not once for each range read after the change."""
    changed: set[int] = set()
    for pos, reason in errors:
        if reason.startswith(CHANGED_SIZE):
            if pos[0] in changed:
                continue
            changed.add(pos[0])
        yield pos, reason


def _make_engine(options: BatchOptions, workers: int, work: Path, partitions: int, progress: Progress,
                 screener: Screener) -> Engine:
    if options.engine == "spark":
        from .spark import SparkEngine

        return SparkEngine(options, partitions, progress)
    from .local import LocalEngine

    return LocalEngine(workers, work, partitions, progress, screener)


def run_batch(paths: Sequence[str], out: str | Path, screener: Screener, options: BatchOptions) -> BatchResult:
    """Screen the exports and Bundle folders at ``paths``, writing the four outputs into ``out``.

    Raises :class:`OutputError` when ``out`` cannot be written (nothing is left under a final name). Whatever
    ends the run early (an error, a KeyboardInterrupt) first ends the workers and removes the work folder and
    the temporary outputs."""
    if options.engine not in ENGINES:
        raise B12ScreenError(f"unknown engine {options.engine!r} (choose from {', '.join(ENGINES)})")
    with output_folder(paths, out, options, existing_outputs) as (folder, found):
        return _screen(paths, found, folder, screener, options, time.perf_counter())


@contextlib.contextmanager
def output_folder(paths: Sequence[str], out: str | Path, options: BatchOptions,
                  present: Callable[[Path], list[str]]) -> Iterator[tuple[Path, Discovery]]:
    """Check the policy and that every input exists (the one walk of the input, handed on with the folder),
    make ``out``, refuse the outputs ``present`` finds there unless overwriting, and remove stale work; a lost
    worker or an OS error while the block writes becomes :class:`OutputError`."""
    check_policy(options.validate)
    found = discover(paths)
    if found.missing:
        raise MissingInputError("; ".join(str(e) for e in found.missing))
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        there = present(out)
        if there and not options.overwrite:
            raise OutputsExistError(f"{out} already holds {', '.join(there)} (use --overwrite to replace them)")
        clean_stale(out, legacy=options.overwrite)
        yield out, found
    except WorkerLost as exc:
        raise OutputError(f"no outputs were written in {out}: {exc}") from None
    except OSError as exc:
        raise OutputError(f"cannot write the outputs in {out}: {exc.strerror or exc}") from None


@dataclass
class Screening:
    """A run screened but not yet written: its patients (merged in key order, read lazily from the work
    folder) and its input errors."""

    plan: Plan
    workers: int
    patients: Iterator[PatientOutput]
    side_errors: list[dict[str, Any]]
    unit_errors: Iterator[dict[str, Any]]
    resources: int


@contextlib.contextmanager
def screening(found: Discovery, screener: Screener, options: BatchOptions, work: Path,
              progress: Progress) -> Iterator[Screening]:
    """Plan, stream and screen ``paths`` with the engine of ``options``, spilling into ``work``; the
    engine's workers end when the block does. The batch writes the outputs from this, and
    :func:`b12screen.batch.api.screen_folder` hands the patients to Python."""
    workers = options.workers or default_workers()
    plan = scan(found, options.unit_bytes or (lambda size: min(16 * MIB, max(MIB, size // max(1, workers * 16)))))
    log.info("batch: %d file(s), %d byte(s), %d unit(s), %d worker(s), engine %s",
             len(plan.files), plan.total_bytes, len(plan.units), workers, options.engine)
    partitions = min(1024, max(8 * workers, math.ceil(plan.total_bytes / (64 * MIB))))
    log.info("batch: %d partition(s)", partitions)
    deleted, deleted_errors = read_deleted(plan.deleted_files)
    ctx = StreamContext(extractor_for(screener.terminology, options.validate), {}, deleted, options.max_line_bytes)
    progress.reading(plan.total_bytes)
    engine: Engine | None = None
    try:
        # Medication files first: their resources form the pool medicationReference resolves against.
        med_outputs = [stream_unit(ctx, unit) for unit in plan.medication_units]
        pool: dict[str, Any] = {}
        for med in med_outputs:
            progress.read(med.bytes, med.resources)
            for key, resource in med.medications:
                pool.setdefault(key, resource)
        ctx.pool = pool
        engine = _make_engine(options, workers, work, partitions, progress, screener)
        summaries = engine.stream(ctx, plan.units)
        full_pool = dict(pool)
        for summary in summaries:
            for key, resource in summary.medications:
                full_pool.setdefault(key, resource)
        evaluation = EvalContext(screener, options.as_of, plan.files, full_pool,
                                 _line_bases([*summaries, *med_outputs]), options.validate,
                                 keep_result=options.keep_results, follow_up_months=options.follow_up_months)
        patients = engine.evaluate(evaluation)
        resources = sum(s.resources for s in summaries) + sum(m.resources for m in med_outputs)
        side_errors = sorted(
            [_input_error_row(e) for e in plan.errors + deleted_errors]
            + [evaluation.error(*e) for e in _once_per_file(e for m in med_outputs for e in m.errors)],
            key=error_key,
        )

        def unit_error_rows() -> Iterator[dict[str, Any]]:
            errors = (e for summary in summaries for e in engine.unit_errors(summary.unit))
            for error in _once_per_file(errors):
                yield evaluation.error(*error)

        yield Screening(plan, workers, patients, side_errors, unit_error_rows(), resources)
    except BaseException:  # an error, or an interruption (KeyboardInterrupt): the workers end first
        if engine is not None:
            engine.abort()
        raise
    finally:
        if engine is not None:
            engine.close()


def _screen(paths: Sequence[str], found: Discovery, out: Path, screener: Screener, options: BatchOptions,
            started: float) -> BatchResult:
    started_at = options.clock()
    progress = Progress(options.progress)
    work = make_work(out)
    try:
        with screening(found, screener, options, work, progress) as done:
            run = _run_record(paths, screener, options, done.workers, started_at)
            result = _write(out, work, done.patients, done.side_errors, done.unit_errors, done.resources, started,
                            {"files_read": len(done.plan.files), "files_ignored": len(done.plan.ignored),
                             "definitions": definitions(screener)}, run,
                            options.clock, progress, done.plan.ignored)
    finally:
        try:
            progress.close()
        finally:  # even when ending the engine failed (Spark's JVM gone)
            shutil.rmtree(work, ignore_errors=True)  # with the raw patient data the workers spilled
    return result


def _run_record(paths: Sequence[str], screener: Screener, options: BatchOptions, workers: int,
                started_at: datetime) -> dict[str, Any]:
    """How the run was made (summary.json ``run``); ``ended`` is added when the outputs are written."""
    return {
        "b12screen_version": __version__,
        "ruleset_version": screener.ruleset_version,
        "as_of": options.as_of.isoformat(),
        "profile": screener.profile,
        "config_fingerprint": screener.config.fingerprint(),
        "options": dict(options.given),
        "configuration": screener.effective_configuration(),
        "min_cell": options.min_cell,
        "inputs": [str(p) for p in paths],
        "engine": options.engine,
        "workers": workers if options.engine == "local" else None,
        "spark_master": options.spark_master if options.engine == "spark" else None,
        "started": started_at.isoformat(timespec="seconds"),
    }


def _write(out: Path, work: Path, patients: Iterator[PatientOutput], side_errors: list[dict[str, Any]],
           unit_errors: Iterator[dict[str, Any]], resources: int, started: float, file_counts: dict[str, Any],
           run: dict[str, Any], clock: Callable[[], datetime], progress: Progress,
           ignored: Sequence[str]) -> BatchResult:
    """Write the outputs; with the parquet extra, report.parquet from the rows once the others are written."""
    names = tuple(n for n in OUTPUT_NAMES if n != SUMMARY and (n != REPORT_PARQUET or parquet.available()))
    files = {name: AtomicFile(out / name) for name in names}
    # report.parquet is written from these rows once they are all known
    table = AtomicFile(work / "rows.ndjson") if REPORT_PARQUET in files else None
    rule_tmp = AtomicFile(work / "rule-errors.ndjson")
    try:
        by_outcome: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        by_rule: Counter[str] = Counter()
        by_priority: Counter[str] = Counter({p.value: 0 for p in Priority})
        by_reason: Counter[str] = Counter()
        covered = [0] * len(COVERAGE)
        counts = Counts()
        listed: list[bytes] = []  # flagged rows for summary.html (bounded)
        files[REPORT_CSV].write(csv_header())
        late: list[dict[str, Any]] = []
        count = flagged = rule_errors = age_alone = 0
        for patient in patients:
            resources -= patient.rejected
            if not patient.reported:
                late.extend(patient.input_errors)
                continue
            count += 1
            files[REPORT].write(patient.report + b"\n")
            if patient.flag is not None:
                flagged += 1
                files[FLAGS].write(patient.flag + b"\n")
            files[REPORT_CSV].write(patient.csv)
            if table is not None:
                table.write(patient.row + b"\n")
            progress.written(patient.flagged)
            for i, has in enumerate(patient.coverage):
                covered[i] += has
            if patient.flagged:
                by_priority[patient.priority or ""] += 1  # a flagged patient always has a priority
                by_reason.update(patient.reasons)
                age_alone += tuple(patient.reasons) == (AGE_ALONE,)
                if len(listed) < summary_page.MAX_ROWS:
                    listed.append(patient.row)  # as JSON: 5,000 rows as dicts would hold about 12 MB
            by_outcome[patient.outcome] += 1
            by_rule.update(patient.rules)
            counts.add(patient.outcome, patient.priority, patient.age_band, patient.sex, patient.flagged,
                       patient.reasons, patient.newest)
            for line in patient.rule_errors:
                rule_errors += 1
                rule_tmp.write(line + b"\n")
            late.extend(patient.input_errors)
        hold_point("write")
        if table is not None:
            table.close()
        late.sort(key=error_key)
        input_errors = 0
        shown: list[dict[str, Any]] = []
        for row in merged_errors([side_errors, unit_errors, late]):
            input_errors += 1
            if len(shown) < summary_page.MAX_ERRORS:
                shown.append(row)
            files[ERRORS].write(orjson.dumps(row) + b"\n")
        rule_tmp.close()
        with open(rule_tmp.tmp, "rb") as f:
            shutil.copyfileobj(f, files[ERRORS].handle)
        summary = {
            "patients": count,
            "flagged": flagged,
            "by_outcome": dict(sorted(by_outcome.items())),
            "by_rule": dict(sorted(by_rule.items())),
            "by_priority": dict(by_priority),
            "by_reason": dict(sorted(by_reason.items())),
            "age_75_alone": age_alone_share(age_alone, flagged),
            "errors": input_errors + rule_errors,
            "resources_read": resources,
            **file_counts,
            "ignored_files": list(ignored),
            "coverage": dict(zip(COVERAGE, covered, strict=True)),
            **counts.breakdown(FLAGGED_OUTCOMES),
            "newest_record_date": counts.newest.isoformat() if counts.newest else None,
            "as_of_warning": stale_warning(date.fromisoformat(run["as_of"]), counts.newest),
            "seconds": round(time.perf_counter() - started, 3),
            "run": {**run, "ended": clock().isoformat(timespec="seconds")},
        }
        (out / SUMMARY).unlink(missing_ok=True)  # no summary: the set is incomplete until the end
        if table is None:
            (out / REPORT_PARQUET).unlink(missing_ok=True)  # never leave an earlier run's table beside this one
        files[COUNTS].write(counts.csv(run["min_cell"]))
        files[SUMMARY_HTML].write(summary_page.render(summary, map(orjson.loads, listed), shown))
        if table is not None:  # last: its writer's memory is added to none of the work before
            parquet.write_file(table.tmp, files[REPORT_PARQUET].tmp)
        for name in names:
            files[name].commit()
        summary_file = AtomicFile(out / SUMMARY)
        summary_file.write(dump_summary(summary))
        summary_file.commit()
        fsync_dir(out)
    except BaseException:
        for handle in [*files.values(), rule_tmp, *([table] if table is not None else [])]:
            handle.discard()
        raise
    return BatchResult(summary, input_errors, rule_errors, out)
