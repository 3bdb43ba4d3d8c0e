"""The command line: formats, stdin, options and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from conftest import FIXTURES, bundle, metformin_request, patient

from b12screen.cli import cli

DEMO = str(FIXTURES / "examples" / "demo-bundle.json")


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_bundle_is_the_default_format() -> None:
    out = run("screen", "--as-of", "2026-11-24", DEMO)
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["resourceType"] == "Bundle" and result["type"] == "collection"
    assert {e["resource"]["resourceType"] for e in result["entry"]} == {"Flag"}
    assert "screened 8 patient(s)" in out.stderr


def test_ndjson_and_report_formats() -> None:
    ndjson = run("screen", "--as-of", "2026-11-24", "--format", "ndjson", DEMO)
    flags = [json.loads(line) for line in ndjson.stdout.splitlines()]
    report = json.loads(run("screen", "--as-of", "2026-11-24", "--format", "report", DEMO).stdout)
    assert len(report) == 8
    assert len(flags) == sum(1 for r in report if r["priority"]) > 0


def test_stdin_input() -> None:
    data = json.dumps(bundle(patient("s1"), metformin_request("sm1", "s1", "2015-01-01")))
    out = run("screen", "--as-of", "2026-11-24", "--format", "report", "-", stdin=data)
    assert out.exit_code == 0
    assert json.loads(out.stdout)[0]["rules"] == ["MET-2"]


def test_profile_disable_and_set_change_the_outcome() -> None:
    base = ["screen", "--as-of", "2026-11-24", "--format", "report", DEMO]
    nice = {r["patient"]: r for r in json.loads(run(*base, "--profile", "nice").stdout)}
    assert nice["Patient/demo-metformin"]["outcome"] == "no-suggestion"
    assert nice["Patient/demo-metformin"]["risk_factors"] == ["MET-2"]
    off = {r["patient"]: r for r in json.loads(run(*base, "--disable", "ACID-1").stdout)}
    assert off["Patient/demo-ppi"]["outcome"] == "no-suggestion"
    longer = {r["patient"]: r for r in json.loads(run(*base, "--set", "ACID-1.min_exposure_months=60").stdout)}
    assert longer["Patient/demo-ppi"]["outcome"] == "no-suggestion"


def test_exit_1_when_some_input_is_bad_and_2_when_nothing_is_readable() -> None:
    bad = str(FIXTURES / "errors" / "bundle-with-bad-entries.json")
    partial = run("screen", "--as-of", "2026-11-24", "--validate", "all", bad)
    assert partial.exit_code == 1
    assert "entry[3]: invalid MedicationRequest" in partial.stderr
    # By default only evidence is validated: the invalid MedicationRequest is not what the Flag rests on.
    default = run("screen", "--as-of", "2026-11-24", bad)
    assert default.exit_code == 1 and "invalid MedicationRequest" not in default.stderr
    nothing = run("screen", str(FIXTURES / "errors" / "malformed.json"))
    assert nothing.exit_code == 2
    assert "malformed.json: malformed JSON" in nothing.stderr


def test_usage_errors_exit_2() -> None:
    assert run("screen").exit_code == 2
    assert run("screen", "--as-of", "24/11/2026", DEMO).exit_code == 2
    assert run("screen", "--profile", "us", DEMO).exit_code == 2
    unknown_rule = run("screen", "--disable", "NOPE-1", DEMO)
    assert unknown_rule.exit_code == 2 and "NOPE-1" in unknown_rule.stderr
    bad_param = run("screen", "--set", "MET-2.colour=red", DEMO)
    assert bad_param.exit_code == 2 and "colour" in bad_param.stderr


def test_config_file(tmp_path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('disabled_rules = ["ACID-1"]\n\n[rules.MET-2]\nwindow_months = 12\n')
    out = run("screen", "--as-of", "2026-11-24", "--format", "report", "--config", str(config), DEMO)
    report = {r["patient"]: r for r in json.loads(out.stdout)}
    assert report["Patient/demo-ppi"]["outcome"] == "no-suggestion"
    broken = tmp_path / "broken.toml"
    broken.write_text("disabled_rules = [")
    failed = run("screen", "--config", str(broken), DEMO)
    assert failed.exit_code == 2 and "broken.toml" in failed.stderr
    not_a_table = tmp_path / "list.json"
    not_a_table.write_text('["ACID-1"]')
    refused = run("screen", "--config", str(not_a_table), DEMO)
    assert refused.exit_code == 2 and "list.json: the config must be a table/object" in refused.stderr


def test_no_patient_data_in_stderr() -> None:
    out = run("screen", "--as-of", "2026-11-24", "-v", DEMO)
    assert "demo-metformin" not in out.stderr and "1958" not in out.stderr


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "b12screen", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "b12screen" in proc.stdout
