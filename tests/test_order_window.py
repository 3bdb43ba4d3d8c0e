"""The injection-order window (docs/reference/clinical-rules.md 6.6) is the setting ``parenteral_order_months``: an
active parenteral B12 order counts as therapy (MOD-TX-IM) only when authored within it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from conftest import AS_OF, bundle, metformin_request, patient

from b12screen import Config, Screener
from b12screen.cli import cli
from b12screen.core.config import SETTINGS
from b12screen.errors import ConfigError
from b12screen.sinks.flag import flag_json

STALE_NOTE = "An active B12 injection order from {} is on file: confirm that treatment is current"


def injection_order(pid: str, days_ago: int) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": f"{pid}-inj", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "309594",
                "display": "vitamin B12 (cyanocobalamin) 1 MG/ML Injectable Solution"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "authoredOn": (AS_OF - timedelta(days=days_ago)).isoformat()}


def record(days_ago: int) -> dict[str, Any]:
    """Active metformin for 2 years (MET-1) and an active injection order authored ``days_ago``."""
    return bundle(patient("p", birth="1970-01-01"), metformin_request("m", "p", "2024-11-01"),
                  injection_order("p", days_ago))


def screened(days_ago: int, **settings: Any) -> Any:
    config = Config().with_changes(settings=settings) if settings else None
    return Screener(config=config).screen(record(days_ago), AS_OF)[0]


def assert_therapy(result: Any) -> None:
    assert (result.outcome, result.modifiers) == ("suppressed", ["MOD-TX-IM"])
    assert result.rules == [] and result.triggered == ["MET-1"]


def assert_stale(result: Any, days_ago: int) -> None:
    assert (result.outcome, result.rules, result.modifiers) == ("suggest-b12-test", ["MET-1"], [])
    when = (AS_OF - timedelta(days=days_ago)).isoformat()
    assert STALE_NOTE.format(when) + "." in flag_json(result)["code"]["text"]


def test_the_setting_is_declared_typed_and_ranged() -> None:
    spec = SETTINGS["parenteral_order_months"]
    assert (spec.default, spec.unit, spec.minimum, spec.maximum, spec.type) == (12, "months", 0, 1200, float)
    assert "order" in spec.description


# 12 months = 365.28 days: an order authored 365 days ago is inside, 366 days ago outside.
@pytest.mark.parametrize(("days_ago", "inside"), [(0, True), (360, True), (365, True), (366, False), (3000, False)])
def test_default_window_is_twelve_months(days_ago: int, inside: bool) -> None:
    result = screened(days_ago)
    if inside:
        assert_therapy(result)
    else:
        assert_stale(result, days_ago)


# 6 months = 182.64 days; 24 months = 730.56 days.
@pytest.mark.parametrize(("months", "inside_days", "outside_days"), [(6, 182, 183), (24, 730, 731), (0, 0, 1)])
def test_the_setting_moves_the_boundary(months: float, inside_days: int, outside_days: int) -> None:
    assert_therapy(screened(inside_days, parenteral_order_months=months))
    assert_stale(screened(outside_days, parenteral_order_months=months), outside_days)


def test_a_longer_window_makes_a_stale_order_current_and_drops_the_note() -> None:
    assert_stale(screened(400), 400)
    result = screened(400, parenteral_order_months=14)
    assert_therapy(result)
    assert flag_json(result) is None and result.notes == []


def test_administrations_keep_their_own_window() -> None:
    """Only orders and statements use the order window; a dose given is therapy within parenteral_months."""
    given = {"resourceType": "MedicationAdministration", "id": "p-adm", "status": "completed",
             "medicationCodeableConcept": injection_order("p", 0)["medicationCodeableConcept"],
             "subject": {"reference": "Patient/p"},
             "effectiveDateTime": (AS_OF - timedelta(days=60)).isoformat()}
    data = bundle(patient("p", birth="1970-01-01"), metformin_request("m", "p", "2024-11-01"), given)
    narrow = Screener(config=Config().with_changes(settings={"parenteral_order_months": 1})).screen(data, AS_OF)[0]
    assert_therapy(narrow)


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    path = tmp_path / "order-400d.json"
    path.write_bytes(orjson.dumps(record(400)))
    return path


def _outcome(out: Any) -> str:
    assert out.exit_code == 0, out.stderr
    return orjson.loads(out.stdout)[0]["outcome"]


def test_set_and_config_file_change_the_window(record_file: Path, tmp_path: Path) -> None:
    base = ("screen", "--as-of", AS_OF.isoformat(), "--format", "report")
    assert _outcome(_run(*base, str(record_file))) == "suggest-b12-test"
    assert _outcome(_run(*base, "--set", "parenteral_order_months=14", str(record_file))) == "suppressed"
    site = tmp_path / "site.toml"
    site.write_text("[settings]\nparenteral_order_months = 14\n")
    assert _outcome(_run(*base, "--rules-config", str(site), str(record_file))) == "suppressed"


def test_rules_shows_the_effective_window() -> None:
    default = _run("rules")
    assert default.exit_code == 0
    assert "parenteral_order_months = 12 months  (MOD-TX-IM: an active injection order" in default.stdout
    changed = _run("rules", "--set", "parenteral_order_months=18")
    assert "parenteral_order_months = 18.0 months" in changed.stdout


@pytest.mark.parametrize(("value", "shown"), [("soon", "'soon'"), ("-1", "-1"), ("1201", "1201"), ("true", "True")])
def test_bad_values_are_exit_2_naming_the_setting_and_what_is_expected(record_file: Path, value: str,
                                                                       shown: str) -> None:
    out = _run("screen", "--set", f"parenteral_order_months={value}", str(record_file))
    assert out.exit_code == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert (f"parenteral_order_months={shown} is not valid: expected a number from 0 to 1200 (months)"
            in out.stderr)


def test_a_bad_value_in_a_config_file_names_the_file(record_file: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[settings]\nparenteral_order_months = "a year"\n')
    out = _run("screen", "--rules-config", str(site), str(record_file))
    assert out.exit_code == 2
    assert "site.toml: settings.parenteral_order_months='a year' is not valid: expected a number" in out.stderr
    with pytest.raises(ConfigError, match="parenteral_order_months=5000 is not valid"):
        Config.from_dict({"settings": {"parenteral_order_months": 5000}})


def test_every_door_reads_the_window_from_the_same_configuration(record_file: Path, tmp_path: Path) -> None:
    """screen, batch and the CDS service, each given the site file, treat the 400-day-old order alike."""
    import warnings

    from batch_helpers import batch, rows
    from cdshooks_helpers import full_prefetch, request_body, searchset

    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    site = tmp_path / "site.toml"
    site.write_text("[settings]\nparenteral_order_months = 14\n")
    prefetch = full_prefetch("p", birth="1970-01-01", medicationRequests=searchset(
        metformin_request("m", "p", "2024-11-01"), injection_order("p", 400)))
    for config, outcome, cards in ((None, "suggest-b12-test", 1), (site, "suppressed", 0)):
        screener = Screener(config=Config.from_file(config) if config else None)
        out = tmp_path / f"batch-{cards}"
        batch(screener, [record_file], out)
        assert [r["outcome"] for r in rows(out / "report.ndjson")] == [outcome]
        app = create_app(ServiceConfig(rules_config=str(config) if config else None, insecure_no_auth=True),
                         today=lambda: AS_OF)
        with TestClient(app) as client:
            answer = client.post("/cds-services/b12screen-patient-view", json=request_body(pid="p", prefetch=prefetch))
        assert answer.status_code == 200 and len(answer.json()["cards"]) == cards
        if cards:
            assert STALE_NOTE.format((AS_OF - timedelta(days=400)).isoformat()) in answer.json()["cards"][0]["detail"]


@pytest.mark.parametrize(("days_ago", "months", "inside"), [(365, 12, True), (366, 12, False), (366, 13, True)])
def test_an_active_statement_uses_the_same_window(days_ago: int, months: float, inside: bool) -> None:
    order = injection_order("p", 0)
    statement = {"resourceType": "MedicationStatement", "id": "p-st", "status": "active",
                 "medicationCodeableConcept": order["medicationCodeableConcept"], "subject": order["subject"],
                 "effectiveDateTime": (AS_OF - timedelta(days=days_ago)).isoformat()}
    data = bundle(patient("p", birth="1970-01-01"), metformin_request("m", "p", "2024-11-01"), statement)
    config = Config().with_changes(settings={"parenteral_order_months": months})
    result = Screener(config=config).screen(data, AS_OF)[0]
    if inside:
        assert_therapy(result)
    else:
        assert_stale(result, days_ago)


def test_explain_shows_each_injection_order_against_the_window() -> None:
    from b12screen.core.explain import explain, render
    from b12screen.screening import group
    from b12screen.sources import read_value
    from b12screen.sources.validation import ALL

    def mod_tx_im(days_ago: int, months: float) -> dict[str, Any]:
        screener = Screener(config=Config().with_changes(settings={"parenteral_order_months": months}))
        grouped = group(screener, read_value(record(days_ago), "t"), ALL)
        explanation = explain(screener, next(iter(grouped.patients.values())).record(), AS_OF)
        assert render(explanation).count("injection order MedicationRequest/p-inj") == 1
        return next(m for m in explanation["modifiers"] if m["id"] == "MOD-TX-IM")

    stale = mod_tx_im(366, 12)
    assert not stale["applied"] and stale["figures"] == [
        "injection order MedicationRequest/p-inj from 2025-11-23: outside the 12-month order window (from 2025-11-24)"]
    current = mod_tx_im(366, 13)
    assert current["applied"] and current["figures"] == [
        "injection order MedicationRequest/p-inj from 2025-11-23: inside the 13-month order window (from 2025-10-25)"]
