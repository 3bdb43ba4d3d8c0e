"""The ``b12screen`` command line: a thin layer over the library."""

from __future__ import annotations

import logging
import sys
from datetime import date
from pathlib import Path
from typing import Any

import click
import orjson

from . import __version__
from .config import PROFILES, Config, parse_param_option
from .dates import parse_as_of
from .engine import Screener, ScreeningResults
from .errors import B12ScreenError, InputError
from .plugins import REPORTED_BY_CLI, describe_plugins, get_plugin_manager
from .sources import Entry, read_bytes, read_path

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _echo_err(message: str) -> None:
    click.echo(f"b12screen: {message}", err=True)


def _as_of(value: str | None) -> date:
    if value is None:
        return date.today()  # the only clock read in b12screen
    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


def _config(config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
            settings: tuple[str, ...]) -> Config:
    config = Config.from_file(config_path) if config_path else Config()
    params: dict[str, dict[str, Any]] = {}
    for option in settings:
        rule_id, name, value = parse_param_option(option)
        params.setdefault(rule_id, {})[name] = value
    return config.with_changes(disable=disable, enable=enable, params=params)


def _screener(profile: str, config: Config, strict: bool) -> Screener:
    return Screener(profile=profile, config=config, plugin_manager=get_plugin_manager(strict=strict or None))


def _report_plugin_failures(screener: Screener) -> None:
    for failure in screener.plugin_manager.failures:
        _echo_err(f"warning: plugin {failure.name!r} failed to load and was skipped ({failure.error})")


def _dumps(value: Any, pretty: bool = True) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS).decode()


class _RuleConfigOptions:
    """Options shared by the commands that screen."""

    @staticmethod
    def apply(func: Any) -> Any:
        options = [
            click.option("--as-of", "as_of", metavar="DATE", help="Evaluation date (YYYY-MM-DD); default today."),
            click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
                         help="Clinical profile (clinical-rules.md section 5)."),
            click.option("--config", "config_path", type=click.Path(dir_okay=False),
                         help="Config file (TOML or JSON): disabled rules, parameters, settings."),
            click.option("--disable", multiple=True, metavar="RULE", help="Switch a rule off (repeatable)."),
            click.option("--enable", multiple=True, metavar="RULE", help="Switch a rule back on (repeatable)."),
            click.option("--set", "settings", multiple=True, metavar="RULE.PARAM=VALUE",
                         help="Set a rule parameter, e.g. MET-2.window_months=12 (repeatable)."),
            click.option("--strict-plugins", is_flag=True, help="Fail when a plugin cannot be loaded."),
        ]
        for option in reversed(options):
            func = option(func)
        return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="b12screen")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (no patient data).")
