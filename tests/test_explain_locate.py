"""``b12screen explain --patient ID`` reads only what holds that patient, and answers as from the whole input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import AS_OF, FIXTURES, NEEDS_SYNTHEA, ROOT, SHARED_DATA, bundle, metformin_request, patient

from b12screen import Screener
from b12screen.cli import cli
from b12screen.core.explain import explain
from b12screen.screening import group
from b12screen.sources import limits, locate, read_inputs
from b12screen.sources.validation import ALL

sys.path.insert(0, str(ROOT / "benchmarks"))
from bundle_corpus import copy_id, patient_bundles, write_corpus

MIB = 1 << 20
SYNTHEA = SHARED_DATA / "synthea-bulk-10"


def _explained(screener: Screener, items: Any, deleted: frozenset[str], key: str) -> dict[str, Any]:
    grouped = group(screener, items, ALL, deleted)
    return explain(screener, grouped.patients[key].record(), AS_OF)


def _every_patient_alike(screener: Screener, paths: list[str]) -> int:
    inputs = read_inputs(paths)
    keys = [k for k in group(screener, inputs.items, ALL, inputs.deleted).patients
            if k.startswith("Patient/")]
    for key in keys:
        found = locate.locate(paths, key[8:])
        assert _explained(screener, found.items, found.deleted, key) == _explained(
            screener, inputs.items, inputs.deleted, key), key
    return len(keys)


@pytest.mark.parametrize("paths", [[FIXTURES / "batch" / "bundles", FIXTURES / "batch" / "export"],
                                   pytest.param([FIXTURES / "medication", FIXTURES / "errors", FIXTURES / "examples"],
                                                marks=pytest.mark.slow)])
def test_every_fixture_patient_is_explained_as_from_the_whole_input(screener: Screener, paths: list[Path]) -> None:
    """Every patient of the fixtures (slow: about 4 s for the 260 of the second set)."""
    assert _every_patient_alike(screener, [str(p) for p in paths]) > 5


@pytest.mark.slow
def test_every_synthea_patient_is_explained_as_from_the_whole_export(screener: Screener) -> None:
    """Real Synthea data (about 2 s): medicationReference, urn:uuid references, thousands of lines."""
    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data is not present")
    assert _every_patient_alike(screener, [str(SYNTHEA)]) == 13


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What locate parses: whole files (read_file) and the NDJSON lines it kept (read_bytes)."""
    seen: dict[str, list[Any]] = {"files": [], "lines": []}
    real_file, real_bytes = locate.read_file, locate.read_bytes

    def read_file(name: str) -> Any:
        seen["files"].append(Path(name).name)
        return real_file(name)

    def read_bytes(data: bytes, name: str) -> Any:
        seen["lines"].extend((Path(name).name, n) for n, line in enumerate(data.split(b"\n"), 1) if line)
        return real_bytes(data, name)

    monkeypatch.setattr(locate, "read_file", read_file)
    monkeypatch.setattr(locate, "read_bytes", read_bytes)
    return seen


@pytest.mark.slow
def test_a_bundle_folder_costs_one_file_and_empty_files_say_nothing(tmp_path: Path,
                                                                    reads: dict[str, list[Any]]) -> None:
    write_corpus(tmp_path, 3 * MIB, empty=2, folder=FIXTURES / "batch" / "bundles")
    ids, _ = patient_bundles(FIXTURES / "batch" / "bundles")[0]
    wanted = copy_id(ids[0], 1)
    out = CliRunner().invoke(cli, ["explain", str(tmp_path), "--patient", wanted, "--as-of", "2026-11-24", "--json"])
    assert out.exit_code == 0, out.stderr
    assert reads["files"] == ["c00001-000.json"] and out.stderr == ""
    assert json.loads(out.stdout)["patient"] == f"Patient/{wanted}"
    assert json.loads(out.stdout) == _explained(Screener(), read_inputs([str(tmp_path / "c00001-000.json")]).items,
                                                frozenset(), f"Patient/{wanted}")


def _ndjson(path: Path, lines: list[Any], gz: bool = False) -> None:
    data = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("chunk", [7, locate.CHUNK])
@pytest.mark.parametrize("gz", [False, True])
def test_ndjson_costs_the_patients_lines_with_their_own_numbers(tmp_path: Path, reads: dict[str, list[Any]],
                                                                 monkeypatch: pytest.MonkeyPatch, chunk: int,
                                                                 gz: bool) -> None:
    monkeypatch.setattr(locate, "CHUNK", chunk)  # 7 bytes: every line cut across chunks
    suffix = ".ndjson.gz" if gz else ".ndjson"
    _ndjson(tmp_path / f"Patient{suffix}", [patient("p10"), patient("p1"), patient("p2")], gz)
    _ndjson(tmp_path / f"MedicationRequest{suffix}", [
        metformin_request("a", "p10", "2020-01-01"), b'{"broken": "Patient/p2"', metformin_request("b", "p1",
                                                                                                    "2020-01-01"),
        b'{"broken": "Patient/p1"', metformin_request("c", "p2", "2020-01-01")], gz)
    out = CliRunner().invoke(cli, ["explain", str(tmp_path), "--patient", "p1", "--as-of", "2026-11-24", "--json"])
    assert out.exit_code == 1  # an input error among the lines read
    assert sorted(reads["lines"]) == [(f"MedicationRequest{suffix}", 3), (f"MedicationRequest{suffix}", 4),
                                      (f"Patient{suffix}", 2)]  # never p10's, never p2's
    assert json.loads(out.stdout)["evidence"] == ["MedicationRequest/b"]
    where = tmp_path / f"MedicationRequest{suffix}"
    assert out.stderr.splitlines() == [f"b12screen: error: {where}: line 4: malformed JSON "
                                       "(unexpected end of data: line 1 column 24 (char 23))"]


