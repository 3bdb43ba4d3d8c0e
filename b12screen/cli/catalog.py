"""``b12screen rules`` and ``b12screen plugins``: what is loaded and how it is configured."""

from __future__ import annotations

import click

from ..core.config import PROFILES
from .common import (
    EXIT_PARTIAL,
    PROFILE_HELP,
    dumps,
    echo_err,
    fatal,
    finish,
    load_screener,
    verbose_option,
)


@click.command()
@click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True, help=PROFILE_HELP)
@click.option("--rules-config", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Rule configuration file to preview (--config is an alias).")
@click.option("--disable", multiple=True, metavar="RULE")
@click.option("--enable", multiple=True, metavar="RULE")
@click.option("--set", "settings", multiple=True, metavar="RULE.PARAM=VALUE",
              help="Preview a rule parameter or setting, e.g. MET-2.window_months=12 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict-plugins", is_flag=True, help="Fail when a plugin cannot be loaded.")
@verbose_option
def rules(profile: str, config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
          settings: tuple[str, ...], as_json: bool, strict_plugins: bool) -> None:
    """List the loaded rules with their parameters and status as configured (docs/reference/clinical-rules.md).

    ``--config``, ``--set``, ``--disable``/``--enable`` and ``--profile`` preview the effective configuration.
    """
    from ..core.config import SETTINGS
    from ..core.params import as_param

    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    rows = []
    for rule in sorted(screener.rules, key=lambda r: r.id):
        row = rule.describe()
        row["plugin"] = screener.rule_owners[rule.id]
        row["title"] = screener.rule_titles[rule.id]  # naming the values in force
        if not screener.enabled(rule):
            row["status"] = "disabled"
        elif rule.suggests_in(profile):
            row["status"] = "suggests"
        else:
            row["status"] = "risk factor only"
        row["enabled"] = screener.enabled(rule)
        configured = screener.rule_params[rule.id]
        if "window_months" in configured:
            row["window_months"] = configured["window_months"]
        row["window_unit"] = "months"
        row["params"] = {name: as_param(value).describe(configured.get(name))
                         for name, value in rule.params.items()}
        rows.append(row)
    if as_json:
        click.echo(dumps(rows))
        return
    click.echo(f"{'id':<10} {'priority':<8} {'window':<12} {'status':<17} title / basis")
    for row in rows:
        window = row["window_months"]
        window_text = "—" if window is None else window if isinstance(window, str) else f"{window:g} mo"
        click.echo(f"{row['id']:<10} {row['priority'] or '—':<8} {window_text:<12} {row['status']:<17} "
                   f"{row['title']}\n{'':<49} basis: {row['basis']}")
        for name, param in row["params"].items():
            click.echo(f"{'':<49} {name} = {param['value']!r} {param['unit']}  ({param['description']})")
    click.echo("settings:")
    for name, spec in SETTINGS.items():
        click.echo(f"  {name} = {screener.settings[name]!r} {spec.unit}  ({spec.description})")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict", "--strict-plugins", "strict", is_flag=True,
              help="Fail (exit 1) when a plugin cannot be loaded.")
@verbose_option
def plugins(as_json: bool, strict: bool) -> None:
    """List the loaded plugins: name, version, hooks and rule ids (and any that failed to load)."""
    from ..errors import B12ScreenError
    from ..plugins import describe_plugins, get_plugin_manager

    try:
        manager = get_plugin_manager(strict=strict or None)
        rows = describe_plugins(manager)
    except B12ScreenError as exc:
        fatal(str(exc), EXIT_PARTIAL)
    if as_json:
        click.echo(dumps(rows))
    else:
        for row in rows:
            if row["status"] != "loaded":
                dist = f"{row['distribution']} {row['version']}  " if row["distribution"] else ""
                click.echo(f"{row['name']:<32} {dist}{row['status'].upper()}: {row['error']}")
            else:
                click.echo(f"{row['name']:<32} {row['distribution'] or ''} {row['version'] or ''}  "
                           f"hooks: {', '.join(row['hooks'])}  rules: {', '.join(row['rules']) or '—'}")
    for failure in manager.failures:
        echo_err(f"warning: plugin {failure.name!r} failed to load ({failure.error})")
    broken = [row for row in rows if row["status"] == "error"]
    for row in broken:
        echo_err(f"error: {row['error']}")
    if broken:
        finish(EXIT_PARTIAL)