def cli(verbose: int) -> None:
    """Screen FHIR R4 patient data for risk of vitamin B12 deficiency.

    b12screen suggests checks for a clinician to consider; it does not diagnose.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig, plus a filter
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("b12screen: %(levelname)s: %(name)s: %(message)s"))
        if verbose == 0:  # plugin load failures are printed by the commands themselves, once
            handler.addFilter(lambda record: not getattr(record, REPORTED_BY_CLI, False))
        root.addHandler(handler)
        root.setLevel(level)


def _inputs(paths: tuple[str, ...]) -> list[Entry | InputError]:
    items: list[Entry | InputError] = []
    for raw in paths:
        if raw == "-":
            items.extend(read_bytes(sys.stdin.buffer.read(), "<stdin>"))
            continue
        path = Path(raw)
        if not path.exists():
            items.append(InputError(raw, None, "no such file or folder"))
            continue
        items.extend(read_path(path))
    return items


def _write(results: ScreeningResults, fmt: str, out: Any) -> None:
    if fmt == "report":
        out.write(_dumps([r.report() for r in results]) + "\n")
    elif fmt == "ndjson":
        for r in results:
            if r.flag is not None:
                out.write(_dumps(r.flag_json(), pretty=False) + "\n")
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "total": None,
            "entry": [{"resource": r.flag_json()} for r in results if r.flag is not None],
        }
        bundle.pop("total")
        if not bundle["entry"]:
            bundle.pop("entry")
        out.write(_dumps(bundle) + "\n")


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH... | -")
@_RuleConfigOptions.apply
@click.option("--format", "fmt", type=click.Choice(["bundle", "ndjson", "report"]), default="bundle",
              show_default=True, help="Bundle of Flags, NDJSON Flags, or a JSON array of report entries.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Write the result here instead of stdout.")
def screen(paths: tuple[str, ...], as_of: str | None, profile: str, config_path: str | None,
           disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
           fmt: str, output: Any) -> None:
    """Screen FHIR Bundles, resources, JSON arrays or NDJSON from files, folders or stdin (-)."""
    when = _as_of(as_of)
    try:
        screener = _screener(profile, _config(config_path, disable, enable, settings), strict_plugins)
    except B12ScreenError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    _report_plugin_failures(screener)
    grouped = screener.read(_inputs(paths))
    results = screener.screen_records(grouped.records.values(), when, grouped.errors, grouped.resources_read)
    for error in results.errors:
        _echo_err(f"error: {error}")
    rule_errors = 0
    for result in results:
        for err in result.rule_errors:
            rule_errors += 1
            _echo_err(f"error: rule {err['rule']} failed for one patient ({err['error']})")
    _write(results, fmt, output)
    flagged = sum(1 for r in results if r.flag is not None)
    _echo_err(
        f"screened {len(results)} patient(s) from {results.resources_read} resource(s) as of {when.isoformat()}: "
        f"{flagged} flagged, {len(results.errors)} input error(s)"
        + (f", {rule_errors} rule error(s)" if rule_errors else "")
    )
    if results.errors and results.resources_read == 0:
        sys.exit(EXIT_USAGE)
    if results.errors or rule_errors:
        sys.exit(EXIT_PARTIAL)


@cli.command()
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--disable", multiple=True, metavar="RULE")
@click.option("--enable", multiple=True, metavar="RULE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict-plugins", is_flag=True, help="Fail when a plugin cannot be loaded.")
def rules(profile: str, config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
          as_json: bool, strict_plugins: bool) -> None:
    """List the loaded rules with their status in the chosen profile."""
    try:
        screener = _screener(profile, _config(config_path, disable, enable, ()), strict_plugins)
    except B12ScreenError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    _report_plugin_failures(screener)
    rows = []
    for rule in sorted(screener.rules, key=lambda r: r.id):
        row = rule.describe()
        row["plugin"] = screener.rule_owners[rule.id]
        if not screener.enabled(rule):
            row["status"] = "disabled"
        elif rule.suggests_in(profile):
            row["status"] = "suggests"
        else:
            row["status"] = "risk factor only"
        row["enabled"] = screener.enabled(rule)
        row["params"] = {**rule.params, **screener.config.rules.get(rule.id, {})}
        rows.append(row)
    if as_json:
        click.echo(_dumps(rows))
        return
    click.echo(f"{'id':<10} {'priority':<8} {'window':<12} {'status':<17} title / basis")
    for row in rows:
        window = row["window_months"]
        window_text = "—" if window is None else window if isinstance(window, str) else f"{window:g} mo"
        click.echo(f"{row['id']:<10} {row['priority'] or '—':<8} {window_text:<12} {row['status']:<17} "
                   f"{row['title']}\n{'':<49} basis: {row['basis']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict", "--strict-plugins", "strict", is_flag=True,
              help="Fail (exit 1) when a plugin cannot be loaded.")
def plugins(as_json: bool, strict: bool) -> None:
    """List the loaded plugins: name, version, hooks and rule ids (and any that failed to load)."""
    try:
        manager = get_plugin_manager(strict=strict or None)
        rows = describe_plugins(manager)
    except B12ScreenError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(EXIT_PARTIAL)
    if as_json:
        click.echo(_dumps(rows))
    else:
        for row in rows:
            if row["status"] != "loaded":
                dist = f"{row['distribution']} {row['version']}  " if row["distribution"] else ""
                click.echo(f"{row['name']:<32} {dist}{row['status'].upper()}: {row['error']}")
            else:
                click.echo(f"{row['name']:<32} {row['distribution'] or ''} {row['version'] or ''}  "
                           f"hooks: {', '.join(row['hooks'])}  rules: {', '.join(row['rules']) or '—'}")
    for failure in manager.failures:
        _echo_err(f"warning: plugin {failure.name!r} failed to load ({failure.error})")
    broken = [row for row in rows if row["status"] == "error"]
    for row in broken:
        _echo_err(f"error: {row['error']}")
    if broken:
        sys.exit(EXIT_PARTIAL)


# Further commands live in their own modules and are attached here.
# (batch: b12screen/cli_batch.py; serve and fetch: b12screen/cli_service.py)
from .cli_service import fetch as _fetch_command  # noqa: E402
from .cli_service import serve as _serve_command  # noqa: E402

cli.add_command(_serve_command)
cli.add_command(_fetch_command)

from .cli_batch import batch  # noqa: E402

cli.add_command(batch)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="b12screen")
