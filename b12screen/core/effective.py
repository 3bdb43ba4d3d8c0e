"""What a configuration makes of the rules: titles that name the values in force ("Age 80 or over" after
``--set AGE-75.age=80``) and the effective configuration a run records. No I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .model import Rule
from .params import as_param


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:g}"


def effective_title(rule: Rule, overrides: Mapping[str, Any]) -> str:
    """``rule.title`` with each overridden numeric parameter's default replaced by its value, where the
    default is written in the title once and no other parameter shares it (else the title is kept)."""
    title = rule.title
    defaults = {name: _number(as_param(value).default) for name, value in rule.params.items()}
    for name, value in overrides.items():
        old, new = defaults.get(name), _number(value)
        if old is None or new is None or old == new or list(defaults.values()).count(old) != 1:
            continue
        pattern = rf"(?<![\d.]){re.escape(old)}(?![\d.])"
        if len(re.findall(pattern, title)) == 1:
            title = re.sub(pattern, new, title)
    return title


def effective_configuration(profile: str, rules: Iterable[Rule], disabled: Iterable[str],
                            rule_params: Mapping[str, Mapping[str, Any]],
                            settings: Mapping[str, Any]) -> dict[str, Any]:
    """The profile, disabled rules, every setting and every rule parameter in force (defaults included),
    and the rule titles those values give."""
    rules = list(rules)
    params: dict[str, dict[str, Any]] = {}
    for rule in rules:
        values = {name: as_param(value).default for name, value in rule.params.items()}
        values.update(rule_params.get(rule.id, {}))
        if values:
            params[rule.id] = dict(sorted(values.items()))
    return {
        "profile": profile,
        "disabled_rules": sorted(disabled),
        "settings": dict(sorted(settings.items())),
        "rule_parameters": params,
        "rule_titles": {r.id: effective_title(r, rule_params.get(r.id, {})) for r in rules},
    }
