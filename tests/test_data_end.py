"""When the data ends: the newest record date, the as-of trap warning and ``--as-of data-end``."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from batch_helpers import BATCH
from click.testing import CliRunner
from conftest import bundle, metformin_request, patient

from b12screen.cli import cli
from b12screen.core.dataend import STALE_AFTER_DAYS, newest_date, stale_warning
from b12screen.core.facts import PatientFact

NEWEST = "2026-09-01"  # the newest clinical date of the batch fixtures


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_the_warning_starts_a_day_after_a_year() -> None:
    end = date(2021, 3, 1)
    assert stale_warning(end + timedelta(days=STALE_AFTER_DAYS), end) is None
    text = stale_warning(end + timedelta(days=STALE_AFTER_DAYS + 1), end)
    assert text is not None and "2021-03-01" in text and "--as-of data-end" in text
    assert stale_warning(date(2030, 1, 1), None) is None


def test_the_newest_date_counts_a_death_but_never_a_planned_end() -> None:
    dead = PatientFact("Patient/p", date(1940, 1, 1), True, date(2021, 5, 5), "male")
    assert newest_date([dead, None]) == date(2021, 5, 5)
    assert newest_date([PatientFact("Patient/q", date(1940, 1, 1), False, None, None)]) is None


def test_batch_warns_and_records_the_newest_record_date(tmp_path: Path) -> None:
    done = run("batch", str(BATCH / "export"), str(BATCH / "bundles"), "--out", str(tmp_path / "out"),
               "--as-of", "2030-01-01")
    assert done.exit_code == 0, done.stderr
    assert f"warning: the as-of date 2030-01-01 is 3.3 years after the newest record in the input ({NEWEST})" \
        in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["newest_record_date"] == NEWEST and "3.3 years" in summary["as_of_warning"]
    quiet = run("batch", str(BATCH / "export"), str(BATCH / "bundles"), "--out", str(tmp_path / "near"),
                "--as-of", "2027-09-01")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr
    assert json.loads((tmp_path / "near" / "summary.json").read_text())["as_of_warning"] is None


def test_batch_as_of_data_end_screens_as_of_the_newest_record(tmp_path: Path) -> None:
    done = run("batch", str(BATCH / "export"), str(BATCH / "bundles"), "--out", str(tmp_path / "out"),
               "--as-of", "data-end")
    assert done.exit_code == 0, done.stderr
    assert f"as of the newest record in the input: {NEWEST}" in done.stderr and "warning" not in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["as_of"] == NEWEST
    report = [json.loads(line) for line in (tmp_path / "out" / "report.ndjson").read_text().splitlines()]
    assert {r["as_of"] for r in report} == {NEWEST}
    again = run("batch", str(BATCH / "export"), "--out", str(tmp_path / "out"), "--as-of", "data-end")
    assert again.exit_code == 2 and "already holds" in again.stderr and "newest record" not in again.stderr
    gone = run("batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new"), "--as-of", "data-end")
    assert gone.exit_code == 2 and "nowhere: no such file or folder" in gone.stderr


def test_screen_and_explain_take_data_end_and_fail_clearly_without_a_date(tmp_path: Path) -> None:
    data = tmp_path / "b.json"
    data.write_text(json.dumps(bundle(patient("p", "1950-01-01"), metformin_request("m", "p", "2019-02-03"))))
    done = run("screen", "--as-of", "data-end", "--format", "report", str(data))
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)[0]["as_of"] == "2019-02-03"
    stale = run("screen", str(data), "--as-of", "2026-01-01")
    assert "warning: the as-of date 2026-01-01 is 6.9 years after the newest record" in stale.stderr
    assert "warning" not in run("explain", "--patient", "p", str(data), "--as-of", "2026-01-01").stderr
    assert run("explain", "--patient", "p", str(data), "--as-of", "data-end").stdout.startswith(
        "Patient/p at 2019-02-03")
    undated = tmp_path / "u.json"
    undated.write_text(json.dumps(bundle(patient("p", "1950-01-01"))))
    failed = run("screen", "--as-of", "data-end", str(undated))
    assert failed.exit_code == 2 and "--as-of data-end: the input holds no dated clinical record" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_screen_paths_warns_once_and_keeps_the_newest_record_date() -> None:
    import warnings

    import b12screen

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = b12screen.screen_paths(BATCH / "export", date(2030, 1, 1), workers=1)
    assert results.newest_record_date == date.fromisoformat(NEWEST)
    [warned] = [w for w in caught if issubclass(w.category, b12screen.StaleDataWarning)]
    assert "3.3 years after the newest record in the input (2026-09-01)" in str(warned.message)
    assert str(warned.message).endswith("as_of=results.newest_record_date screens as of 2026-09-01")
    assert warned.filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert b12screen.screen_paths(BATCH / "export", date(2026, 11, 24), workers=1).newest_record_date
