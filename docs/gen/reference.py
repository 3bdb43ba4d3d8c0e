"""Markdown for the generated reference pages, read from the declarations themselves.

``cli_markdown`` walks the click commands of ``b12screen.cli``; ``settings_markdown``, ``rule_params_markdown``,
``config_file_markdown`` and ``service_markdown`` read the screening settings, the rules' parameters, the rules
configuration file's keys and the CDS service's settings. The pages call them from ``cog`` blocks; regenerate
with ``cog -r docs/reference/cli.md docs/reference/configuration.md`` from the repository's root.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import click

#: Backtick code spans: kept as they are; the text around them is escaped.
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_SPECIAL = re.compile(r"([\\*_<>\[\]|])")


def text(value: str) -> str:
    """Prose for a Markdown paragraph or table cell: whitespace collapsed, Markdown's specials (``|`` too, which
    would end a table cell) escaped outside code spans; in a code span a ``|`` ends no cell."""
    value = " ".join(value.split())
    out, last = [], 0
    for match in _CODE.finditer(value):
        out.append(_SPECIAL.sub(r"\\\1", value[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_SPECIAL.sub(r"\\\1", value[last:]))
    return "".join(out)


def code(value: Any) -> str:
    """A value as inline code."""
    shown = str(value)
    fence = "``" if "`" in shown else "`"
    return f"{fence}{shown}{fence}"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- the command line --------------------------------------------------------------------------------------------


def _paragraphs(help_text: str) -> Iterator[str]:
    """click's help text as Markdown paragraphs; a ``\\b`` paragraph keeps its lines (a ``text`` block)."""
    for part in re.split(r"\n\s*\n", inspect.cleandoc(help_text)):
        if part.startswith("\b"):
            yield "```text\n" + part.lstrip("\b\n") + "\n```"
        elif part.strip():
            yield text(part)


def _range(kind: click.ParamType) -> str:
    info = kind.to_info_dict()
    low, high = info.get("min"), info.get("max")
    if low is not None and high is not None:
        return f"{number(low)} to {number(high)}"
    if low is not None:
        return f"{'>' if info.get('min_open') else '≥'} {number(low)}"
    if high is not None:
        return f"{'<' if info.get('max_open') else '≤'} {number(high)}"
    return ""


def _kind(param: click.Parameter, ctx: click.Context) -> str:
    """What a parameter takes: its choices, a flag, a count, or its metavar with any range."""
    if isinstance(param, click.Option) and param.count:
        return "count (repeat it: `-vv`)"
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    if isinstance(param.type, click.Choice):
        return ", ".join(code(c) for c in param.type.choices)
    shown = param.make_metavar(ctx)
    if isinstance(param.type, click.IntRange | click.FloatRange):
        shown = f"{param.type.name.split()[0].upper()} {_range(param.type)}"
    return code(shown) + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _default(param: click.Parameter) -> str:
    if param.required:
        return "required"
    value = param.default
    if isinstance(param, click.Option) and (param.is_flag or param.count) and value in (click.core.UNSET, False, 0):
        return "off"
    if callable(value) or value is None or value is click.core.UNSET or getattr(param, "multiple", False):
        return "—"
    return code(number(value))


def _names(param: click.Parameter) -> str:
    names = ", ".join(code(o) for o in param.opts)
    return names + ("".join(f" / {code(o)}" for o in param.secondary_opts))


def command_markdown(command: click.Command, ctx: click.Context, level: int = 2) -> Iterator[str]:
    """One command's section: heading, usage, help, arguments, options; then its subcommands' sections."""
    yield f"{'#' * level} `{ctx.command_path}`\n"
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    yield f"```text\n{usage}\n```\n"
    yield from (f"{p}\n" for p in _paragraphs(command.help or ""))
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if isinstance(p, click.Argument)]
    options = [p for p in params if isinstance(p, click.Option)]
    if arguments:
        yield table(["Argument", "Takes", "Required"],
                    [[code(a.make_metavar(ctx)), "one or more" if a.nargs == -1 else str(a.nargs),
                      "yes" if a.required else "no"] for a in arguments])
    if options:
        yield table(["Option", "Takes", "Default", "Meaning"],
                    [[_names(o), _kind(o, ctx), _default(o), text(o.help or "")] for o in options])
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from command_markdown(sub, click.Context(sub, info_name=name, parent=ctx), level + 1)


def cli_markdown() -> str:
    """Every command and subcommand of ``b12screen``, in the order ``--help`` lists them."""
    from b12screen.cli import cli

    ctx = click.Context(cli, info_name="b12screen")
    return "\n".join(command_markdown(cli, ctx))


# -- settings and parameters -------------------------------------------------------------------------------------


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{number(minimum)} to {number(maximum)}"
    if minimum is not None:
        return f"≥ {number(minimum)}"
    return f"≤ {number(maximum)}" if maximum is not None else "—"


