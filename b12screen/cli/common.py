"""What every command shares: exit codes, messages, the as-of date, rule configuration options.

Importing this module is cheap: the engine and its models load only when a command runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, NoReturn

import click
import orjson

from ..core.config import PROFILES
from ..errors import EXIT_OUTPUT, EXIT_PARTIAL, EXIT_USAGE

__all__ = ["EXIT_OUTPUT", "EXIT_PARTIAL", "EXIT_USAGE", "CommandExit", "fatal", "finish"]

if TYPE_CHECKING:
    from ..core.config import Config
    from ..screening import Screener

INTERRUPTING = (signal.SIGINT, signal.SIGTERM)
#: What ``click.option`` returns: a decorator of a command function.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
#: Help text that points at the project's clinical rules.
PROFILE_HELP = "Clinical profile (docs/reference/clinical-rules.md, 'Profiles')."


def echo_err(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    click.echo(f"b12screen: {message}", err=True)


class CommandExit(SystemExit):
    """How a command ends with a code other than 0: raised by :func:`fatal` and :func:`finish` only, after
    every message has been printed (``__main__`` is the one other place that exits)."""


def fatal(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and end the command with ``code``."""
    echo_err(f"error: {message}")
    raise CommandExit(code)


def finish(code: int) -> None:
    """End the command with ``code``, its messages printed (0: return normally)."""
    if code:
        raise CommandExit(code)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that every ``finally`` on the way out runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_RECEIVED: list[int] = []  # the signal that interrupted the command running, if one did


@contextlib.contextmanager
def interruptible() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; later ones are ignored, so the
    clean-up they start is not cut short. Yields the list the signal's number is added to (a library can
    replace the exception with its own on the way out: py4j does). Outside the main thread (where no handler
    can be set) a no-op."""
    _RECEIVED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield _RECEIVED
        return

    def interrupt(signum: int, _frame: Any) -> None:
        for number in INTERRUPTING:
            signal.signal(number, signal.SIG_IGN)
        _RECEIVED.append(signum)
        raise Interrupted(signum)

    previous = {number: signal.signal(number, interrupt) for number in INTERRUPTING}
    try:
        yield _RECEIVED
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _RECEIVED.clear()


def exit_interrupted(signum: int, what: str) -> NoReturn:
    """One line, ``interrupted by SIGNAME: what``, and exit 128 + the signal's number."""
    echo_err(f"interrupted by {signal.Signals(signum).name}: {what}")
    raise CommandExit(128 + signum)


