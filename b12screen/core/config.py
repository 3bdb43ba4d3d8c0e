"""Configuration: rule switches, rule parameters (thresholds, windows) and screening-wide settings.

A config file is TOML or JSON::

    disabled_rules = ["AGE-75"]

    [settings]
    min_age = 18

    [rules.MET-2]
    window_months = 12
    dose_mg_per_day = 2000
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: Screening-wide settings and their defaults (docs/clinical-rules.md sections 1 and 3).
DEFAULT_SETTINGS: dict[str, Any] = {
    "min_age": 18,  # MOD-AGE-MIN: younger patients are not evaluated
    "risk_factor_age": 65,  # "age >= 65" as a risk factor
    "evaluate_deceased": False,  # deceased patients are not evaluated unless this is true
    "symptom_months": 12,  # look-back for symptoms and signs
    "parenteral_months": 4,  # MOD-TX-IM: an injection within this many months counts as therapy
    "high_dose_oral_ug": 1000,  # MOD-TX-ORAL-HI threshold, micrograms per day
    "latest_b12_months": 12,  # MOD-LOW / MOD-INDET look at the latest B12 within this many months
    "total_b12_deficient_ng_l": 180,
    "total_b12_normal_ng_l": 350,
    "active_b12_deficient_pmol_l": 25,
    "active_b12_normal_pmol_l": 70,
    "renal_egfr": 30,  # MOD-RENAL: eGFR below this makes MMA unreliable
}

#: The profiles of docs/clinical-rules.md section 5.
PROFILES = ("default", "nice")


@dataclass(frozen=True)
class Config:
    """What a site changes: ``disabled_rules``, per-rule ``rules`` parameters and ``settings``."""

    disabled_rules: frozenset[str] = frozenset()
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "config") -> Config:
        unknown = set(data) - {"disabled_rules", "rules", "settings"}
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        disabled = data.get("disabled_rules") or []
        rules = data.get("rules") or {}
        settings = data.get("settings") or {}
        if not isinstance(disabled, list) or not all(isinstance(r, str) for r in disabled):
            raise ConfigError(f"{origin}: disabled_rules must be a list of rule ids")
        if not isinstance(rules, Mapping) or not all(isinstance(v, Mapping) for v in rules.values()):
            raise ConfigError(f"{origin}: rules must map rule ids to tables of parameters")
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{origin}: settings must be a table")
        bad = set(settings) - set(DEFAULT_SETTINGS)
        if bad:
            raise ConfigError(f"{origin}: unknown setting(s) {', '.join(sorted(bad))}")
        return cls(frozenset(disabled), {k: dict(v) for k, v in rules.items()}, dict(settings))

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        return cls.from_dict(read_config_file(path, "config"), str(path))

    def with_changes(
        self,
        disable: tuple[str, ...] = (),
        enable: tuple[str, ...] = (),
        params: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Config:
        """A copy with rules switched off/on and parameters set (for CLI options)."""
        rules = {k: dict(v) for k, v in self.rules.items()}
        for rule_id, values in (params or {}).items():
            rules.setdefault(rule_id, {}).update(values)
        disabled = (set(self.disabled_rules) | set(disable)) - set(enable)
        return Config(frozenset(disabled), rules, dict(self.settings))

    def setting_values(self) -> dict[str, Any]:
        return {**DEFAULT_SETTINGS, **self.settings}

    def fingerprint(self) -> str:
        """A short hash of everything that can change an outcome."""
        blob = json.dumps(
            {"disabled": sorted(self.disabled_rules), "rules": self.rules, "settings": self.setting_values()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def read_config_file(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML (or, by its ``.json`` suffix, JSON) file's top-level table; :class:`ConfigError` naming the
    file and the problem otherwise. ``what`` names the kind of file in messages."""
    path = Path(path)
    is_json = path.suffix.lower() == ".json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} must be a table/object")
    return data


def parse_param_option(option: str) -> tuple[str, str, Any]:
    """``MET-2.window_months=12`` → ("MET-2", "window_months", 12)."""
    try:
        target, raw = option.split("=", 1)
        rule_id, name = target.rsplit(".", 1)
    except ValueError:
        raise ConfigError(f"--set {option!r}: expected RULE.PARAM=VALUE, e.g. MET-2.window_months=12") from None
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return rule_id.strip(), name.strip(), value
