"""summary.html: self-contained, and rendered by a real browser (headless Chromium; skipped where absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch, write_ndjson
from conftest import patient

from b12screen import Screener
from b12screen.sinks.summary_page import bar_chart

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]


def _page(screener: Screener, tmp_path: Path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "Patient.009.ndjson", [patient("late-one"), "{broken"])
    batch(screener, [export, BATCH / "bundles"], tmp_path / "out")
    return tmp_path / "out" / "summary.html"


def _dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           page.as_uri() + fragment], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_is_self_contained(screener: Screener, tmp_path: Path) -> None:
    html = _page(screener, tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", html)  # nothing to fetch
    assert "default-src 'none'" in html
    assert html.count("<svg") == 3 and "6 patients" not in html and "7 patients screened" in html


def test_bar_lengths_follow_the_counts() -> None:
    svg = bar_chart("t", {"a": 4, "b": 1, "c": 0})
    assert re.findall(r'<rect x="230" y="\d+" width="(\d+)"', svg) == ["400", "100", "0"]
    assert "<text x=\"0\" y=\"19\">a</text>" in svg and "<title>b: 1</title>" in svg


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
@pytest.mark.slow
def test_chromium_renders_the_page_and_filters_the_table(screener: Screener, tmp_path: Path) -> None:
    page = _page(screener, tmp_path)
    dom = _dom(page, tmp_path)
    assert "7 patients screened as of 2026-11-24" in dom and "5 flagged" in dom
    flagged = dom[dom.index('id="flagged"'):]
    flagged = flagged[:flagged.index("</table>")]
    assert flagged.count("<tr>") == 1 + 5  # heading and the five flagged patients
    assert "MOD-LOW" in flagged and "Patient/bx-only" not in flagged
    coverage = dom[dom.index('id="coverage"'):]
    assert re.search(r"<td>B12 result</td><td>1</td><td>14 %</td>", coverage)
    errors = dom[dom.index('id="errors"'):]
    assert "Patient.009.ndjson</td><td>2</td><td>malformed JSON" in errors
    assert dom.count("<rect") == 7 + 3 + 4  # outcomes, priorities, reasons
    filtered = _dom(page, tmp_path, "#filter=MOD-LOW")
    rows = re.findall(r"<tr( hidden=\"\")?><td>(Patient/[^<]+)</td>", filtered[filtered.index('id="flagged"'):])
    visible = [pid for hidden, pid in rows if not hidden]
    assert visible == ["Patient/7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5"] and len(rows) == 5
