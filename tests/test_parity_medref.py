"""A ``medicationReference`` names a Medication on the same server: in a set of files (an export of that
server) it resolves wherever the Medication sits, in another patient's Bundle, in a Bundle of Medications
only or in a Medication NDJSON file. Every door that reads files gives the same answer: ``screen``,
``batch`` (one and two workers, and Spark in local mode when pyspark and Java are installed),
``screen_paths`` and ``explain``; a reference that resolves nowhere is one input error naming the file,
the entry and the reason, in every door alike."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import write_ndjson
from click.testing import CliRunner
from conftest import metformin_request, patient
from test_parity import _spark_ready

from b12screen import screen_paths
from b12screen.cli import cli

AS_OF = "2026-11-24"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
NOWHERE = "medicationReference 'Medication/nowhere' does not resolve to a Medication"


def _medication(mid: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": {"coding": [{"system": RX, "code": "861007"}]}}


def _orders(pid: str, target: str) -> list[dict[str, Any]]:
    """Ten yearly metformin orders of ``pid`` naming their drug by ``target`` alone."""
    out = []
    for year in range(2017, 2027):
        order = metformin_request(f"{pid}{year}", pid, f"{year}-01-01")
        del order["medicationCodeableConcept"]
        order["medicationReference"] = {"reference": target}
        out.append(order)
    return out


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r} for r in resources]}


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def build(root: Path) -> tuple[Path, Path]:
    """(folder of per-patient Bundles, Bulk Data folder): ``a``'s orders name ``m1``, held in a Bundle of
    Medications only; ``b``'s name ``m2``, held in ``a``'s Bundle (Bundles) or a Medication NDJSON file;
    ``c``'s single order names ``m3``, held in a JSON array (a document read entry by entry)."""
    bundles, export = root / "bundles", root / "export"
    a, b, c = patient("a", "1958-01-01"), patient("b", "1960-03-01"), patient("c", "1970-03-01")
    for folder in (bundles, export):
        _write(folder / "medications.json", _bundle(_medication("m1")))
        _write(folder / "more-medications.json", [_medication("m3")])
    _write(bundles / "a.json", _bundle(a, _medication("m2"), *_orders("a", "Medication/m1")))
    _write(bundles / "b.json", _bundle(b, *_orders("b", "Medication/m2")))
    _write(bundles / "c.json", _bundle(c, _orders("c", "Medication/m3")[-1]))
    write_ndjson(export / "Patient.000.ndjson", [a, b, c])
    write_ndjson(export / "MedicationRequest.000.ndjson",
                 [*_orders("a", "Medication/m1"), *_orders("b", "Medication/m2"), _orders("c", "Medication/m3")[-1]])
    write_ndjson(export / "Medication.000.ndjson", [_medication("m2")])
    return bundles, export


Answers = dict[str, tuple[str, str | None, tuple[str, ...]]]


def _answers(report: list[dict[str, Any]]) -> Answers:
    return {r["patient"]: (r["outcome"], r["priority"], tuple(r["rules"])) for r in report}


def _screen(folder: Path) -> tuple[Answers, str]:
    done = CliRunner().invoke(cli, ["screen", "--as-of", AS_OF, "--format", "report", str(folder)])
    assert done.exit_code in (0, 1), done.output
    return _answers(json.loads(done.stdout)), done.stderr


def _batch(folder: Path, out: Path, *options: str) -> tuple[Answers, list[dict[str, Any]]]:
    done = CliRunner().invoke(cli, ["batch", "--as-of", AS_OF, "--no-progress", *options, str(folder),
                                    "--out", str(out)])
    assert done.exit_code in (0, 1), done.output
    errors = [json.loads(line) for line in (out / "errors.ndjson").read_text().splitlines()]
    return _answers([json.loads(line) for line in (out / "report.ndjson").read_text().splitlines()]), errors


def _library(folder: Path) -> tuple[Answers, list[str]]:
    with screen_paths(folder, date.fromisoformat(AS_OF), workers=2) as results:
        return _answers([r.report() for r in results]), [str(e) for e in results.errors]


def _explain(folder: Path, pid: str) -> tuple[str, str | None]:
    done = CliRunner().invoke(cli, ["explain", str(folder), "--patient", pid, "--as-of", AS_OF, "--json"])
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    return found["outcome"], found["priority"]


_DOORS = (("--workers", "1"), ("--workers", "2", "--unit-mb", "0.001"))


@pytest.mark.parametrize("layout", ["bundles", "export"])
def test_a_medication_held_in_another_file_resolves_in_every_door(tmp_path: Path, layout: str) -> None:
    folder = build(tmp_path)[0 if layout == "bundles" else 1]
    answers, stderr = _screen(folder)
    assert "does not resolve" not in stderr
    assert answers["Patient/a"][2] == answers["Patient/b"][2] == ("MET-2",)  # the drug was found elsewhere
    assert answers["Patient/c"][2] == ("MET-1",)  # one recent order: resolved too
    for n, options in enumerate(_DOORS):
        assert _batch(folder, tmp_path / f"out{n}", *options) == (answers, []), options
    assert _library(folder) == (answers, [])
    for key, (outcome, priority, _rules) in answers.items():
        assert _explain(folder, key.removeprefix("Patient/")) == (outcome, priority), key


# Spark in local mode: two runs, each starting a JVM (about 15 s each); skipped without pyspark or Java.
@pytest.mark.slow
@pytest.mark.skipif(not _spark_ready(), reason="pyspark or Java not installed")
def test_the_spark_engine_resolves_a_medication_held_in_another_file(tmp_path: Path) -> None:
    bundles, export = build(tmp_path)
    screened = {**_screen(bundles)[0], **{f"x{k}": v for k, v in _screen(export)[0].items()}}
    batched, errors = _batch(bundles, tmp_path / "s1", "--engine", "spark", "--spark-master", "local[2]",
                             "--unit-mb", "0.001")
    more, more_errors = _batch(export, tmp_path / "s2", "--engine", "spark", "--spark-master", "local[2]",
                               "--unit-mb", "0.001")
    assert {**batched, **{f"x{k}": v for k, v in more.items()}} == screened
    assert errors == more_errors == []


def test_a_reference_that_resolves_nowhere_is_one_input_error_naming_file_entry_and_reason(tmp_path: Path) -> None:
    bundles, export = build(tmp_path)
    _write(bundles / "d.json", _bundle(patient("d", "1950-01-01"), _orders("d", "Medication/nowhere")[0]))
    write_ndjson(export / "MedicationRequest.001.ndjson", [_orders("d", "Medication/nowhere")[0]])
    for folder, where in ((bundles, {"file": str(bundles / "d.json"), "line": None, "location": "entry[1]"}),
                          (export, {"file": str(export / "MedicationRequest.001.ndjson"), "line": 1,
                                    "location": None})):
        answers, stderr = _screen(folder)
        assert stderr.count(NOWHERE) == 1, stderr
        assert answers["Patient/a"][2] == ("MET-2",)  # the one bad entry costs that entry only
        for n, options in enumerate(_DOORS):
            assert _batch(folder, tmp_path / f"{folder.name}{n}", *options) == (answers, [{**where, "reason": NOWHERE}])
        library, errors = _library(folder)
        assert library == answers and len(errors) == 1 and NOWHERE in errors[0]
