"""The README's Python examples for analysts run as written, on the outputs of a real batch."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch
from conftest import ROOT

from b12screen import Screener

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.index("\n## ", start + 3)
    return README[start:end]


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    return out.getvalue()


@pytest.fixture
def results_folder(screener: Screener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    batch(screener, [BATCH / "export", BATCH / "bundles"], tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results"


def test_pandas_example_answers_the_questions(results_folder: Path) -> None:
    pytest.importorskip("pandas")
    [pandas_example, _duckdb_example] = _python_blocks(_section("Answering questions with the outputs"))
    printed = _run(pandas_example)
    assert re.search(r"high\s+2\b", printed) and re.search(r"medium\s+2\b", printed) and re.search(r"low\s+1\b",
                                                                                                   printed)
    assert re.search(r"MET-2\s+2\b", printed) and re.search(r"MOD-LOW\s+1\b", printed)
    assert "Patient/bx-orphan" in printed and "Patient/bx-met" not in printed  # the high-priority worklist
    assert re.search(r"40-64\s+1\s+2\b", printed)  # flagged by age band: one not flagged, two flagged
    assert "4 of 5 flagged patients have no B12 result on file" in printed
    assert "0% of flags come from AGE-75 alone" in printed


def test_duckdb_example_reads_the_csv_and_the_parquet(results_folder: Path) -> None:
    pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    [_pandas_example, duckdb_example] = _python_blocks(_section("Answering questions with the outputs"))
    printed = _run(duckdb_example)
    assert re.search(r"high\s*│\s*2", printed) and re.search(r"low\s*│\s*1", printed)
    assert re.search(r"MOD-DX\s*│\s*1", printed) and re.search(r"MET-2\s*│\s*2", printed)
    assert re.search(r"40-64\s*│\s*2\s*│\s*3\s*│\s*1\s*│\s*0\s*│", printed)  # by age band, never tested, AGE-75


def test_screen_paths_example_runs_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(ROOT)
    [example] = [b for b in _python_blocks(_section("Quick start")) if "screen_paths" in b]
    printed = _run(example)
    assert "Patient/c3a1f0e2-5d4b-4a69-8b7c-2e1f0a9b8c7d" in printed and "MET-2" in printed
    assert printed.rstrip().endswith("[]")  # no input errors