def test_explain_keeps_lines_up_to_the_line_limit_of_every_door(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    line = b'{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"note":"' + b"x" * 200 + b'"}'
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(line + b"\n" + line + b"\n")
    assert limits.line_cap() == 64 * MIB
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(len(line)))
    assert locate.matching_lines(str(path), locate.Ids(["p1"])) == ([(1, line), (2, line)], [])
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(len(line) - 1))
    assert locate.matching_lines(str(path), locate.Ids(["p1"])) == ([], [1, 2])


@pytest.mark.parametrize("gz", [False, True])
def test_a_document_is_searched_across_chunk_edges_for_the_whole_id(tmp_path: Path, gz: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate, "CHUNK", 4)
    ids = locate.Ids(["p1"])
    for offset in range(8):
        path = tmp_path / f"{offset}.json"
        for text, holds in ((" " * offset + '"Patient/p1"', True), (" " * offset + '"Patient/p10", "xp1"', False)):
            path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
            assert locate.holds(str(path), ids) is holds, (offset, text)


def test_a_line_too_long_holding_the_patient_is_named_not_kept(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", "500")
    monkeypatch.setattr(locate, "CHUNK", 64)
    padded = {"note": [{"text": "x" * 600}], **metformin_request("long", "p1", "2020-01-01")}  # the id past the limit
    _ndjson(tmp_path / "MedicationRequest.ndjson", [padded, metformin_request("b", "p1", "2020-01-01"),
                                                     metformin_request("far", "p9", "2020-01-01", note=[
                                                         {"text": "y" * 600}])])
    found = locate.locate([str(tmp_path)], "p1")
    assert [str(e) for e in found.items if not isinstance(e, locate.Entry)] == [
        f"{tmp_path / 'MedicationRequest.ndjson'}: line 1: line longer than 500 bytes"]
    assert [e.location for e in found.items if isinstance(e, locate.Entry)] == ["line 2"]


def test_a_medication_defined_in_another_bundle_is_fetched_alone(tmp_path: Path,
                                                                  reads: dict[str, list[Any]]) -> None:
    medication = {"resourceType": "Medication", "id": "med-x", "code": {"coding": [{
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "861007"}]}}
    request = metformin_request("r", "p", "2020-01-01")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": "Medication/med-x"}
    (tmp_path / "a.json").write_text(json.dumps(bundle(patient("p"), request)))
    (tmp_path / "b.json").write_text(json.dumps(bundle(patient("q"), medication, {"resourceType": "Spaceship"})))
    (tmp_path / "c.json").write_text(json.dumps(bundle(patient("z"))))
    found = locate.locate([str(tmp_path)], "p")
    assert sorted(reads["files"]) == ["a.json", "b.json"]
    assert [e.resource["id"] for e in found.items] == ["p", "r", "med-x"]  # nothing else of b.json: no errors
    assert _explained(Screener(), found.items, found.deleted, "Patient/p") == _explained(
        Screener(), read_inputs([str(tmp_path)]).items, frozenset(), "Patient/p")


def test_resources_naming_the_patient_by_its_full_url_alone_are_found(tmp_path: Path) -> None:
    uuid = "5f0c1f6e-0000-4000-8000-00000000abcd"
    (tmp_path / "a.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{uuid}", "resource": patient("p")}]}))
    request = metformin_request("r", "x", "2020-01-01", subject={"reference": f"urn:uuid:{uuid}"})
    (tmp_path / "b.json").write_text(json.dumps(bundle(request)))
    (tmp_path / "c.json").write_text(json.dumps(bundle(patient("q"))))
    found = locate.locate([str(tmp_path)], "p")
    assert sorted({e.source for e in found.items}) == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    explained = _explained(Screener(), found.items, found.deleted, "Patient/p")
    assert "MedicationRequest/r" in explained["evidence"]
    assert explained == _explained(Screener(), read_inputs([str(tmp_path)]).items, frozenset(), "Patient/p")


def test_an_unknown_patient_or_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(bundle(patient("p10"))))
    runner = CliRunner()
    nobody = runner.invoke(cli, ["explain", str(tmp_path), "--patient", "p1", "--as-of", "2026-11-24"])
    assert nobody.exit_code == 2 and "patient 'p1' is not in the input (1 file(s) searched)" in nobody.stderr
    gone = runner.invoke(cli, ["explain", str(tmp_path / "gone"), "--patient", "p1", "--as-of", "2026-11-24"])
    assert gone.exit_code == 2 and f"{tmp_path / 'gone'}: no such file or folder" in gone.stderr


MEASURE = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "b12screen", *sys.argv[1:]], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stderr.count("error:"))
"""


@NEEDS_SYNTHEA
@pytest.mark.slow
def test_explain_memory_does_not_grow_with_the_folder(tmp_path: Path) -> None:
    """Real processes (about 2 s): explaining one patient of 32 MB of Bundles peaks within 8 MB of
    explaining it alone (the whole-input reader took over 150 MB more)."""
    corpus = write_corpus(tmp_path / "big", 32 * MIB)
    ids, _ = patient_bundles()[0]
    wanted = copy_id(ids[0], 2)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "one.json").write_bytes(next((tmp_path / "big").glob("c00002-000.json")).read_bytes())
    peaks = []
    for folder in (alone, tmp_path / "big"):
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), "explain", str(folder), "--patient",
                              wanted, "--as-of", "2026-11-24", "--json"], capture_output=True, text=True,
                             timeout=120, check=True)
        code, rss, errors = map(int, out.stdout.split())
        assert (code, errors) == (0, 0)
        peaks.append(rss)
    assert corpus["bytes"] > 30 * MIB and (peaks[1] - peaks[0]) * 1024 < 8 * MIB, peaks