def exits_on_interrupt(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command that runs :func:`interruptible` and ends an interruption with :func:`exit_interrupted`
    (below the ``click`` decorators): a KeyboardInterrupt, or any error once a signal has arrived."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with interruptible() as received:
                try:
                    return func(*args, **kwargs)
                except (KeyboardInterrupt, Exception) as exc:
                    if not received and not isinstance(exc, KeyboardInterrupt):
                        raise
                    exit_interrupted(received[0] if received else signal.SIGINT, what)

        return run

    return decorate


def as_of_date(value: str | None) -> date:
    """The evaluation date of ``--as-of``, or today: the command line is where the clock is read."""
    from ..core.dates import parse_as_of

    if value is None:
        return date.today()
    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


def as_of_or_data_end(value: str | None) -> date | None:
    """``--as-of`` of a command that can screen as of the end of its data: None for ``data-end``."""
    from ..core.dataend import DATA_END

    return None if value == DATA_END else as_of_date(value)


def settle_as_of(when: date | None, newest: date | None, warn: bool = True) -> date:
    """The as-of date to screen at: ``when``, or the newest record for ``data-end`` (a usage error when the
    input holds no dated record). With ``warn``, warns on stderr when the date is more than a year after the
    data's end (not for one patient's records: a patient last seen years ago is no sign of old data)."""
    from ..core.dataend import stale_warning

    if when is None:
        if newest is None:
            fatal("--as-of data-end: the input holds no dated clinical record")
        echo_err(f"as of the newest record in the input: {newest.isoformat()}")
        return newest
    warning = stale_warning(when, newest) if warn else None
    if warning:
        echo_err(f"warning: {warning}")
    return when


def given_options(config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
                  settings: tuple[str, ...], profile: str) -> dict[str, Any]:
    """The rule options as given on the command line (a run's record)."""
    return {"profile": profile, "config_file": config_path, "set": list(settings), "disable": list(disable),
            "enable": list(enable)}


def rule_config(config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
                settings: tuple[str, ...]) -> Config:
    """The rule configuration of ``--config``, ``--disable``, ``--enable`` and ``--set``."""
    from ..core.config import Config, parse_param_option

    config = Config.from_file(config_path) if config_path else Config()
    params: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    for option in settings:
        rule_id, name, value = parse_param_option(option)
        if rule_id is None:
            values[name] = value
        else:
            params.setdefault(rule_id, {})[name] = value
    return config.with_changes(disable=disable, enable=enable, params=params, settings=values)


def load_screener(profile: str, config_path: str | None, disable: tuple[str, ...], enable: tuple[str, ...],
                  settings: tuple[str, ...], strict: bool) -> Screener:
    """The Screener of a command's rule options, with the built-in and installed plugins: how every command
    builds one. A bad configuration is one line and exit 2; plugins that failed to load are reported once."""
    from ..errors import B12ScreenError
    from ..plugins import get_plugin_manager
    from ..screening import Screener

    try:
        screener = Screener(profile=profile, config=rule_config(config_path, disable, enable, settings),
                            plugin_manager=get_plugin_manager(strict=strict or None))
    except B12ScreenError as exc:
        fatal(str(exc))
    report_plugin_failures(screener)
    return screener


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
    options: list[Decorator] = [
        click.option("--as-of", "as_of", metavar="DATE", help="Evaluation date (YYYY-MM-DD); default today "
                     "(screen, batch, explain: data-end for the newest record in the input)."),
        click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True,
                     help=PROFILE_HELP),
        click.option("--rules-config", "--config", "config_path", type=click.Path(dir_okay=False),
                     help="Rule configuration file (TOML or JSON): disabled rules, parameters, settings "
                          "(--config is an alias)."),
        click.option("--disable", multiple=True, metavar="RULE", help="Switch a rule off (repeatable)."),
        click.option("--enable", multiple=True, metavar="RULE", help="Switch a rule back on (repeatable)."),
        click.option("--set", "settings", multiple=True, metavar="RULE.PARAM=VALUE",
                     help="Set a rule parameter or a setting, e.g. MET-2.window_months=12 or min_age=16 (repeatable)."),
        click.option("--strict-plugins", is_flag=True, help="Fail when a plugin cannot be loaded."),
        verbose_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--workers``, ``--overwrite`` and ``--progress/--no-progress``: how a batch or an audit runs."""
    options = [
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Worker processes (local engine); default: the machine's cores."),
        click.option("--overwrite", is_flag=True, help="Replace outputs already in --out (default: refuse)."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar on stderr (default: when stderr is a terminal)."),
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


def _not_an_interruption(record: logging.LogRecord) -> bool:
    """Drop the tracebacks a library logs once a command is interrupted (py4j does, when SIGINT or SIGTERM
    arrives during a call to Spark): the command reports the interruption, in one line."""
    return not (record.exc_info and (_RECEIVED or isinstance(record.exc_info[1], KeyboardInterrupt)))


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv); never patient data. Safe to call again
    (``-v`` after the sub-command raises the level set before it)."""
    from ..plugins import REPORTED_BY_CLI

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "b12screen", False)]
    if root.handlers and not ours:  # the host application configured logging: leave it alone
        return
    if not ours:  # as logging.basicConfig, plus a filter
        handler = logging.StreamHandler(sys.stderr)
        handler.b12screen = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("b12screen: %(levelname)s: %(name)s: %(message)s"))
        root.addHandler(handler)
        ours = [handler]
    for ours_handler in ours:
        ours_handler.filters.clear()
        ours_handler.addFilter(_not_an_interruption)
        if verbose == 0:  # plugin load failures are printed by the commands themselves, once
            ours_handler.addFilter(lambda record: not getattr(record, REPORTED_BY_CLI, False))
    root.setLevel(level)


def _verbose_after_command(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        configure_logging(value + int(ctx.find_root().params.get("verbose") or 0))


def verbose_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-v``/``--verbose`` accepted after the sub-command too (``b12screen screen -v ...``)."""
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_verbose_after_command,
                        help="More log output on stderr (no patient data).")(func)
