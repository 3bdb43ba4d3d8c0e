"""Rule titles that name the values in force, and the effective configuration a run records."""

from __future__ import annotations

import json
from pathlib import Path

from batch_helpers import BATCH
from click.testing import CliRunner

from b12screen.cli import cli
from b12screen.core.effective import effective_title
from b12screen.core.model import Rule
from b12screen.core.params import Param


def _rule(title: str, **params: object) -> Rule:
    return Rule(id="X-1", title=title, version="1", basis="b", evaluate=lambda ctx: None, params=params)


def test_a_title_names_an_overridden_value_only_where_it_is_unambiguous() -> None:
    assert effective_title(_rule("Age 75 or over", age=Param(75, "years", "")), {"age": 80}) == "Age 80 or over"
    assert effective_title(_rule("Age 75 or over", age=75), {"age": 75.5}) == "Age 75.5 or over"
    assert effective_title(_rule("Age 75 or over", age=75), {}) == "Age 75 or over"
    shared = _rule("12 months after 12 months", a=12, b=12)  # two parameters share the default: kept
    assert effective_title(shared, {"a": 6}) == shared.title
    once = _rule("Age 65 with 65 mg", age=65, dose=65)  # which 65 is whose cannot be told: kept
    assert effective_title(once, {"age": 70}) == once.title
    alone = _rule("Age 65 or over", age=65, dose=65)
    assert effective_title(alone, {"dose": 80}) == alone.title  # the 65 written may be the age's
    assert effective_title(_rule("For 4 months", m=4), {"m": 14}) == "For 14 months"
    assert effective_title(_rule("For 140 months", m=4), {"m": 5}) == "For 140 months"  # never inside a number


def test_batch_records_the_options_the_values_and_the_titles_in_force(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["batch", str(BATCH / "export"), str(BATCH / "bundles"), "--out",
                                    str(tmp_path / "out"), "--as-of", "2026-11-24", "--set", "AGE-75.age=80",
                                    "--set", "min_age=21", "--disable", "COMBO"])
    assert done.exit_code == 0, done.stderr
    run = json.loads((tmp_path / "out" / "summary.json").read_text())["run"]
    assert run["options"] == {"profile": "default", "config_file": None, "set": ["AGE-75.age=80", "min_age=21"],
                              "disable": ["COMBO"], "enable": []}
    config = run["configuration"]
    assert config["disabled_rules"] == ["COMBO"] and config["settings"]["min_age"] == 21
    assert config["rule_parameters"]["AGE-75"] == {"age": 80} and config["rule_parameters"]["MET-1"]
    assert config["rule_titles"]["AGE-75"] == "Age 80 or over"
    assert config["rule_titles"]["MET-1"] == "Metformin for more than 4 months"
