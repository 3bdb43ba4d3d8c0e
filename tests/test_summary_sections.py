"""summary.html explains itself: warnings, what every code means, who, and the configuration in force
(rendered by headless Chromium, as a reader's browser would; skipped where absent)."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest
from batch_helpers import BATCH, write_ndjson
from conftest import patient
from test_summary_page import CHROMIUM, _dom

from b12screen import Screener
from b12screen.batch import BatchOptions, run_batch
from b12screen.core.config import Config
from b12screen.sinks.summary_sections import latest_b12, warnings


def _table(dom: str, table_id: str) -> list[list[str]]:
    part = dom[dom.index(f'id="{table_id}"'):]
    part = part[:part.index("</table>")]
    return [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", part)[1:]]


def _page(make_screener, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "Patient.009.ndjson", [patient("kid", "2015-06-01", gender="male"),
                                                 patient("gone", "1940-01-01", deceasedBoolean=True)])
    screener: Screener = make_screener(config=Config().with_changes(params={"AGE-75": {"age": 80}}))
    given = {"profile": "default", "config_file": None, "set": ["AGE-75.age=80"], "disable": [], "enable": []}
    run_batch([str(export), str(BATCH / "bundles")], tmp_path / "out", screener,
              BatchOptions(as_of=date(2030, 1, 1), workers=1, progress=False, given=given))
    return tmp_path / "out" / "summary.html"


def test_weak_coverage_and_the_as_of_trap_come_first() -> None:
    summary = {"patients": 40, "coverage": {"medication": 30, "laboratory result": 3, "B12 result": 0},
               "as_of_warning": "the as-of date 2030-01-01 is 3.3 years after the newest record"}
    html = warnings(summary)
    assert "The as-of date 2030-01-01 is 3.3 years after" in html
    assert "No B12 results in this data: every patient shows as untested." in html
    assert "Only 3 of 40 patients (8 %) have a laboratory result" in html and "medication" not in html
    assert warnings({"patients": 40, "coverage": {"B12 result": 4}}) == ""  # 10 %: not weak


def test_the_latest_b12_in_a_few_words() -> None:
    row = {"latest_b12_value": 120.0, "latest_b12_unit": "ng/L", "latest_b12_band": "deficient",
           "latest_b12_date": date(2026, 9, 1)}
    assert latest_b12(row) == "120 ng/L, deficient, 2026-09-01"
    assert latest_b12({"latest_b12_value": None}) == "never tested"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
@pytest.mark.slow
def test_chromium_shows_codes_who_and_the_configuration(make_screener, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dom = _dom(_page(make_screener, tmp_path), tmp_path)
    alert = dom[dom.index('id="warnings"'):]
    assert "The as-of date 2030-01-01 is 3.3 years after the newest record in the input (2026-09-01)" in alert
    outcomes = {row[0]: row[1:] for row in _table(dom, "outcome-codes")}
    assert outcomes["not-evaluated"] == ["Not evaluated", "no"] and outcomes["suggest-mma"][1] == "yes"
    assert [row[0] for row in _table(dom, "priority-codes")] == ["low", "medium", "high"]
    reasons = {row[0]: row[1:] for row in _table(dom, "reason-codes")}
    assert reasons["MOD-DX"][0].startswith("B12 deficiency diagnosed") and reasons["MET-2"][1].startswith("Ko 2014")
    assert all(title for title, _basis in reasons.values())
    ages = {row[0]: row[1:] for row in _table(dom, "by-age")}
    assert ages["&lt;18"] == ["1", "0"] and ages["unknown"] == ["1", "1"]  # the bundle patient without birthDate
    assert {row[0]: row[1] for row in _table(dom, "by-sex")}["male"] == "1"
    assert ("2 not evaluated: 1 deceased, 1 under the minimum age (minimum age 18). Patients with no birth "
            "date: 1") in dom
    met = next(row for row in _table(dom, "flagged") if row[0] == "Patient/bx-met")
    assert met[1:4] == ["79", "female", "medium"] and met[6] == "never tested"
    assert "last recorded on 2016-02-10" in met[8]  # the data ends years before 2030: the Flag says so
    assert ["set", "AGE-75.age=80"] in _table(dom, "options")
    assert ["AGE-75.age", "80"] in _table(dom, "values") or ["AGE-75.age", "80.0"] in _table(dom, "values")
