"""Outputs for analysts: report.csv, the summary.json additions, screen_paths and results.to_rows()."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch, rows
from conftest import AS_OF

import b12screen
from b12screen import Screener
from b12screen.sinks.rows import COLUMNS, csv_line, reasons


def _parquet_reader():  # type: ignore[no-untyped-def]
    """pyarrow.parquet, an independent reader of what arro3 wrote; skips unless both are installed."""
    pytest.importorskip("arro3.io", reason="the parquet extra (arro3) is not installed")
    return pytest.importorskip("pyarrow.parquet", reason="pyarrow (of the test extra) reads the table back")

FIXED = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def _flat(row: dict) -> dict[str, str]:
    """A to_rows() dict as csv.DictReader reads it back from report.csv."""
    return dict(csv.DictReader(io.StringIO(csv_line(row).decode(), newline=""), fieldnames=COLUMNS).__next__())


def test_report_csv_has_one_flat_row_per_patient_in_report_order(screener: Screener, tmp_path: Path) -> None:
    batch(screener, [BATCH / "export", BATCH / "bundles"], tmp_path / "out")
    table = _csv(tmp_path / "out" / "report.csv")
    report = rows(tmp_path / "out" / "report.ndjson")
    assert list(table[0]) == list(COLUMNS)
    assert [r["patient"] for r in table] == [r["patient"] for r in report]
    by_patient = {r["patient"]: r for r in table}
    low = by_patient["Patient/7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5"]  # MOD-LOW decided: no rule
    assert (low["flagged"], low["outcome"], low["priority"], low["reasons"], low["modifiers"]) == (
        "true", "unactioned-low-b12", "high", "MOD-LOW", "MOD-LOW")
    assert low["recommended_test_code"] == "" and "Latest B12 120 ng/L" in low["flag_text"]
    met = by_patient["Patient/bx-met"]
    assert (met["reasons"], met["recommended_test_code"], met["evidence_count"]) == ("MET-2", "2132-9", "1")
    assert met["flag_text"].startswith("Consider checking vitamin B12.") and met["as_of"] == "2026-11-24"
    quiet = by_patient["Patient/bx-only"]
    assert (quiet["flagged"], quiet["priority"], quiet["reasons"], quiet["flag_text"]) == ("false", "", "", "")
    assert sum(r["flagged"] == "true" for r in table) == 5


def test_report_csv_is_identical_for_any_number_of_workers(screener: Screener, tmp_path: Path) -> None:
    paths = [BATCH / "export", BATCH / "bundles"]
    batch(screener, paths, tmp_path / "one", workers=1)
    batch(screener, paths, tmp_path / "two", workers=2, unit_bytes=200)
    assert (tmp_path / "one" / "report.csv").read_bytes() == (tmp_path / "two" / "report.csv").read_bytes()


def test_summary_counts_priorities_reasons_files_and_records_the_run(screener: Screener, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    (export / "notes.txt").write_text("not data")
    batch(screener, [export, BATCH / "bundles"], tmp_path / "out", workers=2, clock=lambda: FIXED)
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["by_priority"] == {"low": 1, "medium": 2, "high": 2}
    assert data["by_reason"] == {"ACID-1": 1, "MET-2": 2, "MOD-DX": 1, "MOD-LOW": 1}  # modifier-decided flags too
    assert sum(data["by_priority"].values()) == data["flagged"]
    assert (data["files_read"], data["files_ignored"]) == (11, 1)  # notes.txt; log.ndjson is metadata, skipped
    assert data["ignored_files"] == [str(export / "notes.txt")]
    assert data["run"] == {
        "b12screen_version": b12screen.__version__, "ruleset_version": screener.ruleset_version,
        "as_of": "2026-11-24", "profile": "default", "config_fingerprint": screener.config.fingerprint(),
        "options": {}, "configuration": screener.effective_configuration(), "min_cell": 11,
        "inputs": [str(export), str(BATCH / "bundles")], "engine": "local", "workers": 2,
        "spark_master": None, "started": "2026-11-24T09:30:00+00:00", "ended": "2026-11-24T09:30:00+00:00"}


def test_reasons_are_the_rules_else_the_deciding_modifier() -> None:
    base = {"rules": [], "modifiers": ["MOD-DX-HIST"], "outcome": "no-suggestion"}
    assert reasons(base) == []
    assert reasons(base | {"outcome": "deficiency-without-treatment", "modifiers": ["MOD-DX"]}) == ["MOD-DX"]
    assert reasons(base | {"outcome": "suggest-mma", "rules": ["MET-2"], "modifiers": ["MOD-RENAL"]}) == ["MET-2"]


def test_screen_paths_reads_folders_and_globs_like_the_command_line(tmp_path: Path) -> None:
    results = b12screen.screen_paths([BATCH / "bundles", str(BATCH / "export" / "Medication*.ndjson"),
                                      str(tmp_path / "nothing-*.json")], AS_OF)
    missing = tmp_path / "nothing-*.json"
    assert [str(e) for e in results.errors] == [f"{missing}: no file or folder matches this pattern"]
    table = results.to_rows()
    assert [r["patient"] for r in table] == sorted(r["patient"] for r in table)
    ada = next(r for r in table if r["patient"] == "Patient/c3a1f0e2-5d4b-4a69-8b7c-2e1f0a9b8c7d")
    assert (ada["flagged"], ada["reasons"], ada["risk_factors"]) == (True, ["MET-2"], ["MET-2"])


def test_to_rows_are_the_rows_of_report_csv(screener: Screener, tmp_path: Path) -> None:
    batch(screener, [BATCH / "bundles"], tmp_path / "out")
    from_batch = _csv(tmp_path / "out" / "report.csv")
    from_python = b12screen.screen_paths(str(BATCH / "bundles" / "*.json"), AS_OF, screener=screener).to_rows()
    assert [_flat(r) for r in from_python] == from_batch
    assert all(isinstance(r["reasons"], list) and isinstance(r["flagged"], bool) for r in from_python)


def test_report_parquet_has_typed_columns_and_the_csv_rows(screener: Screener, tmp_path: Path) -> None:
    pq = _parquet_reader()
    batch(screener, [BATCH / "bundles"], tmp_path / "one", workers=1)
    batch(screener, [BATCH / "bundles"], tmp_path / "two", workers=2, unit_bytes=200)
    table = pq.read_table(tmp_path / "one" / "report.parquet")
    assert table.column_names == list(COLUMNS)
    types = {f.name: str(f.type) for f in table.schema}
    assert (types["flagged"], types["evidence_count"], types["as_of"], types["reasons"]) == (
        "bool", "int64", "date32[day]", "list<element: string>")
    expected = b12screen.screen_paths(BATCH / "bundles", AS_OF, screener=screener).to_rows()
    assert table.to_pylist() == expected
    assert (tmp_path / "one" / "report.parquet").read_bytes() == (tmp_path / "two" / "report.parquet").read_bytes()


def test_report_parquet_row_groups_hold_batch_rows_whatever_the_record_batches(
        screener: Screener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows reach the writer in record batches of ARRAY_ROWS; the file's row groups are BATCH_ROWS rows all
    the same, with every row in order (none lost or doubled at a batch's edge)."""
    pq = _parquet_reader()
    from b12screen.sinks import parquet

    base = b12screen.screen_paths(BATCH / "bundles", AS_OF, screener=screener).to_rows()
    many = [r | {"patient": f"{r['patient']}-{i}", "as_of": AS_OF.isoformat()} for i in range(4) for r in base]
    monkeypatch.setattr(parquet, "ARRAY_ROWS", 2)
    monkeypatch.setattr(parquet, "BATCH_ROWS", 3)
    parquet.write_rows(iter(many), tmp_path / "t.parquet")
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [3] * (len(many) // 3) + ([len(many) % 3] if len(many) % 3 else [])
    assert [r["patient"] for r in pq.read_table(tmp_path / "t.parquet").to_pylist()] == [r["patient"] for r in many]


@pytest.mark.parametrize(("workers", "unit_bytes"), [(1, 10**9), (1, 200), (2, 200)])
@pytest.mark.slow
def test_the_parquet_libraries_load_only_once_the_screening_is_done_and_never_pyarrow(
        tmp_path: Path, workers: int, unit_bytes: int) -> None:
    """report.parquet is written by the batch process once the screening is done: arro3 is not in it while
    rules run (in the batch process itself, one worker and one unit, or in workers forked from it), and
    pyarrow, pandas and NumPy are never loaded. A fresh interpreter, since this one has loaded them all."""
    pq = _parquet_reader()
    seen = tmp_path / "mapped"
    code = f"""
import os, sys
from datetime import date
from pathlib import Path
from b12screen import Finding, Rule, Screener, hookimpl
from b12screen.batch import BatchOptions, run_batch
from b12screen.plugins import get_plugin_manager
main = os.getpid()
class Watch:
    @hookimpl
    def b12screen_rules(self):
        def watch(ctx):
            mapped = "/arro3/" in Path(f"/proc/{{main}}/maps").read_text() or "arro3.io" in sys.modules
            with open({str(seen)!r}, "a") as f:
                f.write(f"{{int(mapped)}}\\n")
            return None
        return [Rule(id="ZZ-WATCH", title="watch", version="1", basis="x", evaluate=watch)]
pm = get_plugin_manager(load_entry_points=False)
pm.register(Watch(), name="watch")
run_batch([{str(BATCH / "bundles")!r}], {str(tmp_path / "out")!r}, Screener(plugin_manager=pm),
          BatchOptions(as_of=date.fromisoformat({str(AS_OF)!r}), workers={workers}, unit_bytes={unit_bytes},
                       progress=False))
print(sorted(m for m in sys.modules  # the bare namespace package arro3 holds no code
             if m.partition(".")[0] in ("pyarrow", "pandas", "numpy") or m in ("arro3.io", "arro3.core")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['arro3.core', 'arro3.io']"
    assert set(seen.read_text().split()) == {"0"}
    assert pq.read_table(tmp_path / "out" / "report.parquet").num_rows == len(rows(tmp_path / "out" / "report.ndjson"))


def test_a_failure_to_write_report_parquet_is_an_output_error_and_leaves_no_output(
        screener: Screener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("arro3.io", reason="the parquet extra (arro3) is not installed")
    from b12screen.batch import OutputError
    from b12screen.sinks import parquet

    def full(rows: object, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parquet, "write_rows", full)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"report\.parquet: No space left on device"):
        batch(screener, [BATCH / "bundles"], out)
    assert sorted(p.name for p in out.iterdir()) == []
