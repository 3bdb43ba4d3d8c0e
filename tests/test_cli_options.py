"""Option names agree across commands; today's names stay as aliases; ``-v`` works after the sub-command."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from b12screen.cli import cli

DEMO = str(FIXTURES / "examples" / "demo-bundle.json")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("option", ["--rules-config", "--config"])
def test_rules_configuration_option_and_its_alias(tmp_path, option: str) -> None:
    config = tmp_path / "site.toml"
    config.write_text('disabled_rules = ["ACID-1"]\n')
    out = run("screen", "--as-of", "2026-11-24", "--format", "report", option, str(config), DEMO)
    assert out.exit_code == 0
    assert {r["patient"]: r for r in json.loads(out.stdout)}["Patient/demo-ppi"]["outcome"] == "no-suggestion"
    listed = {r["id"]: r for r in json.loads(run("rules", "--json", option, str(config)).stdout)}
    assert listed["ACID-1"]["status"] == "disabled" and listed["ACID-2"]["status"] != "disabled"


@pytest.mark.parametrize("option", ["-o", "--out", "--output"])
def test_screen_output_option_and_aliases(tmp_path, option: str) -> None:
    target = tmp_path / "out.json"
    out = run("screen", "--as-of", "2026-11-24", "--format", "report", option, str(target), DEMO)
    assert out.exit_code == 0 and out.stdout == ""
    assert len(json.loads(target.read_text())) >= 2


@pytest.mark.parametrize("option", ["-o", "--out", "--output"])
def test_batch_output_option_and_aliases(tmp_path, option: str) -> None:
    out = run("batch", "--as-of", "2026-11-24", "--no-progress", option, str(tmp_path / "o"), DEMO)
    assert out.exit_code == 0, out.stderr
    assert (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("args", [["-v", "rules"], ["rules", "-v"], ["plugins", "-v"]])
def test_verbose_before_or_after_the_sub_command(restore_logging, args: list[str]) -> None:
    restore_logging.handlers[:] = []
    out = run(*args)
    assert out.exit_code == 0
    assert restore_logging.level == logging.INFO


def test_vv_after_the_sub_command_adds_up_to_debug(restore_logging) -> None:
    restore_logging.handlers[:] = []
    assert run("-v", "rules", "-v").exit_code == 0
    assert restore_logging.level == logging.DEBUG
    assert run("rules").exit_code == 0
    assert restore_logging.level == logging.WARNING
