"""b12screen batch: Bulk Data exports and per-patient Bundles in, four files out."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
from batch_helpers import BATCH, batch, outputs, rows, summary, write_ndjson
from click.testing import CliRunner
from conftest import AS_OF, SHARED_DATA, metformin_request, patient

from b12screen import Finding, Rule, Screener, hookimpl
from b12screen.batch import OutputError, OutputsExistError, local
from b12screen.batch.outputs import OUTPUT_NAMES
from b12screen.batch.scan import COST_PER_BYTE, dearest_first, scan, unit_cost
from b12screen.cli import cli
from b12screen.screening import group, screen_grouped
from b12screen.sinks.flag import flag_json
from b12screen.sources import discover, read_path
from b12screen.sources.validation import ALL

SUMMARY_KEYS = {"patients", "flagged", "by_outcome", "by_rule", "by_priority", "by_reason", "age_75_alone", "errors",
                "resources_read", "files_read", "files_ignored", "ignored_files", "coverage", "seconds", "run",
                "by_age_band", "by_sex", "not_evaluated", "no_birth_date", "newest_record_date", "as_of_warning",
                "definitions"}


def test_fixture_export_and_bundles_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["batch", str(BATCH / "export"), str(BATCH / "bundles"), "--out", str(out),
                                      "--as-of", "2026-11-24", "--workers", "2"])
    assert result.exit_code == 0, result.stderr
    assert "batch: 6 patient(s)" in result.stderr and "5 flagged" in result.stderr
    expected = json.loads((BATCH / "expected.json").read_text())["patients"]
    report = rows(out / "report.ndjson")
    assert [r["patient"] for r in report] == sorted(expected)  # every patient once, sorted
    for entry in report:
        want = expected[entry["patient"]]
        assert (entry["outcome"], entry["priority"], entry["rules"]) == (want["outcome"], want["priority"],
                                                                        want["rules"]), entry["patient"]
    flags = rows(out / "flags.ndjson")
    assert [f["subject"]["reference"] for f in flags] == [r["patient"] for r in report if r["priority"]]
    data = json.loads((out / "summary.json").read_text())
    assert set(data) == SUMMARY_KEYS
    assert (data["patients"], data["flagged"], data["errors"], data["resources_read"]) == (6, 5, 0, 17)
    assert data["by_rule"] == {"ACID-1": 1, "MET-2": 2}
    assert data["by_outcome"]["deficiency-without-treatment"] == 1
    assert (out / "errors.ndjson").read_bytes() == b""
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)  # no temporary files left


def test_urn_uuid_references_join_the_patient(screener: Screener, tmp_path: Path) -> None:
    pid = "0b5e6c7d-1111-4222-8333-944455566677"
    export = tmp_path / "export"
    write_ndjson(export / "MedicationRequest.000.ndjson", [metformin_request("m1", pid, "2015-01-01") | {
        "subject": {"reference": f"urn:uuid:{pid}"}}])
    write_ndjson(export / "Patient.000.ndjson", [patient(pid)])
    batch(screener, [export], tmp_path / "out")
    [entry] = rows(tmp_path / "out" / "report.ndjson")
    assert entry["patient"] == f"Patient/{pid}" and entry["rules"] == ["MET-2"]


def _split_export(root: Path, order: int = 1) -> Path:
    """One patient spread over many files (the Patient last), plus others, some gzip-compressed."""
    export = root / "export"
    requests = [metformin_request(f"s{i}", "split", f"20{10 + i}-01-01", status="completed") for i in range(6)]
    requests.append(metformin_request("s-active", "split", "2024-01-01"))
    for i, request in enumerate(requests[::order]):
        write_ndjson(export / (f"MedicationRequest.{i:03d}.ndjson" + (".gz" if i % 2 else "")), [request])
    write_ndjson(export / "MedicationRequest.100.ndjson", [metformin_request(f"o{i}", f"other{i}", "2020-01-01")
                                                          for i in range(40)])
    others = [patient(f"other{i}", f"19{40 + i}-01-01") for i in range(40)]
    write_ndjson(export / "Patient.999.ndjson", [patient("split", "1980-01-01"), *others[::order]])
    return export


def test_a_patient_split_over_many_files_equals_screening_it_whole(screener: Screener, tmp_path: Path) -> None:
    export = _split_export(tmp_path)
    batch(screener, [export], tmp_path / "out", unit_bytes=300)
    report = {r["patient"]: r for r in rows(tmp_path / "out" / "report.ndjson")}
    assert len(report) == 41
    whole = {r.patient: r.report() for r in screen_grouped(screener, group(screener, read_path(export), ALL), AS_OF)}
    assert report == whole
    assert report["Patient/split"]["rules"] == ["MET-2"]  # exposure from the earliest (2010) request


@pytest.mark.slow
def test_outputs_are_identical_for_any_worker_count_chunking_and_input_order(screener: Screener,
                                                                             tmp_path: Path) -> None:
    a = _split_export(tmp_path / "a")
    b = _split_export(tmp_path / "b", order=-1)
    for export in (a, b):
        write_ndjson(export / "Condition.000.ndjson", ["{not json", {"resourceType": "Condition"}])
    write_ndjson(tmp_path / "a" / "bundles" / "x.json", [])
    shutil.copytree(BATCH / "bundles", tmp_path / "a" / "bundles", dirs_exist_ok=True)
    shutil.copytree(BATCH / "bundles", tmp_path / "b" / "bundles", dirs_exist_ok=True)
    (tmp_path / "a" / "bundles" / "x.json").unlink()
    runs = [
        (tmp_path / "o1", [a, tmp_path / "a" / "bundles"], {"workers": 1}),
        (tmp_path / "o2", [tmp_path / "a" / "bundles", a], {"workers": 2, "unit_bytes": 200}),
        (tmp_path / "o3", [a, tmp_path / "a" / "bundles"], {"workers": 3, "unit_bytes": 1000}),
    ]
    for out, paths, options in runs:
        batch(screener, paths, out, **options)
    first = outputs(tmp_path / "o1")
    for out, _paths, _options in runs[1:]:
        assert outputs(out) == first
        assert summary(out) == summary(tmp_path / "o1")
    # The same data in other files (another order of resources, other names): same reports and Flags.
    batch(screener, [b, tmp_path / "b" / "bundles"], tmp_path / "o4", workers=2)
    for name in ("report.ndjson", "flags.ndjson"):
        assert (tmp_path / "o4" / name).read_bytes() == first[name]


def test_unreadable_lines_files_and_gzip_members_are_reported_and_the_rest_screened(
        screener: Screener, tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_ndjson(export / "Patient.000.ndjson", [
        patient("p1"), "{oops", "", json.dumps([1, 2]), {"resourceType": "Nope", "id": "x"},
        {"resourceType": "Patient"}, patient("p2"), {"resourceType": "Condition", "id": "c", "subject": {
            "reference": "Patient/p1"}}, '{"resourceType":"Patient","id":"bad-utf8","x":"\xff"}'])
    (export / "Patient.000.ndjson").write_bytes((export / "Patient.000.ndjson").read_bytes().replace(
        "\xff".encode(), b"\xff"))
    lines = [json.dumps(metformin_request(f"m{i}", "p1", f"{2015 + i % 5}-01-01")).encode() + b"\n" for i in range(50)]
    rest = gzip.compress(b"".join(lines[10:]))
    (export / "MedicationRequest.000.ndjson.gz").write_bytes(
        gzip.compress(b"".join(lines[:10])) + rest[: len(rest) // 2])  # the second member is cut short
    bad = bytearray(gzip.compress(json.dumps(metformin_request("z", "p2", "2015-01-01")).encode() + b"\n"))
    bad[12] ^= 0xFF
    (export / "MedicationRequest.001.ndjson.gz").write_bytes(
        gzip.compress(json.dumps(metformin_request("y1", "p2", "2020-01-01")).encode() + b"\n") + bytes(bad)
        + gzip.compress(json.dumps(metformin_request("y2", "p3", "2020-01-01")).encode() + b"\n"))
    result = batch(screener, [export], tmp_path / "out", max_line_bytes=10_000)
    assert result.exit_code == 1
    errors = rows(tmp_path / "out" / "errors.ndjson")
    where = [(Path(e["file"]).name, e["line"]) for e in errors]
    assert where == [
        ("MedicationRequest.000.ndjson.gz", where[0][1]),
        ("MedicationRequest.001.ndjson.gz", 2),
        ("Patient.000.ndjson", 2), ("Patient.000.ndjson", 4), ("Patient.000.ndjson", 4),
        ("Patient.000.ndjson", 5), ("Patient.000.ndjson", 6), ("Patient.000.ndjson", 8),
        ("Patient.000.ndjson", 9),
    ]
    reasons = [e["reason"] for e in errors]
    assert "truncated" in reasons[0] and "corrupt gzip data in member 2" in reasons[1]
    assert reasons[2].startswith("malformed JSON") and reasons[-1].startswith("malformed JSON")
    assert "no resourceType" in reasons[3] or "not a FHIR resource" in reasons[3]
    assert "unknown resourceType" in reasons[5] and "neither id nor fullUrl" in reasons[6]
    assert "a Condition resource in a file of Patient resources" in reasons[7]
    report = {r["patient"]: r for r in rows(tmp_path / "out" / "report.ndjson")}
    assert sorted(report) == ["Patient/p1", "Patient/p2", "Patient/p3"]
    assert report["Patient/p1"]["rules"] == ["MET-2"]  # the lines before the truncation were read
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["errors"] == len(errors) and data["patients"] == 3


def test_oversize_lines_are_errors(screener: Screener, tmp_path: Path) -> None:
    export = tmp_path / "export"
    big = patient("big") | {"text": {"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}}
    write_ndjson(export / "Patient.000.ndjson", [patient("a"), big, patient("b")])
    batch(screener, [export], tmp_path / "out", max_line_bytes=1000, unit_bytes=1)
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert error["line"] == 2 and "longer than 1000 bytes" in error["reason"]
    assert [r["patient"] for r in rows(tmp_path / "out" / "report.ndjson")] == ["Patient/a", "Patient/b"]


def test_empty_export_and_nothing_readable(screener: Screener, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_ndjson(empty / "Patient.000.ndjson", [])
    result = batch(screener, [empty], tmp_path / "out")  # an empty file is nothing readable
    assert result.exit_code == 2 and summary(tmp_path / "out")["patients"] == 0
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert error["file"].endswith("Patient.000.ndjson") and error["reason"] == "nothing readable (empty)"
    (tmp_path / "none").mkdir()
    assert batch(screener, [tmp_path / "none"], tmp_path / "out2").exit_code == 2
    write_ndjson(tmp_path / "junk" / "x.ndjson", ["nope", "[1"])
    nothing = batch(screener, [tmp_path / "junk"], tmp_path / "out3")
    assert nothing.exit_code == 2 and len(rows(tmp_path / "out3" / "errors.ndjson")) == 2


def test_existing_outputs_are_refused_or_replaced(screener: Screener, tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch(screener, [BATCH / "export"], out)
    before = outputs(out)
    with pytest.raises(OutputsExistError):
        batch(screener, [BATCH / "bundles"], out)
    assert outputs(out) == before
    cli_run = CliRunner().invoke(cli, ["batch", str(BATCH / "bundles"), "--out", str(out), "--as-of", "2026-11-24"])
    assert cli_run.exit_code == 2 and "--overwrite" in cli_run.stderr
    batch(screener, [BATCH / "bundles"], out, overwrite=True)
    assert summary(out)["patients"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)


def test_a_failed_run_leaves_no_file_that_looks_complete(screener: Screener, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from b12screen.batch import outputs as outputs_module

    real_commit = outputs_module.AtomicFile.commit

    def commit(self: outputs_module.AtomicFile) -> None:
        if self.final.name == "errors.ndjson":
            raise OSError("disk full")
        real_commit(self)

    out = tmp_path / "out"
    batch(screener, [BATCH / "export"], out)
    monkeypatch.setattr(outputs_module.AtomicFile, "commit", commit)
    with pytest.raises(OutputError, match=f"cannot write the outputs in {out}: disk full"):
        batch(screener, [BATCH / "bundles"], out, overwrite=True)
    assert not (out / "summary.json").exists()  # the old summary went first: the set reads as incomplete
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_rule_failures_go_to_errors_ndjson(plugin_manager, tmp_path: Path) -> None:
    class Faulty:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def boom(ctx) -> Finding | None:
                if ctx.record.key == "Patient/bx-only":
                    raise RuntimeError("boom")
                return None

            return [Rule(id="ZZ-FAULTY", title="faulty", version="1", basis="x", evaluate=boom)]

    plugin_manager.register(Faulty(), name="faulty")
    result = batch(Screener(plugin_manager=plugin_manager), [BATCH / "export"], tmp_path / "out", workers=2)
    assert result.exit_code == 1 and result.rule_errors == 1
    assert rows(tmp_path / "out" / "errors.ndjson") == [
        {"patient": "Patient/bx-only", "rule": "ZZ-FAULTY", "reason": "RuntimeError: boom"}]


def test_a_killed_worker_ends_the_batch_with_a_clear_error_and_no_outputs(plugin_manager, tmp_path: Path) -> None:
    parent = os.getpid()

    class Killer:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def kill(ctx) -> Finding | None:
                if os.getpid() != parent:  # only in a worker: the kernel's OOM killer, say
                    os.kill(os.getpid(), signal.SIGKILL)
                return None

            return [Rule(id="ZZ-KILL", title="kill", version="1", basis="x", evaluate=kill)]

    plugin_manager.register(Killer(), name="killer")
    out = tmp_path / "out"
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            batch(Screener(plugin_manager=plugin_manager), [BATCH / "export"], out, workers=2)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(120)
    assert outcome, "the batch waited for the killed worker's task instead of ending"
    assert isinstance(outcome[0], OutputError)
    assert str(outcome[0]) == (f"no outputs were written in {out}: a worker process ended before its work "
                               "was done (killed, perhaps for lack of memory)")
    assert not (out / "summary.json").exists() and not (out / "report.ndjson").exists()


class _CountingPool(ProcessPoolExecutor):
    made: ClassVar[list[int]] = []

    def __init__(self, workers: int, *args: object) -> None:
        _CountingPool.made.append(workers)
        super().__init__(workers, *args)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [1, 2])
def test_one_pool_of_forked_workers_serves_both_phases(plugin_manager, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """Workers are forked once per batch, not once per phase; even one worker screens outside the main
    process (which stays small for writing the outputs), unless the input is a single unit."""
    parent = os.getpid()
    seen = tmp_path / "pids"  # where the rules ran (a worker's memory is its own: a file tells)

    def pids() -> set[int]:
        return {int(line) for line in seen.read_text().split()} if seen.exists() else set()

    class Where:
        @hookimpl
        def b12screen_rules(self) -> list[Rule]:
            def where(ctx) -> Finding | None:
                with open(seen, "a") as f:
                    f.write(f"{os.getpid()}\n")
                return None

            return [Rule(id="ZZ-WHERE", title="where", version="1", basis="x", evaluate=where)]

    plugin_manager.register(Where(), name="where")
    _CountingPool.made = []
    monkeypatch.setattr(local, "ProcessPoolExecutor", _CountingPool)
    screener = Screener(plugin_manager=plugin_manager)
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    assert batch(screener, [export], tmp_path / "many", workers=workers, unit_bytes=300).exit_code == 0
    assert len(scan(discover([str(export)]), 300).units) > 1
    assert _CountingPool.made == [workers]  # one pool, both phases
    assert pids() and parent not in pids() and len(pids()) <= workers
    # a single unit with one worker: no fork at all
    seen.unlink()
    _CountingPool.made = []
    assert batch(screener, [export], tmp_path / "one", workers=1).exit_code == 0
    assert _CountingPool.made == [] and pids() == {parent}
    assert (tmp_path / "one" / "report.ndjson").read_bytes() == (tmp_path / "many" / "report.ndjson").read_bytes()


def test_units_are_cut_by_cost_and_the_dearest_are_screened_first(tmp_path: Path) -> None:
    """A Patient line is parsed in full, so a Patient file's bytes weigh COST_PER_BYTE["Patient"] times
    as much: its units are that much smaller, and the scheduler starts them before cheaper ones."""
    export = tmp_path / "export"
    write_ndjson(export / "Patient.ndjson", [patient(f"p{i}") for i in range(40)])
    write_ndjson(export / "Encounter.ndjson", [{"resourceType": "Encounter", "id": f"e{i}", "status": "finished",
                                                "subject": {"reference": f"Patient/p{i}"}} for i in range(40)])
    size = {name: (export / name).stat().st_size for name in ("Patient.ndjson", "Encounter.ndjson")}
    unit_bytes = size["Encounter.ndjson"] // 4
    units = scan(discover([str(export)]), unit_bytes).units
    kinds = {u.pieces[0].file_type for u in units}
    assert kinds == {"Patient", "Encounter"} and all(len({p.file_type for p in u.pieces}) == 1 for u in units)
    weight = COST_PER_BYTE["Patient"]
    assert weight > 1
    longest = max(len(line) for line in (export / "Patient.ndjson").read_bytes().splitlines()) + 1
    for unit in units:
        assert unit_cost(unit) == unit.size * (weight if unit.pieces[0].file_type == "Patient" else 1)
        assert unit_cost(unit) <= unit_bytes + longest * weight  # a piece ends at the newline after its target
    patient_units = sum(u.pieces[0].file_type == "Patient" for u in units)
    assert patient_units >= weight * size["Patient.ndjson"] // unit_bytes - 1
    order = dearest_first(units)
    assert sorted(order, key=lambda u: u.id) == sorted(units, key=lambda u: u.id)
    assert [unit_cost(u) for u in order] == sorted((unit_cost(u) for u in units), reverse=True)
    rank = {u.id: i for i, u in enumerate(order)}  # not by bytes: a smaller Patient unit before a larger one
    assert any(rank[p.id] < rank[e.id] and p.size < e.size for p in units for e in units
               if p.pieces[0].file_type == "Patient" and e.pieces[0].file_type == "Encounter")


def test_deleted_resources_and_export_metadata_are_left_out(screener: Screener, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "deleted" / "del.ndjson", [{"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/bx-only"}},
        {"request": {"method": "DELETE", "url": "MedicationRequest/bx-met-rx1"}}]}])
    write_ndjson(export / "error" / "OperationOutcome.000.ndjson", [{"resourceType": "OperationOutcome", "issue": []}])
    assert batch(screener, [export], tmp_path / "out").exit_code == 0
    report = {r["patient"]: r for r in rows(tmp_path / "out" / "report.ndjson")}
    assert "Patient/bx-only" not in report
    assert "MET-2" not in report["Patient/bx-met"]["risk_factors"]  # its active request was deleted


def test_invalid_evidence_is_reported_and_the_patient_screened_without_it(screener: Screener,
                                                                          tmp_path: Path) -> None:
    export = tmp_path / "export"
    bad = metformin_request("bad", "p", "2015-01-01") | {"priority": {"not": "a code"}}
    write_ndjson(export / "MedicationRequest.000.ndjson", [bad])
    write_ndjson(export / "Patient.000.ndjson", [patient("p")])
    assert batch(screener, [export], tmp_path / "out").exit_code == 1
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert error["line"] == 1 and "invalid MedicationRequest" in error["reason"]
    assert rows(tmp_path / "out" / "report.ndjson")[0]["outcome"] == "no-suggestion"


def test_progress_stays_quiet_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["batch", str(BATCH / "export"), "--out", str(tmp_path / "out"),
                                      "--as-of", "2026-11-24", "--workers", "1"])
    lines = [line for line in result.stderr.splitlines() if "plugin" not in line]
    assert len(lines) == 1 and lines[0].startswith("b12screen: batch: 5 patient(s)")


@pytest.mark.skipif(not (SHARED_DATA / "synthea-bulk-10").is_dir(), reason="shared data not present")
def test_synthea_export_matches_screen(screener: Screener, tmp_path: Path) -> None:
    source = SHARED_DATA / "synthea-bulk-10"
    batch(screener, [source], tmp_path / "out", workers=2)
    files = sorted(p for p in source.glob("*.ndjson") if p.name != "log.ndjson")
    items = [item for f in files for item in read_path(f)]
    results = screen_grouped(screener, group(screener, items, ALL), AS_OF)
    assert rows(tmp_path / "out" / "report.ndjson") == [r.report() for r in results]
    assert rows(tmp_path / "out" / "flags.ndjson") == [flag_json(r) for r in results if r.flagged]
