"""``b12screen audit``: what each rule would have found at a past date, and what followed (docs/analyst/audit.md)."""

from __future__ import annotations

from typing import Any

import click

from .common import (
    EXIT_OUTPUT,
    EXIT_USAGE,
    as_of_date,
    echo_err,
    exits_on_interrupt,
    fatal,
    finish,
    load_screener,
    report_ignored,
    rule_config_options,
    run_options,
    validate_option,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--follow-up-months", type=click.FloatRange(min=0, min_open=True), required=True, metavar="N",
              help="Length of the follow-up window after --as-of, in months of 30.44 days.")
@click.option("-o", "--out", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for audit.csv, audit_patients.csv, audit_errors.ndjson, audit.html and audit.json.")
@rule_config_options
@validate_option
@run_options
@exits_on_interrupt("the audit stopped; its workers, work folder and temporary files were removed")
def audit(paths: tuple[str, ...], follow_up_months: float, out: str, as_of: str | None, profile: str,
          config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...],
          strict_plugins: bool, validate: str, workers: int | None, overwrite: bool,
          progress: bool | None) -> None:
    """Screen every patient of FHIR Bulk Data exports and/or folders of per-patient Bundles as of --as-of,
    using only what was recorded by then, and count per rule who was tested for B12 in the follow-up
    window, with what band, and who was diagnosed or treated; write audit.csv, audit_patients.csv,
    audit_errors.ndjson, audit.html and audit.json into --out.

    Exit codes as for batch: 0 everything screened; 1 some input unreadable or a rule failed (in
    audit_errors.ndjson); 2 usage error, outputs present without --overwrite, or nothing readable; 3 the
    outputs could not be written; 130, 143 interrupted.
    """
    from ..batch import BatchOptions, OutputError
    from ..batch.audit import run_audit
    from ..errors import B12ScreenError

    if as_of is None:
        raise click.UsageError("an audit needs --as-of DATE (the date to screen at)")
    when = as_of_date(as_of)
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    options = BatchOptions(as_of=when, validate=validate, workers=workers, overwrite=overwrite, progress=progress)
    try:
        result = run_audit(list(paths), out, screener, options, follow_up_months)
    except OutputError as exc:
        fatal(str(exc), EXIT_OUTPUT)
    except B12ScreenError as exc:  # outputs present, a missing input
        fatal(str(exc), EXIT_USAGE)
    s: dict[str, Any] = result.summary
    report_ignored(s["run"]["files_ignored"])
    everyone = s["groups"][-1]
    found = (f"{everyone['tested']:,} tested in the window, {everyone['deficient']:,} deficient"
             if s["follow_up_results"] else s["message"])
    echo_err(
        f"audit: {s['screened']:,} patient(s) screened as of {when.isoformat()}: {s['alerts']:,} alert(s); "
        f"{found}; {result.input_errors:,} input error(s), {result.rule_errors:,} rule error(s) -> {result.out}"
        + (f" (see {result.out / 'audit_errors.ndjson'})" if s["errors"] else "")
    )
    finish(result.exit_code)
