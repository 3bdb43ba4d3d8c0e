"""``b12screen screen``: screen files, folders or stdin and print Flags or report entries."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import run_exit_code
from .common import (
    EXIT_OUTPUT,
    as_of_or_data_end,
    dumps,
    echo_err,
    fatal,
    finish,
    load_screener,
    report_ignored,
    rule_config_options,
    settle_as_of,
    validate_option,
)

if TYPE_CHECKING:
    from ..screening import ScreeningResults


def write_results(results: ScreeningResults, fmt: str, out: Any) -> None:
    """Write a Bundle of Flags, NDJSON Flags, or a JSON array of report entries."""
    from ..sinks.flag import flag_json

    if fmt == "report":
        out.write(dumps([r.report() for r in results]) + "\n")
    elif fmt == "ndjson":
        for r in results:
            if r.flagged:
                out.write(dumps(flag_json(r), pretty=False) + "\n")
    else:
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
        entries = [{"resource": flag_json(r)} for r in results if r.flagged]
        if entries:
            bundle["entry"] = entries
        out.write(dumps(bundle) + "\n")


def write_output(results: ScreeningResults, fmt: str, output: str) -> None:
    """Write to stdout (``-``) or to a temporary file beside ``output`` renamed into place, so a failed
    write leaves nothing under the final name."""
    if output == "-":
        write_results(results, fmt, sys.stdout)
        sys.stdout.flush()
        return
    final = Path(output)
    if final.exists() and not final.is_file():  # a device or a pipe: nothing to rename
        with open(final, "w", encoding="utf-8") as f:
            write_results(results, fmt, f)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write_results(results, fmt, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH... | -")
@rule_config_options
@click.option("--format", "fmt", type=click.Choice(["bundle", "ndjson", "report"]), default="bundle",
              show_default=True, help="Bundle of Flags, NDJSON Flags, or a JSON array of report entries.")
@validate_option
@click.option("-o", "--out", "--output", "output", type=click.Path(dir_okay=False), default="-",
              help="Write the result here instead of stdout (written whole, then renamed into place; "
                   "--output is an alias).")
def screen(paths: tuple[str, ...], as_of: str | None, profile: str, config_path: str | None,
           disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
           validate: str, fmt: str, output: str) -> None:
    """Screen FHIR Bundles, resources, JSON arrays or NDJSON from files, folders or stdin (-)."""
    from ..screening import group, screen_grouped
    from ..sources import read_inputs

    when = as_of_or_data_end(as_of)
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    stdin = sys.stdin.buffer if "-" in paths else None  # NDJSON is read a line at a time
    inputs = read_inputs([p for p in paths if p != "-"], stdin)
    if inputs.found.missing:
        fatal("; ".join(str(e) for e in inputs.found.missing))
    report_ignored(inputs.found.ignored)
    grouped = group(screener, inputs.items, validate, inputs.deleted)
    when = settle_as_of(when, grouped.newest_date())
    results = screen_grouped(screener, grouped, when)
    for error in results.errors:
        echo_err(f"error: {error}")
    rule_errors = 0
    for result in results:
        for err in result.rule_errors:
            rule_errors += 1
            echo_err(f"error: rule {err['rule']} failed for one patient ({err['error']})")
    try:
        write_output(results, fmt, output)
    except OSError as exc:
        where = "stdout" if output == "-" else output
        fatal(f"cannot write the output {where}: {exc.strerror or exc}", EXIT_OUTPUT)
    flagged = sum(1 for r in results if r.flagged)
    echo_err(
        f"screened {len(results)} patient(s) from {results.resources_read} resource(s) as of {when.isoformat()}: "
        f"{flagged} flagged, {len(results.errors)} input error(s)"
        + (f", {rule_errors} rule error(s)" if rule_errors else "")
    )
    finish(run_exit_code(len(results.errors), results.resources_read, rule_errors))
