"""One read path for every door: discovery, input accounting, nesting depth, validation policy, Spark setup."""

from __future__ import annotations

import gzip
import json
import socket
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import batch, rows, write_ndjson
from cdshooks_helpers import full_prefetch, request_body, searchset
from click.testing import CliRunner
from conftest import metformin_request, patient

from b12screen import Screener
from b12screen.batch import MissingInputError
from b12screen.batch.spark import master_problem, session_conf
from b12screen.cli import cli
from b12screen.sources import discover, read_inputs
from b12screen.sources.limits import MAX_DEPTH, too_deep

AS_OF = "2026-11-24"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def export_folder(root: Path) -> Path:
    export = root / "export"
    write_ndjson(export / "Patient.000.ndjson.gz", [patient("a", "1950-01-01"), patient("b", "1950-01-01")], gz=True)
    write_ndjson(export / "MedicationRequest.000.jsonl.gz",
                 [metformin_request(f"a{y}", "a", f"{y}-01-01") for y in range(2015, 2025)], gz=True)
    write_ndjson(export / "MedicationRequest.001.jsonl",
                 [metformin_request(f"b{y}", "b", f"{y}-01-01") for y in range(2015, 2025)])
    (export / "manifest.json").write_text(json.dumps({"transactionTime": "2026-01-01T00:00:00Z", "output": []}))
    write_ndjson(export / "log.ndjson", [{"resourceType": "OperationOutcome", "issue": []}])
    deletes = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"MedicationRequest/b{y}"}} for y in range(2015, 2025)]}
    write_ndjson(export / "deleted" / "del.ndjson", [deletes])
    write_ndjson(export / "Condition.000.ndjson.part", [{"resourceType": "Condition"}])
    return export


def test_discovery_reads_data_skips_metadata_applies_deleted_and_names_ignored_files(tmp_path: Path) -> None:
    export = export_folder(tmp_path)
    found = discover([str(export)])
    assert [Path(f).name for f in found.files] == [
        "MedicationRequest.000.jsonl.gz", "MedicationRequest.001.jsonl", "Patient.000.ndjson.gz"]
    assert [Path(f).name for f in found.metadata] == ["log.ndjson", "manifest.json"]
    assert [Path(f).name for f in found.deleted_files] == ["del.ndjson"]
    assert [Path(f).name for f in found.ignored] == ["Condition.000.ndjson.part"]
    inputs = read_inputs([str(export)])
    assert "MedicationRequest/b2015" in inputs.deleted and len(inputs.deleted) == 10


def test_screen_and_batch_agree_on_a_bulk_export(tmp_path: Path) -> None:
    export = export_folder(tmp_path)
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(export))
    assert screened.exit_code == 0, screened.stderr
    report = {r["patient"]: r for r in json.loads(screened.stdout)}
    assert report["Patient/a"]["rules"] == ["MET-2"] and "MET-2" not in report["Patient/b"]["rules"]  # deleted
    assert "ignored 1 file(s)" in screened.stderr and "Condition.000.ndjson.part" in screened.stderr
    batched = run("batch", "--as-of", AS_OF, "--workers", "1", "--no-progress", str(export), "--out",
                  str(tmp_path / "out"))
    assert batched.exit_code == 0, batched.stderr
    assert {r["patient"]: r["rules"] for r in rows(tmp_path / "out" / "report.ndjson")} == {
        k: v["rules"] for k, v in report.items()}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [Path(f).name for f in summary["ignored_files"]] == ["Condition.000.ndjson.part"]
    assert "ignored 1 file(s)" in batched.stderr


def test_a_missing_path_is_a_usage_error_before_any_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("batch", "--as-of", AS_OF, str(tmp_path / "nope"), "--out", str(out))
    assert result.exit_code == 2 and "nope: no such file or folder" in result.stderr
    assert not out.exists()
    with pytest.raises(MissingInputError):
        batch(Screener(), [tmp_path / "nope"], out)
    written = tmp_path / "flags.json"
    screened = run("screen", "--as-of", AS_OF, "-o", str(written), str(tmp_path / "nope"))
    assert screened.exit_code == 2 and "no such file or folder" in screened.stderr and not written.exists()