def _toml(value: Any) -> str:
    """A default as it is written in a TOML file."""
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, str):
        return code(f'"{value}"')
    if isinstance(value, tuple | list):
        return code("[" + ", ".join(f'"{v}"' for v in value) + "]") if value else "none"
    return "none" if value is None else code(number(value))


def settings_markdown() -> str:
    """The screening settings (``SETTINGS``) with each profile's default (``PROFILE_SETTINGS``)."""
    from b12screen.core.config import PROFILE_SETTINGS, PROFILES, SETTINGS

    header = ["Setting", *(f"Default, `{p}` profile" for p in PROFILES), "Unit", "Range", "Meaning"]
    rows = [[code(name), *(_toml(PROFILE_SETTINGS.get(p, {}).get(name, spec.default)) for p in PROFILES),
             text(spec.unit) or "—", _bounds(spec.minimum, spec.maximum), text(spec.description)]
            for name, spec in SETTINGS.items()]
    return table(header, rows)


def _builtin_rules() -> list[Any]:
    from b12screen.plugins import builtin_plugin_manager, collect_rules

    return [rule for _, rule in collect_rules(builtin_plugin_manager())]


def rule_params_markdown() -> str:
    """Every built-in rule's parameters, then every rule's ``window_months``."""
    from b12screen.core.config import WINDOW_PARAM
    from b12screen.core.params import as_param

    rules = _builtin_rules()
    rows = [[code(rule.id), code(name), _toml(spec.default), text(spec.unit) or "—",
             _bounds(spec.minimum, spec.maximum), text(spec.description)]
            for rule in rules for name, spec in ((n, as_param(v)) for n, v in rule.params.items())]
    params = table(["Rule", "Parameter", "Default", "Unit", "Range", "Meaning"], rows)

    def window(value: float | None) -> str:
        if value is None:
            return "— (a risk factor: no suggestion, no window)"
        return "since onset" if math.isinf(value) else code(number(value))

    windows = table(["Rule", "Title", "Default `window_months`"],
                    [[code(rule.id), text(rule.title), window(rule.window_months)] for rule in rules])
    intro = (f"`window_months` ({text(WINDOW_PARAM.unit)}, "
             f"{_bounds(WINDOW_PARAM.minimum, WINDOW_PARAM.maximum)}): {text(WINDOW_PARAM.description)}. "
             "Every rule takes it; its default is the rule's own window:\n")
    return f"{params}\n{intro}\n{windows}"


#: The keys of a rules configuration file: every field of ``Config`` but those set on the command line only.
CONFIG_FILE_KEYS = {
    "disabled_rules": "a list of rule ids switched off",
    "rules": "a table per rule id of its parameters (below), e.g. `[rules.MET-2]`",
    "settings": "a table of screening settings (below)",
}
#: ``Config`` fields that no file sets.
COMMAND_LINE_ONLY = {"enabled_rules": "`--enable`"}


def config_file_markdown() -> str:
    from b12screen.core.config import Config

    fields = [f.name for f in dataclasses.fields(Config) if f.name not in COMMAND_LINE_ONLY]
    return table(["Key", "Holds"], [[code(name), text(CONFIG_FILE_KEYS[name])] for name in fields])


#: How a service setting's declared type is written in a file (and in its environment variable).
_SERVICE_TYPES = {
    "str": "text", "int": "whole number", "float": "number", "bool": "`true` or `false`",
    "tuple[str, ...]": "list of texts (environment: comma-separated)",
    "tuple[IssuerConfig, ...]": "list of issuer tables (environment: JSON)",
    "Mapping[str, Any]": "JWK Set object",
}


def _service_type(declared: str) -> str:
    optional = declared.endswith(" | None")
    return _SERVICE_TYPES[declared.removesuffix(" | None")] + (", optional" if optional else "")


def _service_rows(cls: type) -> list[list[str]]:
    from b12screen.cdshooks.config import ServiceConfig, env_name

    rows = []
    for f in dataclasses.fields(cls):
        default = "required" if f.default is dataclasses.MISSING else _toml(f.default)
        env = [code(env_name(f.name))] if cls is ServiceConfig else []
        rows.append([code(f.name), *env, _service_type(str(f.type)), default, text(f.metadata["doc"])])
    return rows


def service_markdown() -> str:
    """The CDS service's settings (``ServiceConfig``) and an issuer's keys (``IssuerConfig``)."""
    from b12screen.cdshooks.config import IssuerConfig, ServiceConfig

    settings = table(["Key", "Environment", "Type", "Default", "Meaning"], _service_rows(ServiceConfig))
    issuers = table(["Key", "Type", "Default", "Meaning"], _service_rows(IssuerConfig))
    return f"{settings}\nEach `[[issuers]]` table (an object of `B12SCREEN_CDS_ISSUERS`) takes:\n\n{issuers}"
