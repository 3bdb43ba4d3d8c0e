"""b12screen audit: every count checked against a generated cohort with known truth, no look-ahead at any
door, both input layouts, any number of workers, and the pages that say what cannot be measured."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_cohort import AS_OF, MONTHS, RXNORM, WINDOW_END, expected_rows, make_cohort, write_bundles, write_ndjson
from click.testing import CliRunner
from conftest import FIXTURES, ROOT, SHARED_DATA
from doc_examples import page_blocks
from held_batch import BOUND, start_held

from b12screen import Screener
from b12screen.batch import BatchOptions, OutputsExistError, run_batch
from b12screen.batch.audit import run_audit
from b12screen.batch.auditstats import CAVEATS, GROUP_COLUMNS, NO_RESULTS, wilson
from b12screen.batch.followup import mma_band
from b12screen.cli import cli
from b12screen.core.config import Config
from b12screen.core.labs import Band
from b12screen.testing import make_condition, make_medication_request, make_observation, make_patient
from b12screen.testing import record_from as _record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COUNTS = ("patients", "tested", "deficient", "indeterminate", "normal", "treated")


def audit(screener: Screener, paths: list[Path], out: Path, months: float = MONTHS, **options: Any) -> Any:
    options.setdefault("progress", False)
    options.setdefault("workers", 1)
    return run_audit([str(p) for p in paths], out, screener, BatchOptions(as_of=AS_OF, **options), months)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cohort() -> list[Any]:
    return make_cohort()


def test_every_count_matches_the_generators_tally(screener: Screener, cohort: list[Any], tmp_path: Path) -> None:
    result = audit(screener, [write_ndjson(cohort, tmp_path / "export")], tmp_path / "out")
    assert result.exit_code == 0
    table = read_csv(tmp_path / "out" / "audit.csv")
    assert list(table[0]) == list(GROUP_COLUMNS)
    assert [r["group"] for r in table] == ["AGE-75", "MET-1", "flagged", "not-flagged", "all"]
    expected = expected_rows(cohort)
    for row in table:
        assert {k: int(row[k]) for k in COUNTS} == expected[row["group"]], row["group"]
        tested, deficient = int(row["tested"]), int(row["deficient"])
        assert float(row["test_rate"]) == pytest.approx(tested / int(row["patients"]), abs=5e-5)
        assert float(row["yield"]) == pytest.approx(deficient / tested, abs=5e-5)
        low, high = wilson(deficient, tested)  # type: ignore[misc]
        assert (float(row["yield_low"]), float(row["yield_high"])) == pytest.approx((low, high), abs=5e-5)
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["screened"] == 120 and summary["alerts"] == 80 and summary["alerts_per_1000_screened"] == 666.7
    assert summary["follow_up_results"] is True and summary["message"] is None
    assert summary["caveats"] == list(CAVEATS) and set(summary["definitions"]) == set(GROUP_COLUMNS)
    assert summary["run"]["window_end"] == WINDOW_END.isoformat() and summary["run"]["follow_up_months"] == MONTHS


def test_each_patients_first_test_band_and_treatment(screener: Screener, cohort: list[Any], tmp_path: Path) -> None:
    audit(screener, [write_ndjson(cohort, tmp_path / "export")], tmp_path / "out")
    rows = {r["patient"]: r for r in read_csv(tmp_path / "out" / "audit_patients.csv")}
    assert len(rows) == len(cohort)
    for truth in cohort:
        row = rows[truth.patient]
        assert row["tested"] == ("true" if truth.tested else "false"), truth.patient
        assert row["first_test_date"] == (truth.first_date.isoformat() if truth.first_date else "")
        assert row["first_test_band"] == (truth.band or "")
        assert row["treated"] == ("true" if truth.treated else "false"), truth.patient


def test_bundle_folders_gzip_and_workers_give_the_answer_of_ndjson(screener: Screener, cohort: list[Any],
                                                              tmp_path: Path) -> None:
    audit(screener, [write_ndjson(cohort, tmp_path / "export")], tmp_path / "one")
    audit(screener, [write_bundles(cohort, tmp_path / "bundles")], tmp_path / "two", workers=2, unit_bytes=4096)
    gzipped = tmp_path / "gz"
    gzipped.mkdir()
    for path in (tmp_path / "export").iterdir():
        (gzipped / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    audit(screener, [gzipped], tmp_path / "three", workers=3, unit_bytes=4096)
    for name in ("audit.csv", "audit_patients.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes(), name


def test_a_setting_of_the_bands_changes_the_count(make_screener: Any, cohort: list[Any], tmp_path: Path) -> None:
    """The follow-up bands are the rules' bands: raising the deficient limit above 250 ng/L moves the
    indeterminate results of 250 ng/L into deficient."""
    export = write_ndjson(cohort, tmp_path / "export")
    raised = make_screener(config=Config().with_changes(settings={"total_b12_deficient_ng_l": 260}))
    audit(raised, [export], tmp_path / "out")
    expected = expected_rows(cohort)["all"]
    everyone = read_csv(tmp_path / "out" / "audit.csv")[-1]
    assert int(everyone["deficient"]) == expected["deficient"] + expected["indeterminate"]
    assert int(everyone["indeterminate"]) == 0


def test_wilson_interval_matches_newcombes_published_values() -> None:
    """R. G. Newcombe, Stat Med 1998; 17: 857-872, table I, method 3 (score interval without continuity
    correction)."""
    for (x, n), (low, high) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                                (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        assert wilson(x, n) == pytest.approx((low, high), abs=5e-5), (x, n)
    assert wilson(0, 0) is None


@pytest.mark.parametrize(("value", "unit", "band"), [
    (0.29, "umol/L", Band.DEFICIENT), (0.27, "µmol/L", Band.NORMAL), (290, "nmol/L", Band.DEFICIENT),
    (270, "nmol/L", Band.NORMAL), (0.0003, "mmol/L", Band.DEFICIENT), (0.0002, "mmol/L", Band.NORMAL),
    (0.5, "mg/dL", None)])
def test_a_raised_mma_is_deficient(value: float, unit: str, band: Band | None) -> None:
    obs = _record(make_patient("p1"), make_observation("13964-2", value=value, unit=unit,
                                                         effective="2024-07-01")).observations[0]
    assert mma_band(obs) is band


def test_an_mma_reference_range_decides_before_the_default_limit() -> None:
    raised = make_observation("13964-2", value=0.3, unit="umol/L", effective="2024-07-01",
                              referenceRange=[{"high": {"value": 0.4, "unit": "umol/L"}}])
    assert mma_band(_record(make_patient("p1"), raised).observations[0]) is Band.NORMAL


def test_the_fixture_is_the_generators_cohort(tmp_path: Path) -> None:
    written = write_ndjson(make_cohort(), tmp_path / "cohort")
    fixture = FIXTURES / "audit-cohort"
    assert sorted(p.name for p in fixture.iterdir()) == sorted(p.name for p in written.iterdir())
    for path in written.iterdir():
        assert (fixture / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_worked_example_in_the_docs_is_the_fixtures_audit(screener: Screener, tmp_path: Path) -> None:
    audit(screener, [FIXTURES / "audit-cohort"], tmp_path / "out")
    table = (tmp_path / "out" / "audit.csv").read_text().replace("\r\n", "\n")
    [shown] = [b.body for b in page_blocks(ROOT / "docs" / "analyst" / "audit.md")
               if b.options.get("output") and b.body.startswith("group,")]
    assert shown.strip() == table.strip()


# -- no look-ahead: what is dated after the as-of date changes no outcome, at any door ----------------

LATER = {
    "b12-result": lambda pid, when: make_observation("2132-9", patient=pid, rid=f"{pid}-x", effective=when,
                                                     value=520.0, unit="pg/mL"),
    "diagnosis": lambda pid, when: make_condition("190634004", patient=pid, rid=f"{pid}-x", onset=when),
    "prescription": lambda pid, when: make_medication_request("2001499", RXNORM, patient=pid, rid=f"{pid}-x",
                                                              authored=when),
}


def _statement(pid: str, status: str, end: str | None) -> dict[str, Any]:
    period = {"start": "2022-01-01", **({"end": end} if end else {})}
    return {"resourceType": "MedicationStatement", "id": f"{pid}-ms", "status": status, "effectivePeriod": period,
            "subject": {"reference": f"Patient/{pid}"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "861007"}]}}


#: Records current at the as-of date that ended later: (ended on a given day, the same record still current).
ENDED = {
    "abated": (lambda pid, when: make_condition("190634004", patient=pid, rid=f"{pid}-x", onset="2023-05-01",
                                                clinical_status="resolved", abatementDateTime=when),
               lambda pid: make_condition("190634004", patient=pid, rid=f"{pid}-x", onset="2023-05-01")),
    "stopped": (lambda pid, when: _statement(pid, "completed", when), lambda pid: _statement(pid, "active", None)),
}


def _sided_cohort(folder: Path) -> Path:
    """A patient of 84 flagged by AGE-75, and copies of them each with one record one day before or after
    the as-of date, or one that ended a day before or after it."""
    resources = [make_patient("base", "1940-03-01")]
    for kind, make in LATER.items():
        for side, day in (("before", AS_OF - timedelta(days=1)), ("on", AS_OF), ("after", AS_OF + timedelta(days=1))):
            pid = f"{kind}-{side}"
            resources += [make_patient(pid, "1940-03-01"), make(pid, day.isoformat())]
    for kind, (ended, current) in ENDED.items():
        resources += [make_patient(f"{kind}-current", "1940-03-01"), current(f"{kind}-current")]
        for side, day in (("before", AS_OF - timedelta(days=1)), ("after", AS_OF + timedelta(days=1))):
            pid = f"{kind}-{side}"
            resources += [make_patient(pid, "1940-03-01"), ended(pid, day.isoformat())]
    folder.mkdir()
    (folder / "all.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))
    return folder


def _check_sides(outcomes: dict[str, tuple[str, str, str]]) -> None:
    base = outcomes["Patient/base"]
    assert base == ("suggest-b12-test", "low", "AGE-75")
    for kind in LATER:
        assert outcomes[f"Patient/{kind}-after"] == base, kind
        assert outcomes[f"Patient/{kind}-before"] != base, kind  # the same record a day earlier does count
        assert outcomes[f"Patient/{kind}-on"] == outcomes[f"Patient/{kind}-before"], kind
    for kind in ENDED:  # a diagnosis resolved, a medicine stopped after the date: current at the date
        current = outcomes[f"Patient/{kind}-current"]
        assert outcomes[f"Patient/{kind}-after"] == current != outcomes[f"Patient/{kind}-before"], kind


def test_no_look_ahead_in_screen_batch_and_audit(screener: Screener, tmp_path: Path) -> None:
    data = _sided_cohort(tmp_path / "in")
    done = CliRunner().invoke(cli, ["screen", str(data), "--as-of", AS_OF.isoformat(), "--format", "report"])
    assert done.exit_code == 0, done.output
    _check_sides({e["patient"]: (e["outcome"], e["priority"] or "", ";".join(e["rules"]))
                  for e in json.loads(done.stdout)})
    run_batch([str(data)], tmp_path / "batch", screener, BatchOptions(as_of=AS_OF, workers=1, progress=False))
    report = [json.loads(line) for line in (tmp_path / "batch" / "report.ndjson").read_text().splitlines()]
    _check_sides({e["patient"]: (e["outcome"], e["priority"] or "", ";".join(e["rules"])) for e in report})
    audit(screener, [data], tmp_path / "audit")
    rows = read_csv(tmp_path / "audit" / "audit_patients.csv")
    _check_sides({r["patient"]: (r["outcome"], r["priority"], r["rules"]) for r in rows})
    follow = {r["patient"]: (r["tested"], r["first_test_band"], r["treated"]) for r in rows}
    assert follow["Patient/b12-result-after"] == ("true", "normal", "false")
    assert follow["Patient/diagnosis-after"] == follow["Patient/prescription-after"] == ("false", "", "true")
    # a record on the as-of date or before is screened, not followed up
    assert {follow[f"Patient/{kind}-{side}"] for kind in LATER for side in ("before", "on")} == {("false", "", "false")}


# -- the command, its errors and its pages --------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "b12screen", "audit", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_command_reports_bad_input_and_refuses_to_overwrite(cohort: list[Any], tmp_path: Path) -> None:
    export = write_ndjson(cohort[:5], tmp_path / "export")
    with open(export / "Observation.000.ndjson", "a") as f:
        f.write("{broken\n")
    args = [str(export), "--as-of", AS_OF.isoformat(), "--follow-up-months", "12", "-o", str(tmp_path / "out")]
    done = _cli(*args, "--workers", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "5 patient(s) screened as of 2024-06-30" in done.stderr
    error = json.loads((tmp_path / "out" / "audit_errors.ndjson").read_text().splitlines()[0])
    assert error["file"].endswith("Observation.000.ndjson") and error["line"] is not None
    assert "JSON" in error["reason"]
    again = _cli(*args)
    assert again.returncode == 2 and "already holds audit.csv" in again.stderr and "Traceback" not in again.stderr
    # refused before any work: in-process is enough
    no_date = CliRunner().invoke(cli, ["audit", str(export), "--follow-up-months", "12", "-o", str(tmp_path / "x")])
    assert no_date.exit_code == 2 and "needs --as-of" in no_date.output
    missing = CliRunner().invoke(cli, ["audit", str(tmp_path / "nowhere"), *args[1:], "--overwrite"])
    assert missing.exit_code == 2 and "nowhere" in missing.output and missing.exception is not None
    assert isinstance(missing.exception, SystemExit)  # an error line, not a traceback


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_an_interrupted_audit_leaves_nothing_behind(tmp_path: Path, signum: int) -> None:
    proc, held, out = start_held(tmp_path, "write", "--workers", "2", command=("audit", "--follow-up-months", "12"))
    assert held == proc.pid and any(out.glob(".audit.json.*.partial"))
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=BOUND)
    assert proc.returncode == 128 + signum, stderr
    assert stderr == (f"b12screen: interrupted by {signal.Signals(signum).name}: the audit stopped; its workers, "
                      "work folder and temporary files were removed\n")
    assert list(out.iterdir()) == []


def test_library_refuses_outputs_present(screener: Screener, cohort: list[Any], tmp_path: Path) -> None:
    export = write_ndjson(cohort[:3], tmp_path / "export")
    audit(screener, [export], tmp_path / "out")
    with pytest.raises(OutputsExistError, match=r"already holds audit\.csv"):
        audit(screener, [export], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "audit.csv", "audit.html", "audit.json", "audit_errors.ndjson", "audit_patients.csv"]


def test_a_killed_runs_temporary_outputs_are_removed_by_the_next(screener: Screener, cohort: list[Any],
                                                                  tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process has ended
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / f".audit.csv.{gone.pid}.x1.partial", out / f".audit.json.{gone.pid}.x2.partial"]
    for path in stale:
        path.write_text("patient data")
    audit(screener, [write_ndjson(cohort[:3], tmp_path / "export")], out)
    assert not any(path.exists() for path in stale)


def test_an_export_without_b12_results_says_so(screener: Screener, cohort: list[Any], tmp_path: Path) -> None:
    untested = [t for t in cohort if not t.tested][:20]
    audit(screener, [write_ndjson(untested, tmp_path / "export")], tmp_path / "out", months=1)
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["message"] == NO_RESULTS and summary["follow_up_results"] is False
    assert summary["caveats"][0].startswith(f"Note, {NO_RESULTS}")
    assert all(r["test_rate"] is None and r["yield"] is None for r in summary["groups"])
    assert all(r["test_rate"] == "" for r in read_csv(tmp_path / "out" / "audit.csv"))
    assert NO_RESULTS in (tmp_path / "out" / "audit.html").read_text()


@pytest.mark.skipif(not (SHARED_DATA / "synthea-bulk-10").is_dir(), reason="shared Synthea export absent")
def test_synthea_export_has_no_b12_results_and_says_so(screener: Screener, tmp_path: Path) -> None:
    run_audit([str(SHARED_DATA / "synthea-bulk-10")], tmp_path / "out", screener,
              BatchOptions(as_of=date(2020, 1, 1), workers=1, progress=False), 12)
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["message"] == NO_RESULTS and summary["screened"] > 0
    assert NO_RESULTS in (tmp_path / "out" / "audit.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
@pytest.mark.slow
def test_chromium_renders_the_page(screener: Screener, cohort: list[Any], tmp_path: Path) -> None:
    audit(screener, [write_ndjson(cohort, tmp_path / "export")], tmp_path / "out")
    page = tmp_path / "out" / "audit.html"
    html = page.read_text(encoding="utf-8")
    assert "default-src 'none'" in html and "<script" not in html and " src=" not in html
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    done = subprocess.run([CHROMIUM, *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "120 patients screened as of 2024-06-30" in dom and "80 alerts" in dom and "666.7 per 1,000" in dom
    assert dom.count("<circle") == 2 * 5  # yield and test rate, five groups each
    assert "verification bias" in dom and 'id="message"' not in dom
