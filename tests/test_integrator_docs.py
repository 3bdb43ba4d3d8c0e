"""The integrator guide's settings table (docs/integrator/service.md) names every setting of ``b12screen serve``,
its environment variable and its default, as ``ServiceConfig`` declares them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from conftest import ROOT

from b12screen.cdshooks.config import ServiceConfig, env_name

PAGE = ROOT / "docs" / "integrator" / "service.md"
CODE = re.compile(r"`([^`]+)`")


def settings_rows(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """(names, environment variables, default values) of each row of the settings table, as written."""
    table = text.split("| setting | environment | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        setting, environment, default, _meaning = (cell.strip() for cell in line.strip().strip("|").split(" | ", 3))
        rows.append((CODE.findall(setting), CODE.findall(environment), CODE.findall(default)))
    return rows


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table_problems(text: str) -> list[str]:
    fields = {f.name: f.default for f in dataclasses.fields(ServiceConfig)}
    problems, documented = [], set()
    for names, variables, defaults in settings_rows(text):
        documented.update(names)
        for i, name in enumerate(names):
            if name not in fields:
                problems.append(f"{name}: not a setting")
                continue
            variable = variables[i] if i < len(variables) else ""
            if not env_name(name).endswith(variable.lstrip("…").split(" ")[0]):
                problems.append(f"{name}: environment {variable!r}, code {env_name(name)}")
            want = fields[name]
            if want in (None, ()):
                if i < len(defaults):
                    problems.append(f"{name}: default {defaults[i]!r}, code none")
            elif i >= len(defaults) or defaults[i] != shown(want):
                problems.append(f"{name}: default {defaults[i] if i < len(defaults) else None!r}, code {shown(want)!r}")
    problems += [f"{name}: missing from the table" for name in sorted(set(fields) - documented)]
    return problems


def test_every_setting_is_in_the_table_with_its_variable_and_default() -> None:
    assert table_problems(PAGE.read_text(encoding="utf-8")) == []


def test_a_wrong_default_variable_or_a_missing_setting_is_named() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert table_problems(text.replace("| `60` |", "| `61` |")) == ["clock_skew_seconds: default '61', code '60'"]
    wrong_variable = text.replace("`B12SCREEN_CDS_REPLAY_STORE`", "`B12SCREEN_CDS_REPLAYSTORE`")
    assert table_problems(wrong_variable) == ["replay_store: environment 'B12SCREEN_CDS_REPLAYSTORE', "
                                              "code B12SCREEN_CDS_REPLAY_STORE"]
    without = "\n".join(line for line in text.splitlines() if not line.startswith("| `dev` |"))
    assert table_problems(without) == ["dev: missing from the table"]
