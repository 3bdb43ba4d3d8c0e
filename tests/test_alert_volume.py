"""Alert volume (docs/reference/clinical-rules.md section 7 point 11): the service's lowest card priority, and the share
of flags that come from AGE-75 alone in summary.json and summary.html."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import batch
from cdshooks_helpers import AS_OF, full_prefetch, metformin_request, request_body, searchset
from click.testing import CliRunner

from b12screen import Screener
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.declarations import PATIENT_VIEW
from b12screen.cdshooks.handler import CardRegistry, HookHandler
from b12screen.cdshooks.security import ANONYMOUS
from b12screen.cli import cli
from b12screen.errors import ConfigError
from b12screen.plugins import get_plugin_manager

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@cache
def _screener() -> Screener:
    return Screener(plugin_manager=get_plugin_manager(load_entry_points=False))


def _cards(prefetch: dict[str, Any], **settings: Any) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:
        handler = HookHandler(ServiceConfig(insecure_no_auth=True, **settings), _screener(), lambda: AS_OF, pool,
                              CardRegistry())
        return handler.call(PATIENT_VIEW, request_body(prefetch=prefetch), ANONYMOUS, float("inf")).body["cards"]


#: metformin since 2026-01-01 at 56: MET-1 (LOW); since 2019 at 71: MET-2 (MEDIUM).
LOW = full_prefetch(birth="1970-01-01", medicationRequests=searchset(metformin_request("m1", "p1", "2026-01-01")))
MEDIUM = full_prefetch(birth="1955-01-01", medicationRequests=searchset(metformin_request("m1", "p1")))


@pytest.mark.parametrize(("setting", "low_cards", "medium_cards"), [
    ("low", 1, 1), ("medium", 0, 1), ("high", 0, 0),
])
def test_the_lowest_card_priority_keeps_lower_suggestions_off_the_screen(setting: str, low_cards: int,
                                                                         medium_cards: int) -> None:
    low, medium = _cards(LOW, min_card_priority=setting), _cards(MEDIUM, min_card_priority=setting)
    assert (len(low), len(medium)) == (low_cards, medium_cards)
    for [card] in (c for c in (low, medium) if c):
        assert card["source"]["topic"]["code"] == "suggest-b12-test"


def test_the_default_shows_every_priority() -> None:
    assert ServiceConfig().min_card_priority == "low"
    assert len(_cards(LOW)) == 1


def test_the_setting_is_read_from_the_environment_and_checked() -> None:
    assert ServiceConfig.load(environ={"B12SCREEN_CDS_MIN_CARD_PRIORITY": "medium"}).min_card_priority == "medium"
    with pytest.raises(ConfigError, match="min_card_priority must be one of low, medium, high, not 'urgent'"):
        ServiceConfig.load(environ={"B12SCREEN_CDS_MIN_CARD_PRIORITY": "urgent"})


def test_check_config_shows_the_lowest_card_priority() -> None:
    env = {"B12SCREEN_CDS_MIN_CARD_PRIORITY": "high", "B12SCREEN_CDS_INSECURE_NO_AUTH": "true"}
    result = CliRunner().invoke(cli, ["serve", "--check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["min_card_priority"] == "high"
    bad = CliRunner().invoke(cli, ["serve", "--check-config"], env={**env, "B12SCREEN_CDS_MIN_CARD_PRIORITY": "x"})
    assert bad.exit_code == 2 and "min_card_priority must be one of low, medium, high" in bad.output


def test_summary_shows_the_share_of_flags_from_age_75_alone(tmp_path: Path) -> None:
    """age75.json: two flags from AGE-75 alone and one COMBO flag (a 75-year-old vegetarian)."""
    result = batch(_screener(), [FIXTURES / "clinical" / "age75.json"], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["flagged"] == 3
    assert summary["age_75_alone"] == {"flags": 2, "share": 0.6667} == result.summary["age_75_alone"]
    page = (tmp_path / "out" / "summary.html").read_text()
    assert "2 of 3 flags (66.7 %) come from AGE-75 alone" in page


def test_the_share_counts_only_flags_whose_only_reason_is_age_75(tmp_path: Path) -> None:
    paths = [FIXTURES / "clinical" / "age75.json", FIXTURES / "clinical" / "met3.json"]
    batch(_screener(), paths, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "out" / "report.ndjson").read_text().splitlines()]
    alone = sum(1 for r in rows if r["rules"] == ["AGE-75"] and r["priority"] is not None)
    assert alone == 2 and summary["flagged"] > 3
    assert summary["age_75_alone"] == {"flags": 2, "share": round(2 / summary["flagged"], 4)}
