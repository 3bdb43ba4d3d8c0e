"""``b12screen explain`` and :func:`b12screen.core.explain.explain`: rules, figures, modifiers, step, evidence."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from conftest import FIXTURES, bundle, metformin_request, patient

from b12screen import Rule, Screener
from b12screen.cli import cli
from b12screen.core.config import Config
from b12screen.core.explain import explain
from b12screen.core.modifiers import MODIFIERS
from b12screen.hookspecs import hookimpl
from b12screen.plugins import get_plugin_manager
from b12screen.screening import group
from b12screen.sources import read_path, read_value
from b12screen.sources.validation import ALL

DEMO = str(FIXTURES / "examples" / "demo-bundle.json")
AS_OF = date(2026, 11, 24)


def b12_test(rid: str, pid: str, when: str, value: float) -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "pg/mL", "system": "http://unitsofmeasure.org", "code": "pg/mL"}}


def one(data: dict, screener: Screener | None = None) -> dict:
    screener = screener or Screener()
    record = next(iter(group(screener, read_value(data, "t"), ALL).patients.values())).record()
    return explain(screener, record, AS_OF)


def rule(explanation: dict, rule_id: str) -> dict:
    return next(r for r in explanation["rules"] if r["id"] == rule_id)


def test_short_exposure_is_not_fired_with_the_figures_compared() -> None:
    data = bundle(patient("p"), metformin_request("m", "p", "2026-08-18"))
    result = one(data)
    assert result["outcome"] == "no-suggestion"
    met1 = rule(result, "MET-1")
    assert met1["status"] == "not fired"
    assert met1["figures"] == ["metformin exposure 3.2 months, needs more than 4"]
    assert result["decided_at"] == {"step": 5, "what": "rules whose triggers are met"}


def test_recent_test_inside_the_window_suppresses_and_says_so() -> None:
    data = bundle(patient("p"), metformin_request("m", "p", "2020-01-01"), b12_test("o", "p", "2025-06-01", 400))
    result = one(data)
    assert result["outcome"] == "suppressed" and result["decided_at"]["step"] == 8
    met2 = rule(result, "MET-2")
    assert met2["status"] == "fired"
    assert "latest B12 test that counts 2025-06-01, inside the 24-month window" in met2["figures"]
    assert rule(result, "MET-1")["replaced_by"] == "MET-2"
    recent = next(m for m in result["modifiers"] if m["id"] == "MOD-RECENT")
    assert recent["applied"] and recent["step"] == 8
    assert [m["id"] for m in result["modifiers"]] == [m.id for m in MODIFIERS]
    assert "Observation/o" in result["evidence"]
    old = bundle(patient("p"), metformin_request("m", "p", "2020-01-01"), b12_test("o", "p", "2024-01-10", 400))
    flagged = one(old)
    assert flagged["outcome"] == "suggest-b12-test"
    assert "latest B12 test that counts 2024-01-10, outside the 24-month window" in rule(flagged, "MET-2")["figures"]


def test_disabled_rules_and_the_age_step() -> None:
    data = bundle(patient("p", birth="2010-01-01"), metformin_request("m", "p", "2020-01-01"))
    result = one(data, Screener(config=Config(disabled_rules=frozenset({"MET-3"}))))
    assert rule(result, "MET-3")["status"] == "disabled"
    assert result["outcome"] == "not-evaluated" and result["decided_at"]["step"] == 1
    assert next(m for m in result["modifiers"] if m["id"] == "MOD-AGE-MIN")["applied"]


def test_a_plugin_opts_in_with_ctx_note_and_a_failing_rule_is_reported() -> None:
    class Site:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def close(ctx):
                ctx.note(f"score 3, needs {ctx.param('score'):g}")
                return None

            def broken(ctx):
                raise ValueError("bad data")

            return [Rule(id="SITE-N", title="n", version="1", basis="t", evaluate=close, params={"score": 4}),
                    Rule(id="SITE-B", title="b", version="1", basis="t", evaluate=broken)]

    manager = get_plugin_manager(load_entry_points=False)
    manager.register(Site())
    result = one(bundle(patient("p")), Screener(plugin_manager=manager))
    assert rule(result, "SITE-N") == {"id": "SITE-N", "title": "n", "version": "1", "status": "not fired",
                                      "figures": ["score 3, needs 4"]}
    assert rule(result, "SITE-B")["status"] == "failed" and "ValueError: bad data" in rule(result, "SITE-B")["error"]


def test_cli_json_is_the_python_explanation_and_text_names_the_step() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["explain", DEMO, "--patient", "demo-metformin", "--as-of", "2026-11-24", "--json"])
    assert out.exit_code == 0, out.stderr
    screener = Screener()
    record = group(screener, read_path(Path(DEMO)), ALL).patients["Patient/demo-metformin"].record()
    assert json.loads(out.stdout) == explain(screener, record, AS_OF)
    text = runner.invoke(cli, ["explain", DEMO, "--patient", "Patient/demo-metformin", "--as-of", "2026-11-24"])
    assert "decided at step 8" in text.stdout and "MET-2      fired" in text.stdout
    assert "daily dose 1500 mg, needs 1500 mg or more" in text.stdout


def test_cli_unknown_patient_and_bad_config_are_exit_2() -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["explain", DEMO, "--patient", "nobody", "--as-of", "2026-11-24"])
    assert missing.exit_code == 2 and "patient 'nobody' is not in the input" in missing.stderr
    bad = runner.invoke(cli, ["explain", DEMO, "--patient", "demo-metformin", "--set", "MET-1.window_months=x"])
    assert bad.exit_code == 2 and "MET-1.window_months='x' is not valid" in bad.stderr


def test_fired_rule_finding_matches_the_engine() -> None:
    data = bundle(patient("p"), metformin_request("m", "p", "2020-01-01"))
    result = one(data)
    assert rule(result, "MET-2")["decided"] is True and result["priority"] == "medium"
