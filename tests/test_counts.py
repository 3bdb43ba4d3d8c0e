"""counts.csv: aggregate counts with small cells suppressed and no patient identifier."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from batch_helpers import BATCH, batch
from click.testing import CliRunner

from b12screen import Screener
from b12screen.batch.counts import HEADER, MIN_CELL, Counts
from b12screen.cli import cli


def _cells(data: bytes) -> dict[tuple[str, ...], tuple[str, str]]:
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert tuple(rows[0]) == HEADER
    return {tuple(r[:5]): (r[5], r[6]) for r in rows[1:]}


def _counts() -> Counts:
    counts = Counts()
    for _ in range(MIN_CELL):
        counts.add("suggest-b12-test", "low", "75+", "female", True, ["AGE-75"])
    for _ in range(MIN_CELL - 1):
        counts.add("no-suggestion", None, "40-64", "male", False, [])
    return counts


def test_counts_below_min_cell_are_suppressed_and_marked_at_the_threshold() -> None:
    cells = _cells(_counts().csv())
    assert cells[("suggest-b12-test", "low", "*", "75+", "female")] == (str(MIN_CELL), "false")
    assert cells[("no-suggestion", "none", "*", "40-64", "male")] == ("", "true")  # MIN_CELL - 1
    assert cells[("*", "*", "*", "*", "*")] == (str(2 * MIN_CELL - 1), "false")
    assert cells[("*", "*", "AGE-75", "75+", "*")] == (str(MIN_CELL), "false")
    assert ("no-suggestion", "none", "*", "75+", "female") not in cells  # no patient there: not listed
    assert _cells(_counts().csv(min_cell=MIN_CELL - 1))[("no-suggestion", "none", "*", "40-64", "male")] == (
        str(MIN_CELL - 1), "false")


def test_every_marginal_of_the_patient_cube_sums_to_the_total() -> None:
    cells = _cells(_counts().csv(min_cell=1))
    total = int(cells[("*",) * 5][0])
    for dim in (0, 1, 3, 4):  # outcome, priority, age band, sex
        parts = [int(n) for key, (n, _) in cells.items()
                 if key[2] == "*" and key[dim] != "*" and all(key[i] == "*" for i in (0, 1, 3, 4) if i != dim)]
        assert sum(parts) == total, dim


def test_batch_writes_counts_without_identifiers_and_with_the_summary_totals(screener: Screener,
                                                                            tmp_path: Path) -> None:
    batch(screener, [BATCH / "export", BATCH / "bundles"], tmp_path / "out", min_cell=1)
    text = (tmp_path / "out" / "counts.csv").read_text()
    report = (tmp_path / "out" / "report.csv").read_text()
    ids = [line.split(",")[0] for line in report.splitlines()[1:]]
    assert len(ids) == 6 and not any(i.removeprefix("Patient/") in text for i in ids)
    cells = _cells(text.encode())
    assert cells[("unactioned-low-b12", "*", "*", "*", "*")] == ("1", "false")
    assert cells[("*", "*", "MOD-LOW", "*", "*")] == ("1", "false")
    batch(screener, [BATCH / "export", BATCH / "bundles"], tmp_path / "default")
    shared = _cells((tmp_path / "default" / "counts.csv").read_bytes())
    assert all(mark == "true" and n == "" for n, mark in shared.values())  # six patients: every cell is small


def test_the_command_line_takes_min_cell(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(cli, ["batch", str(BATCH / "bundles"), "--out", str(out), "--as-of", "2026-11-24",
                                    "--min-cell", "2"])
    assert done.exit_code == 0, done.stderr
    cells = _cells((out / "counts.csv").read_bytes())
    assert cells[("*",) * 5] == ("2", "false") and ("", "true") in cells.values()
    bad = CliRunner().invoke(cli, ["batch", str(BATCH / "bundles"), "--out", str(out), "--min-cell", "0"])
    assert bad.exit_code == 2 and "--min-cell" in bad.stderr
