"""``b12screen batch``: screen Bulk Data exports and folders of per-patient Bundles into the output files."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import click

from ..core.config import ENGINES
from .common import (
    EXIT_OUTPUT,
    EXIT_PARTIAL,
    EXIT_USAGE,
    as_of_or_data_end,
    echo_err,
    exits_on_interrupt,
    fatal,
    finish,
    given_options,
    load_screener,
    report_ignored,
    rule_config_options,
    run_options,
    settle_as_of,
    validate_option,
)
from .export import add_to_batch_outputs, describe, export_options, run_export

SPARK_MASTER_ENV = "B12SCREEN_SPARK_MASTER"


def _spark_conf(values: tuple[str, ...]) -> dict[str, str]:
    conf = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--spark-conf")
        conf[key.strip()] = setting.strip()
    return conf


@click.command()
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option("-o", "--out", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the outputs: flags.ndjson, report.ndjson/.csv/.parquet, counts.csv, "
                   "errors.ndjson, summary.html and summary.json.")
@rule_config_options
@validate_option
@run_options
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: processes on this machine; spark: Apache Spark through pyspark.")
@click.option("--spark-master", default=None, metavar="URL",
              help=f"Spark master (default ${SPARK_MASTER_ENV}, else local[*]).")
@click.option("--spark-conf", multiple=True, metavar="KEY=VALUE", help="Extra Spark setting (repeatable).")
@click.option("--min-cell", type=click.IntRange(min=1), default=11, show_default=True,
              help="counts.csv suppresses counts below this (small cells).")
@click.option("--fhir-server", metavar="URL",
              help="Run a Bulk Data export from this FHIR server into OUT/export/ and screen it (no PATHs).")
@export_options
@click.option("--unit-mb", type=click.FloatRange(min=0.001), default=None, hidden=True,
              help="Size of a unit of work in MiB (tuning and tests).")
@exits_on_interrupt("the batch stopped; its workers, work folder and temporary files were removed")
def batch(paths: tuple[str, ...], out: str, as_of: str | None, profile: str, config_path: str | None,
          disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
          validate: str, workers: int | None, engine: str, spark_master: str | None, spark_conf: tuple[str, ...],
          min_cell: int, overwrite: bool, progress: bool | None, unit_mb: float | None, fhir_server: str | None,
          **export_opts: Any) -> None:
    """Screen FHIR Bulk Data exports (folders of NDJSON, .ndjson.gz too) and/or folders of per-patient
    Bundles; write flags.ndjson, report.ndjson/.csv/.parquet, counts.csv, errors.ndjson, summary.html and
    summary.json into --out.

    Exit code 0: everything screened; 1: some input unreadable or a rule failed (all reported in
    errors.ndjson); 2: usage error, outputs already present without --overwrite, or nothing readable;
    3: the outputs could not be written (full disk, read-only or vanished --out); 130, 143: interrupted
    (SIGINT, SIGTERM), its work and temporary files removed.
    """
    from ..batch import BatchOptions, OutputError, run_batch
    from ..batch.outputs import existing_outputs
    from ..errors import B12ScreenError
    from ..sources.files import discover

    when = as_of_or_data_end(as_of)
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    exported: Any = None
    plan: Any = None
    if fhir_server:
        if paths:
            raise click.UsageError("give either PATHs or --fhir-server, not both")
        if existing_outputs(Path(out)) and not overwrite:
            fatal(f"{out} already holds outputs (use --overwrite to replace them)", EXIT_USAGE)
        exported, plan = run_export(screener, fhir_server, Path(out) / "export",
                                    {**export_opts, "progress": progress})
        echo_err(f"export: {describe(exported)}")
        paths = (str(Path(out) / "export"),)
    elif not paths:
        raise click.UsageError("give PATHs to screen or --fhir-server")
    options = BatchOptions(
        as_of=when or date.today(), min_cell=min_cell,  # data-end: settled below, after a first pass
        given=given_options(config_path, disable, enable, settings, profile), validate=validate,
        workers=workers, engine=engine, overwrite=overwrite, progress=progress,
        unit_bytes=int(unit_mb * (1 << 20)) if unit_mb else None,
        spark_master=spark_master or os.environ.get(SPARK_MASTER_ENV) or "local[*]",
        spark_conf=_spark_conf(spark_conf),
        screener_spec={"profile": profile, "config": screener.config, "strict": strict_plugins},
    )
    try:
        if when is None:
            from ..batch.api import newest_record_date

            if missing := discover(list(paths)).missing:
                raise B12ScreenError("; ".join(str(e) for e in missing))
            if (present := existing_outputs(Path(out))) and not overwrite:  # before a first pass, not after
                raise B12ScreenError(f"{out} already holds {', '.join(present)} (use --overwrite to replace them)")
            options.as_of = settle_as_of(None, newest_record_date(list(paths), options, screener))
        result = run_batch(list(paths), out, screener, options)
    except OutputError as exc:
        fatal(str(exc), EXIT_OUTPUT)
    except (B12ScreenError, ImportError) as exc:  # outputs present, a missing input, Spark cannot start
        fatal(str(exc), EXIT_USAGE)
    if exported is not None:
        add_to_batch_outputs(result.out, result.summary, exported, plan.rows())
    s: dict[str, Any] = result.summary
    report_ignored(s["ignored_files"])
    if s["as_of_warning"]:
        echo_err(f"warning: {s['as_of_warning']}")
    echo_err(
        f"batch: {s['patients']:,} patient(s) from {s['resources_read']:,} resource(s) as of {options.as_of}: "
        f"{s['flagged']:,} flagged, {result.input_errors:,} input error(s), {result.rule_errors:,} rule error(s) "
        f"in {s['seconds']:.1f} s -> {result.out}"
        + (f" (see {result.out / 'errors.ndjson'})" if s["errors"] else "")
    )
    if result.exit_code or (exported is not None and exported.errors):
        finish(result.exit_code or EXIT_PARTIAL)
