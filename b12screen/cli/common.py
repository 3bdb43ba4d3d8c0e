"""What every command shares: exit codes, messages, the as-of date, rule configuration options.

Importing this module is cheap: the engine and its models load only when a command runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import click
import orjson

from ..core.config import PROFILES

if TYPE_CHECKING:
    from ..core.config import Config
    from ..core.engine import Screener

#: Exit codes (README, "Exit codes"): 0 all screened, 1 some input unreadable or a rule failed, 2 usage error,
#: 3 the outputs could not be written (full disk, read-only or vanished output folder).
EXIT_PARTIAL, EXIT_USAGE, EXIT_OUTPUT = 1, 2, 3
#: Help text that points at the project's clinical rules.
PROFILE_HELP = "Clinical profile (docs/clinical-rules.md, 'Profiles')."


def echo_err(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    click.echo(f"b12screen: {message}", err=True)


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    echo_err(f"error: {message}")
    sys.exit(code)


def as_of_date(value: str | None) -> date:
    """The evaluation date of ``--as-of``, or today: the command line is where the clock is read."""
    from ..core.dates import parse_as_of

    if value is None:
        return date.today()
    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


def rule_config(config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
                settings: tuple[str, ...]) -> Config:
    """The rule configuration of ``--config``, ``--disable``, ``--enable`` and ``--set``."""
    from ..core.config import Config, parse_param_option

    config = Config.from_file(config_path) if config_path else Config()
    params: dict[str, dict[str, Any]] = {}
    for option in settings:
        rule_id, name, value = parse_param_option(option)
        params.setdefault(rule_id, {})[name] = value
    return config.with_changes(disable=disable, enable=enable, params=params)


def make_screener(profile: str, config: Config, strict: bool) -> Screener:
    """A Screener with the built-in and installed plugins."""
    from ..core.engine import Screener
    from ..plugins import get_plugin_manager

    return Screener(profile=profile, config=config, plugin_manager=get_plugin_manager(strict=strict or None))


def report_plugin_failures(screener: Screener) -> None:
    """One warning line for each plugin that failed to load."""
    for failure in screener.plugin_manager.failures:
        echo_err(f"warning: plugin {failure.name!r} failed to load and was skipped ({failure.error})")


def report_ignored(names: list[str], shown: int = 10) -> None:
    """One warning line naming the files in input folders that are not read (unknown suffix, hidden)."""
    if names:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        echo_err(f"warning: ignored {len(names)} file(s) the reader does not read: "
                 + ", ".join(names[:shown]) + more)


def dumps(value: Any, pretty: bool = True) -> str:
    """JSON text as the commands print it."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS).decode()


def rule_config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that screens: as-of, profile, rule configuration, strict plugins."""
    options = [
        click.option("--as-of", "as_of", metavar="DATE", help="Evaluation date (YYYY-MM-DD); default today."),
        click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
                     help=PROFILE_HELP),
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


def validate_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--validate evidence|all``: the validation policy (b12screen.sources.validation)."""
    return click.option(
        "--validate", "validate", type=click.Choice(["evidence", "all"]), default="evidence", show_default=True,
        help="evidence: build an R4B model only for resources a result rests on; all: for every resource a "
             "rule can use (slower).")(func)


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv); never patient data."""
    from ..plugins import REPORTED_BY_CLI

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig, plus a filter
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("b12screen: %(levelname)s: %(name)s: %(message)s"))
        if verbose == 0:  # plugin load failures are printed by the commands themselves, once
            handler.addFilter(lambda record: not getattr(record, REPORTED_BY_CLI, False))
        root.addHandler(handler)
        root.setLevel(level)