def test_an_empty_file_or_folder_is_nothing_readable(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"")
    result = run("screen", "--as-of", AS_OF, str(tmp_path / "empty.json"))
    assert result.exit_code == 2 and "empty.json: nothing readable (empty)" in result.stderr
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "gz.ndjson.gz").write_bytes(gzip.compress(b"\n\n"))
    (tmp_path / "blank" / "plain.ndjson").write_bytes(b"\n \n")
    assert run("screen", "--as-of", AS_OF, str(tmp_path / "blank")).exit_code == 2
    blank = batch(Screener(), [tmp_path / "blank"], tmp_path / "out")
    assert blank.exit_code == 2
    assert [(Path(e["file"]).name, e["reason"]) for e in rows(tmp_path / "out" / "errors.ndjson")] == [
        ("gz.ndjson.gz", "nothing readable (empty)"), ("plain.ndjson", "nothing readable (empty)")]
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    folder = run("screen", "--as-of", AS_OF, str(tmp_path / "folder"))
    assert folder.exit_code == 2 and "nothing readable in this folder" in folder.stderr
    assert "notes.txt" in folder.stderr  # named as ignored


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(levels):
        value = {"url": "http://example.org/x", "extension": [value]}
    return value


def test_depth_check_is_iterative_and_exact() -> None:
    assert not too_deep({"a": [{"b": 1}]}, limit=3) and too_deep({"a": [{"b": {}}]}, limit=3)
    assert too_deep(_deep(150)) and not too_deep(_deep(10))
    assert too_deep([[[[1]]]], limit=MAX_DEPTH) is False


def test_deep_nesting_is_one_clear_error_in_screen_batch_and_serve(tmp_path: Path) -> None:
    deep = metformin_request("deep", "a", "2015-06-01", extension=[_deep(150)])
    export = tmp_path / "export"
    write_ndjson(export / "Patient.000.ndjson", [patient("a", "1950-01-01")])
    write_ndjson(export / "MedicationRequest.000.ndjson",
                 [deep] + [metformin_request(f"m{y}", "a", f"{y}-01-01") for y in range(2016, 2025)])
    for policy in ("evidence", "all"):
        screened = run("screen", "--as-of", AS_OF, "--validate", policy, "--format", "report", str(export))
        assert screened.exit_code == 1, screened.stderr
        assert "MedicationRequest.000.ndjson: line 1: " in screened.stderr
        assert "nested more than 64 levels deep" in screened.stderr
        assert "Traceback" not in screened.stderr
        assert json.loads(screened.stdout)[0]["rules"] == ["MET-2"]  # the rest is screened
        out = tmp_path / f"out-{policy}"
        result = batch(Screener(), [export], out, validate=policy)
        assert result.exit_code == 1
        [error] = rows(out / "errors.ndjson")
        assert error["line"] == 1 and error["reason"].endswith("nested more than 64 levels deep")

    from starlette.testclient import TestClient

    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig

    others = [metformin_request(f"m{y}", "a", f"{y}-01-01") for y in range(2016, 2025)]
    body = request_body(pid="a", prefetch=full_prefetch("a", medicationRequests=searchset(deep, *others)))
    for policy in ("evidence", "all"):
        app = create_app(ServiceConfig(insecure_no_auth=True, validate=policy).checked(),
                         today=lambda: date(2026, 11, 24))
        with TestClient(app) as client:
            response = client.post("/cds-services/b12screen-patient-view", json=body)
        assert response.status_code == 200, response.text
        [card] = response.json()["cards"]  # screened without the deep resource
        assert "MedicationRequest/deep" not in json.dumps(card)


