"""Who the patients are, in one schema for every door: report.csv, report.parquet and to_rows()."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from datetime import date
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch, write_ndjson
from conftest import AS_OF, metformin_request, patient
from doc_examples import ROOT, page_blocks

import b12screen
from b12screen import Screener
from b12screen.sinks.rows import COLUMNS, KINDS, age_band, from_csv

PYTHON_TYPES = {"text": str, "bool": bool, "int": int, "float": float, "date": date, "list": list}


def _export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "Patient.009.ndjson", [
        patient("kid", "2015-06-01", gender="male"),
        patient("gone", "1940-01-01", gender="male", deceasedDateTime="2020-02-02"),
        {"resourceType": "Patient", "id": "nobirth", "gender": "unknown"}])
    write_ndjson(export / "MedicationRequest.009.ndjson", [metformin_request("m-nb", "nobirth", "2020-01-01")])
    return export


def test_age_bands_at_their_limits() -> None:
    assert [age_band(a) for a in (None, 0, 17, 18, 39, 40, 64, 65, 74, 75, 113)] == [
        None, "<18", "<18", "18-39", "18-39", "40-64", "40-64", "65-74", "65-74", "75+", "75+"]


def test_rows_carry_age_sex_deceased_and_the_latest_b12(screener: Screener, tmp_path: Path) -> None:
    batch(screener, [_export(tmp_path)], tmp_path / "out")
    table = {r["patient"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text()))}
    kid, gone, nobirth = (table[f"Patient/{p}"] for p in ("kid", "gone", "nobirth"))
    assert (kid["age"], kid["age_band"], kid["sex"], kid["deceased"]) == ("11", "<18", "male", "false")
    assert (gone["age"], gone["age_band"], gone["deceased"], gone["outcome"]) == ("86", "75+", "true", "not-evaluated")
    assert (nobirth["age"], nobirth["age_band"], nobirth["sex"]) == ("", "", "unknown")
    low = table["Patient/7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5"]
    assert (low["latest_b12_value"], low["latest_b12_unit"], low["latest_b12_band"]) == (
        "120.0", "ng/L", "deficient")
    assert low["latest_b12_date"] < AS_OF.isoformat() and kid["latest_b12_value"] == ""


@pytest.mark.slow
def test_parquet_csv_and_to_rows_agree_column_by_column(screener: Screener, tmp_path: Path) -> None:
    pytest.importorskip("arro3.io", reason="the parquet extra (arro3) is not installed")
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (of the test extra) reads the table back")
    export = _export(tmp_path)
    batch(screener, [export], tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "report.parquet")
    arrow = {"text": "string", "bool": "bool", "int": "int64", "float": "double", "date": "date32[day]",
             "list": "list<element: string>"}
    assert {f.name: str(f.type) for f in table.schema} == {n: arrow[k] for n, k in KINDS.items()}
    from_parquet = table.to_pylist()
    text = (tmp_path / "out" / "report.csv").read_text(encoding="utf-8")
    from_csv_rows = [from_csv(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
    from_python = b12screen.screen_paths(export, AS_OF, screener=screener).to_rows()
    assert len(from_parquet) == len(from_python) == 8
    for name in COLUMNS:
        column = [r[name] for r in from_parquet]
        assert [r[name] for r in from_csv_rows] == column, name
        assert [r[name] for r in from_python] == column, name
        assert all(v is None or type(v) is PYTHON_TYPES[KINDS[name]] for v in column), name


def test_screen_results_give_the_same_rows(screener: Screener) -> None:
    [row] = screener.screen([patient("kid", "2015-06-01", gender="male")], AS_OF).to_rows()
    assert (row["age"], row["age_band"], row["sex"], row["deceased"], row["as_of"]) == (11, "<18", "male", False, AS_OF)


def test_to_pandas_keeps_whole_numbers_whole(screener: Screener, tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    table = b12screen.screen_paths(_export(tmp_path), AS_OF, screener=screener).to_pandas()
    assert str(table["age"].dtype) == "Int64" and str(table["evidence_count"].dtype) == "Int64"
    assert table.loc[table.patient == "Patient/nobirth", "age"].isna().all()


def _outputs_page_example(needle: str) -> str:
    """The Python example of docs/analyst/outputs.md that holds ``needle``."""
    [code] = [b.body for b in page_blocks(ROOT / "docs" / "analyst" / "outputs.md")
              if b.language == "python" and needle in b.body]
    return code


def _printed(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/analyst/outputs.md", "exec"), {"__name__": "__page__"})
    return out.getvalue()


def test_the_outputs_page_answers_share_of_flags_from_age_75_alone(screener: Screener, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's own run has no flag from age alone; with one added, its examples count it."""
    pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "Patient.009.ndjson", [patient("old", "1940-01-01", gender="male")])  # age alone
    batch(screener, [export, BATCH / "bundles"], tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert "17% of flags come from AGE-75 alone" in _printed(_outputs_page_example("AGE-75 alone"))  # 1 of 6
    assert re.search(r"75\+\s*│\s*2\s*│\s*2\s*│\s*2\s*│\s*1\s*│", _printed(_outputs_page_example("import duckdb")))


def test_a_gender_that_is_no_code_is_left_out_and_costs_nothing_else(screener: Screener, tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    write_ndjson(export / "Patient.000.ndjson", [
        patient("a", "1950-01-01", gender={"text": "x"}), patient("b", "1950-01-01", gender="Jane Doe, ward 4"),
        patient("c", "1950-01-01", gender="other")])
    result = batch(screener, [export], tmp_path / "out", min_cell=1)
    assert result.exit_code == 0
    rows = {r["patient"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text()))}
    assert [rows[f"Patient/{p}"]["sex"] for p in "abc"] == ["", "", "other"]
    assert "Jane" not in (tmp_path / "out" / "counts.csv").read_text()
    assert "Jane" not in (tmp_path / "out" / "summary.html").read_text()
