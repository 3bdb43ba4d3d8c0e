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
from .params import Param, check_values

#: Screening-wide settings, declared once (docs/reference/clinical-rules.md sections 1 and 3).
SETTINGS: dict[str, Param] = {
    "min_age": Param(18, "years", "MOD-AGE-MIN: younger patients are not evaluated", 0, 130, int),
    "risk_factor_age": Param(65, "years", "age at or above which age is a risk factor", 0, 130, int),
    "evaluate_deceased": Param(False, "", "evaluate deceased patients too"),
    "symptom_months": Param(12, "months", "look-back for symptoms and signs", 0, 1200),
    "parenteral_months": Param(4, "months", "MOD-TX-IM: an injection within this many months is therapy", 0, 1200),
    "parenteral_order_months": Param(12, "months", "MOD-TX-IM: an active injection order or statement counts only "
                                     "when authored or started within this many months", 0, 1200),
    "high_dose_oral_ug": Param(1000, "µg/day", "MOD-TX-ORAL-HI: oral B12 at or above this is high-dose", 0),
    "latest_b12_months": Param(12, "months", "MOD-INDET looks at the latest B12 within this; MOD-LOW is HIGH "
                               "within it and MEDIUM when older", 0, 1200),
    "mma_raised_umol_l": Param(0.45, "µmol/L", "MMA above this is raised (MOD-LOW; NICE NG239)", 0),
    "homocysteine_raised_umol_l": Param(15, "µmol/L", "homocysteine above this is raised after nitrous oxide "
                                        "use (MOD-LOW)", 0),
    "total_b12_deficient_ng_l": Param(180, "ng/L", "total B12 below this is deficient", 0),
    "total_b12_normal_ng_l": Param(350, "ng/L", "total B12 above this is normal", 0),
    "active_b12_deficient_pmol_l": Param(25, "pmol/L", "active B12 below this is deficient", 0),
    "active_b12_normal_pmol_l": Param(70, "pmol/L", "active B12 above this is normal", 0),
    "renal_egfr": Param(30, "mL/min/1.73m2", "MOD-RENAL: eGFR below this makes MMA unreliable", 0),
}
#: Their defaults.
DEFAULT_SETTINGS: dict[str, Any] = {name: spec.default for name, spec in SETTINGS.items()}
#: Defaults that differ by profile (docs/reference/clinical-rules.md 7.9: NICE NG239 covers people aged 16 and over).
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {"nice": {"min_age": 16}}
#: ``window_months``: every rule that has a window may have it changed.
WINDOW_PARAM = Param(0, "months", "MOD-RECENT: a B12 test within this many months satisfies the rule", 0, 1200)
#: Bands whose lower (deficient) bound must stay below their upper (normal) bound.
_BANDS = (("total_b12_deficient_ng_l", "total_b12_normal_ng_l"),
          ("active_b12_deficient_pmol_l", "active_b12_normal_pmol_l"))

#: The profiles of docs/reference/clinical-rules.md section 5.
PROFILES = ("default", "nice")
#: The batch engines (:mod:`b12screen.batch`): here, beside the profiles, so that the command line can offer
#: them without loading the batch package.
ENGINES = ("local", "spark")


@dataclass(frozen=True)
class Config:
    """What a site changes: ``disabled_rules``, per-rule ``rules`` parameters and ``settings``."""

    disabled_rules: frozenset[str] = frozenset()
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: Rule ids switched back on (``--enable``): checked like every other name.
    enabled_rules: frozenset[str] = frozenset()

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
        return cls(frozenset(disabled), {k: dict(v) for k, v in rules.items()},
                   check_settings(settings, f"{origin}: settings"))

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        return cls.from_dict(read_config_file(path, "config"), str(path))

    def with_changes(
        self,
        disable: tuple[str, ...] = (),
        enable: tuple[str, ...] = (),
        params: Mapping[str, Mapping[str, Any]] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Config:
        """A copy with rules switched off/on, parameters and settings set (for CLI options)."""
        rules = {k: dict(v) for k, v in self.rules.items()}
        for rule_id, values in (params or {}).items():
            rules.setdefault(rule_id, {}).update(values)
        disabled = (set(self.disabled_rules) | set(disable)) - set(enable)
        merged = check_settings({**self.settings, **(settings or {})}, "")
        return Config(frozenset(disabled), rules, merged, self.enabled_rules | frozenset(enable))

    def setting_values(self, profile: str = "default") -> dict[str, Any]:
        """The effective settings: defaults, then the profile's defaults, then what the site set."""
        return {**DEFAULT_SETTINGS, **PROFILE_SETTINGS.get(profile, {}), **self.settings}

    def fingerprint(self) -> str:
        """A short hash of everything that can change an outcome."""
        blob = json.dumps(
            {"disabled": sorted(self.disabled_rules), "rules": self.rules, "settings": self.setting_values()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_settings(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Settings checked against :data:`SETTINGS` (type, range, name) and each band's order."""
    checked = check_values(SETTINGS, values, "setting", where)
    effective = {**DEFAULT_SETTINGS, **checked}
    for low, high in _BANDS:
        if effective[low] >= effective[high]:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{low}={effective[low]:g} must be below {high}={effective[high]:g}")
    return checked


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


def parse_param_option(option: str) -> tuple[str | None, str, Any]:
    """``MET-2.window_months=12`` → ("MET-2", "window_months", 12); ``min_age=18`` → (None, "min_age", 18)."""
    try:
        target, raw = option.split("=", 1)
    except ValueError:
        raise ConfigError(f"--set {option!r}: expected RULE.PARAM=VALUE or SETTING=VALUE, "
                          "e.g. MET-2.window_months=12") from None
    rule_id, _, name = target.rpartition(".")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return rule_id.strip() or None, name.strip(), value
