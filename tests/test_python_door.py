"""``screen_paths``: the batch engine from Python, patient by patient, in memory bounded by the patient."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from batch_helpers import BATCH
from conftest import AS_OF, FIXTURES, NEEDS_SYNTHEA, ROOT

from b12screen import Screener, StreamingResults, screen_paths
from b12screen.batch import api
from b12screen.screening import group, screen_grouped
from b12screen.sinks.rows import COLUMNS
from b12screen.sources import read_inputs
from b12screen.sources.validation import EVIDENCE

sys.path.insert(0, str(ROOT / "benchmarks"))
from bundle_corpus import write_corpus

MIB = 1 << 20


def _in_memory(screener: Screener, paths: list[str]):  # the reader of ``b12screen screen``
    inputs = read_inputs(paths)
    return screen_grouped(screener, group(screener, inputs.items, EVIDENCE, inputs.deleted), AS_OF)


@pytest.mark.parametrize("workers", [1, 2])
def test_screen_paths_gives_the_answers_of_screen_patient_by_patient(screener: Screener, tmp_path: Path,
                                                                     workers: int) -> None:
    paths = [str(BATCH / "bundles"), str(BATCH / "export"), str(FIXTURES / "errors"), str(tmp_path / "gone")]
    expected = _in_memory(screener, paths)
    results = screen_paths(paths, AS_OF, screener=screener, workers=workers, progress=False)
    assert isinstance(results, StreamingResults) and len(results) == len(expected) > 5
    assert list(results) == list(expected) and list(results) == list(expected)  # iterable more than once
    assert results.to_rows() == expected.to_rows()
    assert results.resources_read == expected.resources_read
    assert sorted(map(str, results.errors)) == sorted(map(str, expected.errors))
    assert f"{tmp_path / 'gone'}: no such file or folder" in map(str, results.errors)
    assert any("line 2: malformed JSON" in str(e) for e in results.errors)  # one bad line costs that line only


def test_to_pandas_has_the_report_columns_and_names_the_extra_without_pandas(
        screener: Screener, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    results = screen_paths(BATCH / "bundles", AS_OF, screener=screener, workers=1)
    table = results.to_pandas()
    assert list(table.columns) == list(COLUMNS) and list(table.patient) == [r.patient for r in results]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'b12screen\[pandas\]'"):
        results.to_pandas()


def test_progress_bars_when_asked_or_interactive_never_in_a_script(
        screener: Screener, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    screen_paths(BATCH / "bundles", AS_OF, screener=screener, workers=1)
    assert capsys.readouterr().err == ""  # pytest is not interactive: a script
    screen_paths(BATCH / "bundles", AS_OF, screener=screener, workers=1, progress=True)
    assert "screening" in capsys.readouterr().err
    monkeypatch.setattr(api, "interactive", lambda: True)
    screen_paths(BATCH / "bundles", AS_OF, screener=screener, workers=1)
    assert "screening" in capsys.readouterr().err
    screen_paths(BATCH / "bundles", AS_OF, screener=screener, workers=1, progress=False)
    assert capsys.readouterr().err == ""


def test_results_live_in_a_temporary_folder_until_closed(screener: Screener, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with screen_paths(BATCH / "export", AS_OF, screener=screener, workers=2) as results:
        [work] = tmp_path.iterdir()
        assert [p.name for p in work.iterdir()] == [api.PATIENTS]  # the engine's spill files are gone
        assert len(list(results)) == 5
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        list(results)
    gone = screen_paths(BATCH / "export", AS_OF, screener=screener, workers=1)
    del gone  # garbage collected: its folder goes too
    assert list(tmp_path.iterdir()) == []


RUNNER = """
import resource, sys
from datetime import date
from b12screen import Screener, screen_paths
from b12screen.plugins import get_plugin_manager
screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = screen_paths(sys.argv[1], date(2026, 11, 24), screener=screener, workers=int(sys.argv[2]))
patients = sum(1 for _ in results)
rows = results.to_rows()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(patients, len(rows), base, peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@NEEDS_SYNTHEA
@pytest.mark.slow
def test_memory_is_bounded_by_the_patient_not_the_input(tmp_path: Path) -> None:
    """A real process with two workers on about 32 MB of Bundles (slow: about 6 s): the calling process grows
    by less than an eighth of the input, the workers by less than its whole (the in-memory reader grew by
    five times it)."""
    corpus = write_corpus(tmp_path / "bundles", 32 * MIB)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(RUNNER), str(tmp_path / "bundles"), "2"],
                         capture_output=True, text=True, timeout=120, check=True)
    patients, rows, base, peak, children = map(int, out.stdout.split())
    assert patients == rows == corpus["patients"] > 10
    assert (peak - base) * 1024 < corpus["bytes"] / 8, (base, peak)
    assert (children - base) * 1024 < corpus["bytes"], (base, children)
