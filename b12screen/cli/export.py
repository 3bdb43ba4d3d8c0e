"""``b12screen export``: download a FHIR Bulk Data export of what the rules read (and the options
``batch --fhir-server`` shares)."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import (
    EXIT_PARTIAL,
    dumps,
    echo_err,
    exit_interrupted,
    fatal,
    finish,
    load_screener,
    rule_config_options,
)
from .fetch import make_auth

if TYPE_CHECKING:
    from ..screening import Screener
    from ..sources.bulkexport import ExportResult
    from ..sources.negotiate import TypePlan

#: A FHIR instant: date, time to the second (fractions allowed) and a zone.
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
#: Resource types whose export ``--type-filter`` narrows by the codes of the value sets.
FILTERED_TYPES = ("Condition", "Observation", "Procedure")


def export_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of ``export`` and ``batch --fhir-server``."""
    options = [
        click.option("--group", metavar="ID", help="Export one Group (Group/ID/$export)."),
        click.option("--patient-level", is_flag=True, help="Export all patients (Patient/$export)."),
        click.option("--since", metavar="INSTANT",
                     help="Only resources changed since (_since), e.g. 2026-11-30T00:00:00Z."),
        click.option("--type", "types", metavar="TYPE[,TYPE]",
                     help="Export these resource types (default: every type the rules read, as far as the server "
                          "has them)."),
        click.option("--type-filter", is_flag=True,
                     help="Narrow Condition/Observation/Procedure by the value-set codes (_typeFilter) "
                          "where the server's CapabilityStatement declares search by code."),
        click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
                     help="File holding a bearer token (default: $B12SCREEN_FHIR_TOKEN)."),
        click.option("--client-id", help="SMART Backend Services client id (with --private-key)."),
        click.option("--private-key", type=click.Path(dir_okay=False, exists=True),
                     help="Private key (PEM or JWK JSON) that signs the client assertion."),
        click.option("--key-id", help="kid of the registered public key."),
        click.option("--alg", type=click.Choice(["RS384", "ES384"]), default="RS384", show_default=True),
        click.option("--parallel", type=click.IntRange(1, 16), default=4, show_default=True,
                     help="Files downloaded at once."),
        click.option("--max-file-mb", type=click.FloatRange(min=0, min_open=True), default=10240.0, show_default=True,
                     help="Largest file accepted (MiB)."),
        click.option("--file-timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True,
                     help="Seconds allowed per file download."),
        click.option("--max-wait", type=click.FloatRange(min=1), default=86400.0, show_default=True,
                     help="Seconds allowed for the server to prepare the export."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
                     help="Longest one kick-off or status request may take, headers and body included (s)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def export_types() -> tuple[str, ...]:
    """The resource types the extractor turns into facts: everything any rule (plugins too) can read."""
    from ..sources.extract import UNDERSTOOD_TYPES

    return tuple(sorted(UNDERSTOOD_TYPES))


def value_set_codes(screener: Screener) -> dict[str, list[str]]:
    """``system|code`` of every value set in force (plugins included), for the filtered types."""
    codes = sorted({f"{system}|{code}" for info in screener.terminology.sets.values()
                    for system, values in info.codes.items() for code in values})
    return {rtype: codes for rtype in FILTERED_TYPES}


def run_export(screener: Screener, fhir_server: str, out: Path, opts: dict[str, Any]
               ) -> tuple[ExportResult, TypePlan]:
    """Run the export into ``out`` with the command's options: (result, the types asked for and those
    missing); exits with a message on failure."""
    from ..errors import B12ScreenError
    from ..sources.bulkdata import type_filters
    from ..sources.bulkexport import BulkExporter, ExportLimits, ExportRequest
    from ..sources.fhirclient import FhirClient, SmartBackendAuth
    from ..sources.fhirhttp import FhirError
    from ..sources.negotiate import run_dropping_refused

    if opts["group"] and opts["patient_level"]:
        raise click.UsageError("give either --group or --patient-level, not both")
    if opts["since"] and not INSTANT.fullmatch(opts["since"]):
        raise click.BadParameter("expected a FHIR instant such as 2026-11-30T00:00:00Z", param_hint="--since")
    wanted = _wanted_types(opts.get("types"))
    try:
        auth = make_auth(opts["token_file"], opts["client_id"], opts["private_key"], opts["key_id"], opts["alg"],
                         None, "")
        client = FhirClient(fhir_server, auth=auth, timeout=(min(5.0, opts["timeout"]), opts["timeout"]))
    except B12ScreenError as exc:
        fatal(str(exc))
    capability = _public_json(client, "metadata", "metadata")
    smart = _public_json(client, ".well-known/smart-configuration", "smart-configuration") \
        if isinstance(auth, SmartBackendAuth) else None
    plan = _negotiated(screener, wanted, capability, smart)
    if isinstance(auth, SmartBackendAuth):
        auth.scope = " ".join(plan.scopes)
    types = plan.types
    if not types:
        fatal("the server exports none of the resource types asked for")
    filters: tuple[str, ...] = ()
    if opts["type_filter"]:
        filters = _filters(capability, types, value_set_codes(screener), type_filters)
    level = "group" if opts["group"] else "patient" if opts["patient_level"] else "system"
    request = ExportRequest(types, level, opts["group"], opts["since"], filters)
    limits = ExportLimits(parallel=opts["parallel"], max_file_bytes=round(opts["max_file_mb"] * (1 << 20)),
                          file_seconds=opts["file_timeout"], max_export_seconds=opts["max_wait"])
    bar = _bar(opts["progress"])
    exporter = BulkExporter(client, out, limits, on_progress=lambda text: bar and bar.set_postfix_str(text))
    try:
        try:
            return run_dropping_refused(exporter, request, plan, echo_err), plan
        except FhirError as exc:
            if filters and exc.status == 400 and exporter.status_url is None:
                echo_err("warning: the server refused _typeFilter; exporting those types unfiltered")
                request = ExportRequest(plan.types, level, opts["group"], opts["since"])
                return run_dropping_refused(exporter, request, plan, echo_err), plan
            raise
    except FhirError as exc:
        hint = " (--type TYPE[,TYPE] leaves out types the server does not know)" if "invalid_scope" in str(exc) else ""
        fatal(f"{exc}{hint}")
    except OSError as exc:
        fatal(f"cannot write to {out} ({exc.strerror or exc})")
    except KeyboardInterrupt as exc:  # SIGINT; SIGTERM too within batch --fhir-server
        cancelled = exporter.cancel()
        exit_interrupted(getattr(exc, "signum", signal.SIGINT), "the export job was cancelled on the server"
                         if cancelled else "the export job could not be cancelled")
    finally:
        if bar:
            bar.close()


def _wanted_types(value: str | None) -> tuple[str, ...]:
    """``--type`` as a tuple of names, or every type the rules read; a usage error names an unknown type."""
    from ..sources.negotiate import parse_types

    if value is None:
        return export_types()
    try:
        return parse_types(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--type") from None


def _public_json(client: Any, path: str, what: str) -> Any:
    """The JSON at ``[base]/path`` (the CapabilityStatement, the SMART configuration), asked for without
    credentials (with a bearer token when the server wants one); None when the server has none to give."""
    from ..sources.fhirclient import BearerToken
    from ..sources.fhirhttp import FhirError

    try:
        response = client.send("GET", f"{client.base_url}/{path}", use_auth=False)
        if response.status_code in (401, 403) and isinstance(client.auth, BearerToken):
            response = client.send("GET", f"{client.base_url}/{path}")
        return client.parse_json(response, what) if response.status_code == 200 else None
    except FhirError:
        return None


def _negotiated(screener: Screener, wanted: tuple[str, ...], capability: Any, smart: Any) -> TypePlan:
    """The types (and scopes) to ask for; a warning line per type the rules read that the export will lack."""
    from ..sources.negotiate import missing_line, plan_types

    plan = plan_types(wanted, capability, smart)
    plan.rule_ids = tuple(screener.rules_by_id)
    for rtype in sorted(set(export_types()) - set(wanted)):
        plan.missing[rtype] = "not asked for (--type)"
    for row in plan.rows():
        echo_err(f"warning: {missing_line(row)}")
    return plan


def _filters(capability: Any, types: tuple[str, ...], codes: dict[str, list[str]], build: Callable[..., Any]
             ) -> tuple[str, ...]:
    filters, unfiltered = build(types, codes, capability if isinstance(capability, dict) else None)
    if unfiltered:
        echo_err(f"warning: --type-filter: the server's CapabilityStatement does not declare search by code "
                 f"for {', '.join(unfiltered)}; exporting those types unfiltered")
    return tuple(filters)


def _bar(enabled: bool | None) -> Any:
    if not (sys.stderr.isatty() if enabled is None else enabled):
        return None
    import tqdm

    return tqdm.tqdm(file=sys.stderr, desc="export", bar_format="{desc}: {elapsed} {postfix}", leave=False)


def write_errors(path: Path, rows: list[dict[str, Any]]) -> None:
    """Error rows as NDJSON (``errors.ndjson``)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row, pretty=False) + "\n")


def add_to_batch_outputs(out: Path, summary: dict[str, Any], exported: ExportResult,
                         missing: list[dict[str, Any]] | None = None) -> None:
    """Add the export's error rows to a batch's ``errors.ndjson`` and its figures to ``summary.json``
    (``export``: files, bytes, errors, seconds waiting and downloading, the types the rules read that the
    export lacks: ``missing_types``); both rewritten atomically."""
    from ..batch.outputs import AtomicFile, dump_summary

    if exported.errors:
        errors = AtomicFile(out / "errors.ndjson")
        try:
            errors.write((out / "errors.ndjson").read_bytes())
            errors.write(b"".join(dumps(row, pretty=False).encode() + b"\n" for row in exported.errors))
            errors.commit()
        except BaseException:
            errors.discard()
            raise
    summary["errors"] = summary.get("errors", 0) + len(exported.errors)
    summary["export"] = {"files": len(exported.files), "bytes": exported.bytes, "errors": len(exported.errors),
                         "reexported": exported.reexported, "seconds_waiting": round(exported.seconds_waiting, 3),
                         "seconds_downloading": round(exported.seconds_downloading, 3),
                         "missing_types": missing or []}
    final = AtomicFile(out / "summary.json")
    final.write(dump_summary(summary))
    final.commit()


def describe(result: ExportResult) -> str:
    return (f"{len(result.files)} file(s), {result.bytes:,} byte(s) downloaded ({result.skipped} already whole), "
            f"{result.seconds_waiting:.1f} s waiting for the server, {result.seconds_downloading:.1f} s downloading"
            + (", after one re-export (a file had expired)" if result.reexported else ""))


@click.command()
@click.option("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL (https; http only on loopback).")
@click.option("-o", "--out", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder: export/ (files, manifest.json) and errors.ndjson.")
@export_options
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@rule_config_options
def export(fhir_server: str, out: str, as_of: str | None, profile: str, config_path: str | None,
           disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
           **opts: Any) -> None:
    """Download a FHIR Bulk Data export of the types the rules read into OUT/export/ (resumable).

    Exit code 0: everything downloaded; 1: the server reported errors or a file could not be
    downloaded (see errors.ndjson); 2: usage error or the export failed; 130: interrupted (job cancelled).
    """
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    folder = Path(out)
    result, _plan = run_export(screener, fhir_server, folder / "export", opts)
    write_errors(folder / "errors.ndjson", result.errors)
    echo_err(f"export: {describe(result)} -> {folder / 'export'}")
    if result.errors:
        echo_err(f"export: {len(result.errors)} error(s), see {folder / 'errors.ndjson'}")
        finish(EXIT_PARTIAL)
