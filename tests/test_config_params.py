"""Typed rule parameters and settings: checked once at load, exit 2 with name, value, expectation, hint."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, bundle, metformin_request, patient

from b12screen import Rule, Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cli import cli
from b12screen.core.config import SETTINGS, Config
from b12screen.core.params import Param, check_value
from b12screen.errors import ConfigError
from b12screen.plugins import get_plugin_manager

DEMO = str(FIXTURES / "examples" / "demo-bundle.json")
AS_OF = date(2026, 11, 24)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(("option", "expected"), [
    ("MET-2.dose_mg_per_day=high", "MET-2.dose_mg_per_day='high' is not valid: expected a number from 0 to 10000 "
                                   "(mg/day)"),
    ("MET-2.dose_mg_pr_day=2000", "unknown parameter 'dose_mg_pr_day'; did you mean 'dose_mg_per_day'?"),
    ("MET-2.window_months=-3", "MET-2.window_months=-3 is not valid: expected a number from 0 to 1200 (months)"),
    ("min_age=-5", "min_age=-5 is not valid: expected a whole number from 0 to 130 (years)"),
    ("min_age=eighteen", "min_age='eighteen' is not valid"),
    ("min_agee=18", "unknown setting 'min_agee'; did you mean 'min_age'?"),
    ("total_b12_deficient_ng_l=400", "total_b12_deficient_ng_l=400 must be below total_b12_normal_ng_l=350"),
    ("evaluate_deceased=1", "evaluate_deceased=1 is not valid: expected true or false"),
])
def test_bad_set_is_exit_2_naming_name_value_and_expectation(option: str, expected: str) -> None:
    out = run("screen", "--as-of", "2026-11-24", "--set", option, DEMO)
    assert out.exit_code == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_unknown_rule_in_enable_or_disable_suggests_the_near_miss() -> None:
    for flag in ("--disable", "--enable"):
        out = run("screen", flag, "MET-22", DEMO)
        assert out.exit_code == 2 and "unknown rule 'MET-22'; did you mean 'MET-2'?" in out.stderr
    far = run("screen", "--disable", "ZZZZZZ", DEMO)
    assert far.exit_code == 2 and "known: ACID-1" in far.stderr


def test_config_file_settings_checked_with_file_name(tmp_path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[settings]\nmin_age = "eighteen"\n')
    out = run("screen", "--config", str(config), DEMO)
    assert out.exit_code == 2 and "site.toml: settings.min_age='eighteen' is not valid" in out.stderr
    config.write_text("[rules.MET-2]\ndose_mg_per_day = true\n")
    out = run("screen", "--config", str(config), DEMO)
    assert out.exit_code == 2 and "MET-2.dose_mg_per_day=True is not valid" in out.stderr


def test_valid_values_are_converted_and_change_the_outcome() -> None:
    data = bundle(patient("p", birth="1940-01-01"), metformin_request("m", "p", "2024-01-01"))
    assert Screener().screen(data, AS_OF)[0].rules == ["MET-2"]
    younger = Screener(config=Config().with_changes(settings={"min_age": 100})).screen(data, AS_OF)[0]
    assert younger.outcome == "not-evaluated"
    # an integer for a float parameter is accepted; the boundary (age 86 >= 87 is false) makes MET-2 fall back
    older = Config(rules={"MET-2": {"age": 87, "long_exposure_years": 10}})
    assert Screener(config=older).screen(data, AS_OF)[0].rules == ["MET-1"]


def test_check_value_bounds_are_inclusive() -> None:
    spec = Param(4, "months", "x", 0, 12)
    assert check_value(spec, 0, "x") == 0.0 and check_value(spec, 12, "x") == 12.0
    with pytest.raises(ConfigError, match=re.escape("x=12.5 is not valid")):
        check_value(spec, 12.5, "x")
    with pytest.raises(ConfigError, match=re.escape("x=-0.1 is not valid")):
        check_value(spec, -0.1, "x")


def test_plain_plugin_defaults_keep_working_and_are_typed_from_the_default() -> None:
    from b12screen.hookspecs import hookimpl

    class Site:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            return [Rule(id="SITE-P", title="p", version="1", basis="test", params={"years": 4, "strict": False},
                         evaluate=lambda ctx: None)]

    manager = get_plugin_manager(load_entry_points=False)
    manager.register(Site())
    assert Screener(plugin_manager=manager, config=Config(rules={"SITE-P": {"years": 6.5}})).rule_params[
        "SITE-P"] == {"years": 6.5}
    with pytest.raises(ConfigError, match=re.escape("SITE-P.strict='yes' is not valid: expected true or false")):
        Screener(plugin_manager=manager, config=Config(rules={"SITE-P": {"strict": "yes"}}))


def test_service_rule_configuration_is_checked_at_start(tmp_path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.MET-1]\nmin_exposure_months = -1\n")
    with pytest.raises(ConfigError, match=re.escape("MET-1.min_exposure_months=-1 is not valid")):
        create_app(ServiceConfig(rules_config=str(rules), insecure_no_auth=True))


def test_rules_previews_the_effective_configuration() -> None:
    out = run("rules", "--json", "--set", "MET-2.dose_mg_per_day=2000", "--set", "MET-1.window_months=12")
    assert out.exit_code == 0
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    dose = rows["MET-2"]["params"]["dose_mg_per_day"]
    assert dose["value"] == 2000 and dose["default"] == 1500 and dose["unit"] == "mg/day" and dose["description"]
    assert rows["MET-1"]["window_months"] == 12 and rows["MET-2"]["window_months"] == 24
    assert rows["MET-1"]["window_unit"] == "months"
    text = run("rules", "--set", "min_age=16", "--set", "ACID-1.min_exposure_months=30")
    assert "min_exposure_months = 30.0 months" in text.stdout and "min_age = 16 years" in text.stdout
    assert run("rules", "--set", "MET-2.dose_mg_per_day=high").exit_code == 2


def test_every_setting_is_declared_with_unit_or_flag_and_description() -> None:
    for name, spec in SETTINGS.items():
        assert spec.description, name
        assert spec.unit or spec.type is bool, name
        assert check_value(spec, spec.default, name) == spec.default
