"""``run_audit``: screen every patient at the as-of date on the batch engine, look at what followed in the
follow-up window, and write ``audit.csv``, ``audit_patients.csv``, ``audit_errors.ndjson``, ``audit.html``
and, last, ``audit.json`` atomically (docs/analyst/audit.md)."""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .._version import __version__
from ..errors import B12ScreenError
from ..screening import Screener
from ..sinks import audit_page
from .auditstats import (
    AUDIT_CSV,
    AUDIT_ERRORS,
    AUDIT_HTML,
    AUDIT_JSON,
    AUDIT_NAMES,
    AUDIT_PATIENTS,
    GROUP_COLUMNS,
    PATIENT_COLUMNS,
    AuditTally,
    csv_value,
)
from .followup import window_end
from .outputs import AtomicFile, error_key, fsync_dir, merged_errors
from .progress import Progress
from .runner import (
    BatchOptions,
    BatchResult,
    Screening,
    output_folder,
    screening,
)
from .workdir import hold_point, make_work


def csv_record(cells: Iterable[Any]) -> bytes:
    """One RFC 4180 CSV record (``\\r\\n``)."""
    out = io.StringIO()
    csv.writer(out).writerow([csv_value(c) for c in cells])
    return out.getvalue().encode("utf-8")


def configuration(screener: Screener) -> dict[str, Any]:
    """The effective rule configuration: profile, rules on and off, parameters, every setting."""
    config = screener.config
    return {
        "profile": screener.profile,
        "rules_enabled": sorted(r.id for r in screener.rules if screener.enabled(r)),
        "rules_disabled": sorted(config.disabled_rules),
        "rule_parameters": {k: dict(v) for k, v in sorted(config.rules.items())},
        "settings": dict(screener.settings),
        "fingerprint": config.fingerprint(),
    }


def run_audit(paths: Sequence[str], out: str | Path, screener: Screener, options: BatchOptions,
              follow_up_months: float) -> BatchResult:
    """Audit the exports and Bundle folders at ``paths`` as of ``options.as_of`` with a follow-up window of
    ``follow_up_months``; the result's ``summary`` is what ``audit.json`` holds. Raises what
    :func:`~b12screen.batch.run_batch` raises, for the same reasons."""
    if follow_up_months <= 0:
        raise B12ScreenError(f"the follow-up window must be longer than 0 months, got {follow_up_months:g}")
    with output_folder(paths, out, options, _present) as (folder, found):
        work = make_work(folder)
        progress = Progress(options.progress)
        try:
            with screening(found, screener, dataclasses.replace(options, follow_up_months=follow_up_months),
                           work, progress) as done:
                run = {"b12screen_version": __version__, "ruleset_version": screener.ruleset_version,
                       "as_of": options.as_of.isoformat(), "follow_up_months": follow_up_months,
                       "window_end": window_end(options.as_of, follow_up_months).isoformat(),
                       "configuration": configuration(screener), "inputs": [str(p) for p in paths],
                       "files_read": [str(f) for f in done.plan.files],
                       "files_ignored": list(done.plan.ignored), "workers": done.workers}
                return _write(folder, work, done, run, progress)
        finally:
            progress.close()
            shutil.rmtree(work, ignore_errors=True)  # with the raw patient data the workers spilled


def _present(out: Path) -> list[str]:
    return [name for name in AUDIT_NAMES if (out / name).exists()]


def _write(out: Path, work: Path, done: Screening, run: dict[str, Any], progress: Progress) -> BatchResult:
    files = {name: AtomicFile(out / name) for name in AUDIT_NAMES}
    rule_tmp = AtomicFile(work / "rule-errors.ndjson")  # written after the input errors, as batch does
    try:
        tally = AuditTally()
        late: list[dict[str, Any]] = []
        rule_errors = 0
        resources = done.resources
        files[AUDIT_PATIENTS].write(csv_record(PATIENT_COLUMNS))
        for patient in done.patients:
            resources -= patient.rejected
            late.extend(patient.input_errors)
            if not patient.reported:
                continue
            flagged = patient.flag is not None
            progress.written(flagged)
            follow = patient.follow_up
            assert follow is not None  # every screened patient's, as the options asked
            tally.add(patient.outcome, flagged, patient.rules, follow)
            for line in patient.rule_errors:
                rule_errors += 1
                rule_tmp.write(line + b"\n")
            files[AUDIT_PATIENTS].write(csv_record(
                (patient.key, patient.outcome, patient.priority, ";".join(patient.rules), *follow)))
        hold_point("write")
        late.sort(key=error_key)
        input_errors = 0
        for row in merged_errors([done.side_errors, done.unit_errors, late]):
            input_errors += 1
            files[AUDIT_ERRORS].write(orjson.dumps(row) + b"\n")
        rule_tmp.close()
        with open(rule_tmp.tmp, "rb") as f:
            shutil.copyfileobj(f, files[AUDIT_ERRORS].handle)
        as_of = date.fromisoformat(run["as_of"])
        summary = {**tally.report(as_of, date.fromisoformat(run["window_end"])), "resources_read": resources,
                   "errors": input_errors + rule_errors, "run": run}
        files[AUDIT_CSV].write(csv_record(GROUP_COLUMNS))
        for row in summary["groups"]:
            files[AUDIT_CSV].write(csv_record(row[c] for c in GROUP_COLUMNS))
        files[AUDIT_HTML].write(audit_page.render(summary))
        (out / AUDIT_JSON).unlink(missing_ok=True)  # no audit.json: the set is incomplete until the end
        files[AUDIT_JSON].write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        for name in AUDIT_NAMES:
            files[name].commit()
        fsync_dir(out)
    except BaseException:
        for handle in [*files.values(), rule_tmp]:
            handle.discard()
        raise
    return BatchResult(summary, input_errors, rule_errors, out)
