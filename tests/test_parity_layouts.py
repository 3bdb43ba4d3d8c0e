"""The same patients as a folder of per-patient Bundles (what Synthea writes, ``urn:uuid:`` references and all)
and as a Bulk Data NDJSON export give the same answers through every door that reads files: ``screen``,
``batch`` with one and two workers, ``screen_paths`` and ``audit``.

The patients are those of the shared Synthea export (skipped without it) and those of the fixtures' export
(whose Medication, in a file of its own, the builder puts in a Bundle of no patient); both layouts are
written by the benchmark's own builder (``benchmarks/batch_bench.py --mode bundles``).
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import NEEDS_SYNTHEA, ROOT, SHARED_DATA

from b12screen import screen_paths
from b12screen.cli import cli

sys.path.insert(0, str(ROOT / "benchmarks"))
from batch_bench import build_bundles, bundle_templates

AS_OF = "2020-06-01"  # inside the shared export's years, so that its patients are alive and on treatment


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = SHARED_DATA / "synthea-bulk-10"
    root = tmp_path_factory.mktemp("layouts")
    build_bundles(bundle_templates(source), root / "bundles", root / "ndjson", copies=2)
    return root / "bundles", root / "ndjson"


def _answers(report: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {r["patient"]: (r["outcome"], r["priority"], tuple(r["rules"]), tuple(r["evidence"])) for r in report}


def _screen(folder: Path) -> dict[str, tuple[Any, ...]]:
    done = CliRunner().invoke(cli, ["screen", "--as-of", AS_OF, "--format", "report", str(folder)])
    assert done.exit_code == 0, done.stderr
    return _answers(json.loads(done.stdout))


def _batch(folder: Path, out: Path, workers: str) -> dict[str, tuple[Any, ...]]:
    done = CliRunner().invoke(cli, ["batch", "--as-of", AS_OF, "--no-progress", "--workers", workers, str(folder),
                                    "--out", str(out)])
    assert done.exit_code == 0, done.stderr
    return _answers([json.loads(line) for line in (out / "report.ndjson").read_text().splitlines()])


def _library(folder: Path) -> dict[str, tuple[Any, ...]]:
    with screen_paths(folder, date.fromisoformat(AS_OF), workers=2) as results:
        assert results.errors == []
        return _answers([r.report() for r in results])


def _audit(folder: Path, out: Path) -> str:
    done = CliRunner().invoke(cli, ["audit", "--as-of", AS_OF, "--follow-up-months", "12", "--workers", "2",
                                    str(folder), "--out", str(out)])
    assert done.exit_code == 0, done.stderr
    return (out / "audit.csv").read_text()


@NEEDS_SYNTHEA
@pytest.mark.slow
def test_a_bundle_folder_and_its_ndjson_copy_give_the_same_answers_through_every_door(
        layouts: tuple[Path, Path], tmp_path: Path) -> None:
    bundles, ndjson = layouts
    answers = _screen(ndjson)
    assert len(answers) >= 20 and any(a[1] for a in answers.values())  # patients, some of them flagged
    assert _screen(bundles) == answers
    for layout, folder in (("bundles", bundles), ("ndjson", ndjson)):
        for workers in ("1", "2"):
            assert _batch(folder, tmp_path / f"{layout}-{workers}", workers) == answers, (layout, workers)
        assert _library(folder) == answers, layout
    assert _audit(bundles, tmp_path / "audit-bundles") == _audit(ndjson, tmp_path / "audit-ndjson")


def test_the_fixtures_export_as_bundles_resolves_its_medication_file_in_every_door(tmp_path: Path) -> None:
    """The fixtures' export keeps its Medication in a file of its own: written as Bundles, that Medication
    sits in a Bundle of no patient, and the orders naming it resolve there in every door."""
    bundles, ndjson = tmp_path / "bundles", tmp_path / "ndjson"
    build_bundles(bundle_templates(ROOT / "fixtures" / "batch" / "export"), bundles, ndjson, copies=1)
    answers = _screen(ndjson)
    assert any(a[1] for a in answers.values())  # some flagged, one of them through the Medication
    assert _screen(bundles) == answers
    for layout, folder in (("bundles", bundles), ("ndjson", ndjson)):
        for workers in ("1", "2"):
            assert _batch(folder, tmp_path / f"{layout}-{workers}", workers) == answers, (layout, workers)
        assert _library(folder) == answers, layout