def test_local_spark_binds_the_driver_to_loopback_unless_configured() -> None:
    assert session_conf("local[2]", {}) == {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    assert session_conf("local", {"spark.driver.host": "10.0.0.5"})["spark.driver.host"] == "10.0.0.5"
    assert session_conf("spark://h:7077", {}) == {}


def test_spark_master_problems_are_found_before_the_jvm_starts() -> None:
    assert master_problem("local[*]", {}) is None
    assert "HADOOP_CONF_DIR" in (master_problem("yarn", {}) or "")
    assert master_problem("yarn", {"HADOOP_CONF_DIR": "/etc/hadoop"}) is None
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert master_problem(f"spark://127.0.0.1:{port}", {}, timeout=2) == (
        f"cannot reach the Spark master spark://127.0.0.1:{port} (Connection refused)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert master_problem(f"spark://127.0.0.1:{server.getsockname()[1]}", {}, timeout=2) is None
    assert "not spark://HOST:PORT" in (master_problem("spark://nohost", {}) or "")


def test_an_unreachable_master_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyspark")
    export = export_folder(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("batch", "--as-of", AS_OF, "--engine", "spark", "--spark-master", f"spark://127.0.0.1:{port}",
                 str(export), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"b12screen: error: cannot reach the Spark master spark://127.0.0.1:{port} (Connection refused)"]
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    yarn = run("batch", "--as-of", AS_OF, "--engine", "spark", "--spark-master", "yarn", str(export),
               "--out", str(tmp_path / "out2"))
    assert yarn.exit_code == 2 and len(yarn.stderr.strip().splitlines()) == 1 and "HADOOP_CONF_DIR" in yarn.stderr


def test_long_patient_ids_are_keyed_the_same_by_screen_and_batch(tmp_path: Path) -> None:
    long_id = "x" * 70
    export = tmp_path / "export"
    write_ndjson(export / "MedicationRequest.000.ndjson",
                 [metformin_request(f"m{y}", long_id, f"{y}-01-01") for y in range(2015, 2025)])
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(export))
    [entry] = json.loads(screened.stdout)
    batch(Screener(), [export], tmp_path / "out")
    [row] = rows(tmp_path / "out" / "report.ndjson")
    assert entry["patient"] == row["patient"] == f"Patient/{long_id}"
    assert entry["rules"] == row["rules"] == ["MET-2"]


def test_relevance_is_decided_from_the_header_alone() -> None:
    from b12screen.sources.relevance import ConceptMatcher, decode_head, is_relevant

    matcher = ConceptMatcher(Screener().terminology)
    metformin = json.dumps(metformin_request("m", "a", "2020-01-01")).encode()
    other = metformin.replace(b'"861007"', b'"29046"').replace(b"metformin hydrochloride 500 MG", b"lisinopril")
    assert is_relevant("MedicationRequest", decode_head(metformin), matcher)
    assert not is_relevant("MedicationRequest", decode_head(other), matcher)
    assert len(set(matcher.cache) - {b""}) == 2  # one look-up per distinct coded field (b"": an absent one)
    encounter = {"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/a"},
                 "hospitalization": {"dietPreference": [{"text": "vegan"}]}}
    assert is_relevant("Encounter", decode_head(json.dumps(encounter).encode()), matcher)
    encounter["hospitalization"] = {"admitSource": {"text": "x"}}
    assert not is_relevant("Encounter", decode_head(json.dumps(encounter).encode()), matcher)
    head = decode_head(b'{"resourceType":"Condition","subject":{"reference":"Patient/a","display":"x"}}')
    assert head.subject.reference == "Patient/a" and head.patient is None


def test_batches_of_one_type_decoded_at_once_keep_every_line_level_error(screener: Screener, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines of a file of one type are decoded a batch at a time; a batch holding anything unusual is read
    line by line, so each odd line is still one error at its own line, and the rest is screened as ever."""
    import b12screen.sources.lines as lines

    monkeypatch.setattr(lines, "BLOCK", 4096)  # about a dozen lines a batch: each odd line in a batch of its own
    good = [json.dumps(metformin_request(f"m{i}", f"p{i % 7}", f"{2000 + i % 25}-01-01")).encode()
            for i in range(400)]
    odd = {
        50: json.dumps(metformin_request("x1", "p1", "2020-01-01")).encode() * 2,  # two objects on one line
        100: b'{"id": "x2", "subject": {"reference": "Patient/p1"}}',  # no resourceType
        150: json.dumps(patient("p9")).encode(),  # a Patient in a file of MedicationRequests
        200: b"",  # a blank line: nothing to report
        250: json.dumps(metformin_request("x3", "p1", "2020-01-01", subject="Patient/p1")).encode(),
        300: json.dumps(metformin_request("x4", "p1", "2020-01-01", subject={"reference": "Group/g"})).encode(),
        350: json.dumps(metformin_request("x5", "p1", "2020-01-01", note=[{"text": "?"}])).encode().replace(
            b'"?"', b'"\xff"'),  # not UTF-8, in a field the header does not decode
    }
    data = [odd.get(n, line) for n, line in enumerate(good, 1)]
    export = tmp_path / "export"
    export.mkdir()
    (export / "MedicationRequest.000.ndjson").write_bytes(b"\n".join(data) + b"\n")
    write_ndjson(export / "Patient.000.ndjson", [patient(f"p{i}", "1950-01-01") for i in range(7)])
    result = batch(screener, [export], tmp_path / "out")
    errors = [(e["line"], e["reason"].split(" (")[0]) for e in rows(tmp_path / "out" / "errors.ndjson")]
    assert errors == [
        (50, "malformed JSON"),
        (100, "not a FHIR resource"),
        (150, "a Patient resource in a file of MedicationRequest resources"),
        (250, "MedicationRequest has no usable reference to a Patient"),
        (300, "MedicationRequest has no usable reference to a Patient"),
        (350, "malformed JSON"),
    ], errors
    assert result.summary["resources_read"] == 7 + 400 - 5  # blank, two-object, typeless, Patient, bad UTF-8 lines
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(export))
    report = {r["patient"]: (r["rules"], r["evidence"]) for r in json.loads(screened.stdout)}
    assert "Patient/p9" not in report  # screen, too, refuses a resource of another type than its file's
    assert "a Patient resource in a file of MedicationRequest resources" in screened.stderr
    assert {r["patient"]: (r["rules"], r["evidence"]) for r in rows(tmp_path / "out" / "report.ndjson")} == report
    assert report["Patient/p1"][0] == ["MET-2"] and len(report["Patient/p1"][1]) > 10


def test_clean_lines_of_one_type_never_take_the_line_by_line_path(screener: Screener, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch-at-once decode is what keeps the read path fast: an export uses it for every line of every
    file, plain or gzip, but the Patient ones (Patients are parsed whole) and a read holding a deleted
    resource (here MedicationRequest.001, whose ten requests are all deleted)."""
    from b12screen.batch.stream import UnitReader

    per_line: list[str] = []
    real = UnitReader._batch

    def counted(self: UnitReader, batch: list[Any], rel: int) -> None:
        per_line.extend(self.piece.file_type or "?" for _ in batch)
        real(self, batch, rel)

    monkeypatch.setattr(UnitReader, "_batch", counted)
    export = export_folder(tmp_path)
    write_ndjson(export / "Condition.000.ndjson", [
        {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/{'ab'[i % 2]}"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "235595009"}]}} for i in range(50)])
    result = batch(screener, [export], tmp_path / "out")
    assert result.exit_code == 0
    assert sorted(per_line) == ["MedicationRequest"] * 10 + ["Patient"] * 2
    assert result.summary["resources_read"] == 2 + 10 + 10 + 50
    report = {r["patient"]: r["rules"] for r in rows(tmp_path / "out" / "report.ndjson")}
    assert "MET-2" in report["Patient/a"] and "MET-2" not in report["Patient/b"]  # b's requests are deleted
