"""``b12screen fetch``: read one patient from a FHIR REST server, screen it, optionally write the Flag back."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from ..core.config import PROFILES
from .common import (
    EXIT_PARTIAL,
    EXIT_USAGE,
    PROFILE_HELP,
    as_of_date,
    echo_err,
    fatal,
    finish,
    load_screener,
    validate_option,
    verbose_option,
)

if TYPE_CHECKING:
    from ..sources.fhirclient import Auth, FhirClient

TOKEN_ENV = "B12SCREEN_FHIR_TOKEN"


def _load_private_key(path: str) -> Any:
    """A PEM private key, or a private JWK (JSON) as PyJWT accepts it."""
    import jwt

    raw = Path(path).read_bytes()
    if raw.lstrip().startswith(b"{"):
        return jwt.PyJWK(json.loads(raw)).key
    return raw


def make_auth(token_file: str | None, client_id: str | None, private_key: str | None, key_id: str | None,
          alg: str, token_url: str | None, scope: str) -> Auth | None:
    from ..sources.fhirclient import BearerToken, SmartBackendAuth

    token = Path(token_file).read_text(encoding="utf-8").strip() if token_file else os.environ.get(TOKEN_ENV)
    if client_id or private_key:
        if not (client_id and private_key):
            raise click.UsageError("SMART Backend Services needs both --client-id and --private-key")
        if token_file:
            raise click.UsageError("give either a bearer token or SMART Backend Services credentials, not both")
        return SmartBackendAuth(client_id, _load_private_key(private_key), algorithm=alg, kid=key_id,
                                token_url=token_url, scope=scope)
    return BearerToken(token) if token else None


def _default_scope(write_back: bool) -> str:
    from ..sources.fhirqueries import RECORD_PREFETCH

    types = sorted({d.resource_type for d in RECORD_PREFETCH} | {"Medication"})
    scopes = [f"system/{t}.read" for t in types]
    if write_back:  # earlier Flags are searched for, then created or updated
        scopes += [] if "system/Flag.read" in scopes else ["system/Flag.read"]
        scopes.append("system/Flag.write")
    return " ".join(scopes)


@click.command()
@click.option("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL (https; http only on loopback).")
@click.option("--patient", "patient_id", required=True, metavar="ID", help="Patient.id to screen.")
@click.option("--write-back", is_flag=True,
              help="Keep the patient's b12screen Flag on the server current: create it (conditional create), set "
                   "the earlier one inactive, or set it inactive when no longer warranted "
                   "(docs/integrator/fhir-servers.md).")
@click.option("--dry-run", is_flag=True, help="With --write-back: print what it would write, write nothing.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help=f"File holding a bearer token (default: the {TOKEN_ENV} environment variable).")
@click.option("--client-id", help="SMART Backend Services client id (with --private-key).")
@click.option("--private-key", type=click.Path(dir_okay=False, exists=True),
              help="Private key (PEM or JWK JSON) that signs the client assertion.")
@click.option("--key-id", help="kid of the registered public key.")
@click.option("--alg", type=click.Choice(["RS384", "ES384"]), default="RS384", show_default=True)
@click.option("--token-url", help="Token endpoint (default: from .well-known/smart-configuration).")
@click.option("--scope", help="Scopes to request (default: system/<type>.read for each type read).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Longest one request may take, headers and body included (s); also the read timeout.")
@click.option("--deadline", "deadline_seconds", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Longest the whole fetch may take (s), retries included; a Retry-After past it fails at once.")
@click.option("--max-response-mb", type=click.FloatRange(min=0.001), default=32.0, show_default=True,
              help="Largest response body read (MiB); a larger one is an error.")
@click.option("--retries", type=int, default=3, show_default=True, help="Retries on 429/5xx/timeouts.")
@click.option("--max-pages", type=int, default=50, show_default=True, help="Pages per search at most.")
@click.option("--max-medication-reads", type=click.IntRange(min=0), default=50, show_default=True,
              help="Referenced Medication resources read at most (more: reported as incomplete, exit 1).")
@click.option("--format", "fmt", type=click.Choice(["report", "bundle", "ndjson"]), default="report",
              show_default=True, help="Report entry, Bundle of the Flag, or NDJSON Flag.")
@click.option("--as-of", "as_of", metavar="DATE", help="Evaluation date (YYYY-MM-DD); default today.")
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True, help=PROFILE_HELP)
@click.option("--rules-config", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Rule configuration file (TOML or JSON; --config is an alias).")
@click.option("--disable", multiple=True, metavar="RULE", help="Switch a rule off (repeatable).")
@click.option("--enable", multiple=True, metavar="RULE", help="Switch a rule back on (repeatable).")
@click.option("--set", "settings", multiple=True, metavar="RULE.PARAM=VALUE", help="Set a rule parameter.")
@click.option("--strict-plugins", is_flag=True, help="Fail when a plugin cannot be loaded.")
@verbose_option
@validate_option
def fetch(fhir_server: str, patient_id: str, write_back: bool, token_file: str | None, client_id: str | None,
          private_key: str | None, key_id: str | None, alg: str, token_url: str | None, scope: str | None,
          timeout: float, deadline_seconds: float, max_response_mb: float, retries: int, max_pages: int,
          max_medication_reads: int, fmt: str, as_of: str | None,
          profile: str,
          config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...],
          strict_plugins: bool, validate: str, dry_run: bool = False) -> None:
    """Read one patient from a FHIR REST server, screen it, print the result; optionally write the Flag back."""
    from ..errors import B12ScreenError
    from ..screening import screen_patient
    from ..sources import read_value
    from ..sources.fhirclient import FhirClient, FhirError
    from ..sources.fhirread import is_valid_id, read_patient

    when: date = as_of_date(as_of)
    if dry_run and not write_back:
        raise click.UsageError("--dry-run goes with --write-back")
    if not is_valid_id(patient_id):
        raise click.BadParameter("not a FHIR id", param_hint="--patient")
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    try:
        auth = make_auth(token_file, client_id, private_key, key_id, alg, token_url,
                         scope or _default_scope(write_back))
        client = FhirClient(fhir_server, auth=auth, timeout=(min(5.0, timeout), timeout), retries=retries,
                            max_pages=max_pages, max_body_bytes=int(max_response_mb * (1 << 20)),
                            deadline=time.monotonic() + deadline_seconds)
    except B12ScreenError as exc:
        fatal(str(exc), EXIT_USAGE)
    try:
        resources, problems = read_patient(client, patient_id, screener.terminology,
                                           max_medication_reads=max_medication_reads)
    except FhirError as exc:
        fatal(str(exc), EXIT_USAGE)
    for problem in problems:
        echo_err(f"warning: {problem}")
    screened = screen_patient(screener, read_value(resources, fhir_server), f"Patient/{patient_id}", when, validate)
    checked, errors = screened.checked, screened.errors
    for error in errors:
        echo_err(f"error: {error}")
    if checked is None:
        fatal("the server returned no data for this patient", EXIT_USAGE)
    result = checked.result
    _print(result, fmt)
    echo_err(f"screened Patient/{patient_id} from {screened.resources_read} resource(s) as of {when.isoformat()}: "
         f"{result.outcome}")
    if write_back:
        _write_back(client, result, patient_id, when, dry_run)
    if problems or errors or result.rule_errors:
        finish(EXIT_PARTIAL)


def _print(result: Any, fmt: str) -> None:
    from ..sinks.flag import flag_json

    if fmt == "report":
        click.echo(orjson.dumps([result.report()], option=orjson.OPT_INDENT_2).decode())
    elif fmt == "ndjson":
        if result.flagged:
            click.echo(orjson.dumps(flag_json(result)).decode())
    else:
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
        if result.flagged:
            bundle["entry"] = [{"resource": flag_json(result)}]
        click.echo(orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode())


def _write_back(client: FhirClient, result: Any, patient_id: str, when: date, dry_run: bool) -> None:
    from ..sinks.flag import flag_json
    from ..sinks.flagsync import keep_current
    from ..sources.fhirclient import FhirError

    label = "write-back (dry run)" if dry_run else "write-back"
    try:
        actions = keep_current(client, patient_id, flag_json(result), when, dry_run,
                               say=lambda text: echo_err(f"{label}: {text}"))
    except FhirError as exc:
        fatal(f"write-back failed: {exc}", EXIT_PARTIAL)
    if not actions:
        echo_err(f"{label}: no Flag for this outcome and no active b12screen Flag on the server; nothing written")
