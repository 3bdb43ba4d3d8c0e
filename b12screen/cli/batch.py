"""``b12screen batch``: screen Bulk Data exports and folders of per-patient Bundles into four files."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_OUTPUT,
    EXIT_PARTIAL,
    EXIT_USAGE,
    as_of_date,
    echo_err,
    exits_on_interrupt,
    make_screener,
    report_ignored,
    report_plugin_failures,
    rule_config,
    rule_config_options,
    run_options,
    validate_option,
)
from .export import add_to_batch_outputs, describe, export_options, run_export

SPARK_MASTER_ENV = "B12SCREEN_SPARK_MASTER"
ENGINES = ("local", "spark")  # b12screen.batch.runner checks the same names


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
              help="Folder for flags.ndjson, report.ndjson, errors.ndjson and summary.json.")
@rule_config_options
@validate_option
@run_options
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: processes on this machine; spark: Apache Spark through pyspark.")
@click.option("--spark-master", default=None, metavar="URL",
              help=f"Spark master (default ${SPARK_MASTER_ENV}, else local[*]).")
@click.option("--spark-conf", multiple=True, metavar="KEY=VALUE", help="Extra Spark setting (repeatable).")
@click.option("--fhir-server", metavar="URL",
              help="Run a Bulk Data export from this FHIR server into OUT/export/ and screen it (no PATHs).")
@export_options
@click.option("--unit-mb", type=click.FloatRange(min=0.001), default=None, hidden=True,
              help="Size of a unit of work in MiB (tuning and tests).")
@exits_on_interrupt("the batch stopped; its workers, work folder and temporary files were removed")
def batch(paths: tuple[str, ...], out: str, as_of: str | None, profile: str, config_path: str | None,
          disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
          validate: str, workers: int | None, engine: str, spark_master: str | None, spark_conf: tuple[str, ...],
          overwrite: bool, progress: bool | None, unit_mb: float | None, fhir_server: str | None,
          **export_opts: Any) -> None:
    """Screen FHIR Bulk Data exports (folders of NDJSON, .ndjson.gz too) and/or folders of per-patient
    Bundles; write flags.ndjson, report.ndjson, errors.ndjson and summary.json into --out.

    Exit code 0: everything screened; 1: some input unreadable or a rule failed (all reported in
    errors.ndjson); 2: usage error, outputs already present without --overwrite, or nothing readable;
    3: the outputs could not be written (full disk, read-only or vanished --out); 130, 143: interrupted
    (SIGINT, SIGTERM), its work and temporary files removed.
    """
    from ..batch import BatchOptions, OutputError, run_batch
    from ..batch.outputs import existing_outputs
    from ..errors import B12ScreenError

    when = as_of_date(as_of)
    try:
        config = rule_config(config_path, disable, enable, settings)
        screener = make_screener(profile, config, strict_plugins)
    except B12ScreenError as exc:
        echo_err(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    report_plugin_failures(screener)
    exported: Any = None
    if fhir_server:
        if paths:
            raise click.UsageError("give either PATHs or --fhir-server, not both")
        if existing_outputs(Path(out)) and not overwrite:
            echo_err(f"error: {out} already holds outputs (use --overwrite to replace them)")
            sys.exit(EXIT_USAGE)
        exported = run_export(screener, fhir_server, Path(out) / "export", {**export_opts, "progress": progress})
        echo_err(f"export: {describe(exported)}")
        paths = (str(Path(out) / "export"),)
    elif not paths:
        raise click.UsageError("give PATHs to screen or --fhir-server")
    options = BatchOptions(
        as_of=when, validate=validate, workers=workers, engine=engine, overwrite=overwrite, progress=progress,
        unit_bytes=int(unit_mb * (1 << 20)) if unit_mb else None,
        spark_master=spark_master or os.environ.get(SPARK_MASTER_ENV) or "local[*]",
        spark_conf=_spark_conf(spark_conf),
        screener_spec={"profile": profile, "config": config, "strict": strict_plugins},
    )
    try:
        result = run_batch(list(paths), out, screener, options)
    except OutputError as exc:
        echo_err(f"error: {exc}")
        sys.exit(EXIT_OUTPUT)
    except (B12ScreenError, ImportError) as exc:  # outputs present, a missing input, Spark cannot start
        echo_err(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    if exported is not None:
        add_to_batch_outputs(result.out, result.summary, exported)
    s: dict[str, Any] = result.summary
    report_ignored(s["ignored_files"])
    echo_err(
        f"batch: {s['patients']:,} patient(s) from {s['resources_read']:,} resource(s) as of {when.isoformat()}: "
        f"{s['flagged']:,} flagged, {result.input_errors:,} input error(s), {result.rule_errors:,} rule error(s) "
        f"in {s['seconds']:.1f} s -> {result.out}"
        + (f" (see {result.out / 'errors.ndjson'})" if s["errors"] else "")
    )
    if result.exit_code or (exported is not None and exported.errors):
        sys.exit(result.exit_code or EXIT_PARTIAL)
