"""The progress bars: patients with an estimated total (so an ETA), and the last bar stays on screen."""

from __future__ import annotations

import io

import pytest

from b12screen.batch.progress import Progress


def test_screening_counts_patients_against_an_estimated_total_and_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    progress = Progress(enabled=True)
    progress.reading(1000)
    progress.read(1000, 17)
    progress.screening(4)
    progress.screened(3, 1)
    assert (progress.bar.n, progress.bar.total) == (3, 12)  # 3 patients per partition so far, 4 partitions
    progress.screened(2, 1)
    progress.screened(0, 0)
    progress.screened(1, 0)
    assert progress.bar.total == 6  # exact once every partition is done
    progress.close()
    last = err.getvalue().split("\r")[-1]
    assert last.startswith("screening: 100%") and "6/6" in last and "flagged=2" in last and "resources=17" in last
    assert last.endswith("\n")  # left on screen (the reading bar was cleared)


def test_engines_without_partitions_count_patients_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    progress = Progress(enabled=True)
    progress.screening(0)
    for flagged in (True, False, True):
        progress.written(flagged)
    progress.close()
    last = err.getvalue().split("\r")[-1]
    assert "3/3" in last and "flagged=2" in last


def test_quiet_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    progress = Progress(enabled=False)
    progress.screening(2)
    progress.screened(5, 2)
    progress.close()
    assert err.getvalue() == "" and progress.patients == 5
