"""The Bulk Data export client (``b12screen export``, ``batch --fhir-server``) against a loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import batch, write_ndjson
from bulkserver import DELETED_PATIENT, EXPORT, TOKEN, BulkServer, Scenario, Waits, deleted_bundle, record_waits
from click.testing import CliRunner
from conftest import AS_OF

from b12screen import Screener
from b12screen.cli import cli
from b12screen.cli.export import export_types
from b12screen.sources.bulkexport import BulkExporter, ExportLimits, ExportRequest, gone_reason
from b12screen.sources.fhirclient import BearerToken, FhirClient

ENV = {"B12SCREEN_FHIR_TOKEN": TOKEN}


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    """The client's pauses, recorded and not slept (the server's Retry-After is still what they follow)."""
    return record_waits(monkeypatch)


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=env if env is not None else ENV)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def export_with(out: Path, scenario: Scenario, *extra: str) -> tuple[BulkServer, int, str]:
    """Run ``b12screen export`` against a server playing ``scenario``: (server, exit code, output)."""
    with BulkServer(scenario) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(out), *extra])
    return server, code, output


def quiet(**changes: Any) -> Scenario:
    """A scenario without the injected 429, 500 and error file."""
    return Scenario(**{"error_file": False, "inject_429": False, "inject_500": False, **changes})


def test_export_follows_the_ig_and_sends_the_token_only_to_the_server(tmp_path: Path, waits: Waits) -> None:
    with BulkServer(Scenario(requires_token=True, deleted_file=True, polls_before_ready=2)) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path), "--no-progress"])
    assert code == 1, output  # the server's error file is reported
    kick = server.log.kickoffs[0]
    assert kick["method"] == "GET" and kick["path"] == "/fhir/$export" and kick["prefer"] == "respond-async"
    assert kick["params"]["_outputFormat"] == "application/fhir+ndjson"
    assert set(kick["params"]["_type"].split(",")) == set(export_types())
    assert {"Patient", "MedicationRequest", "Observation", "Condition", "Medication"} <= set(export_types())
    assert server.log.polls == 5  # 429, transient 500, two 202s (seconds and an HTTP-date), the manifest
    # what the client waited (recorded, not slept): the 429's Retry-After of 0, the transient 500's backoff, then
    # the two 202s' Retry-After (0 s, an HTTP-date in the past) raised to the 1 s floor
    assert waits == [0.0, 1.0, 1.0, 1.0]
    folder = tmp_path / "export"
    for name, data in server.files.items():
        number = sorted(n for n in server.files if n.startswith(name.split(".")[0] + ".")).index(name)
        assert (folder / f"{name.split('.')[0]}.{number:03d}.ndjson").read_bytes() == data
    assert (folder / "deleted" / "Bundle.000.ndjson").read_bytes() == deleted_bundle()
    assert json.loads((folder / "manifest.json").read_text())["requiresAccessToken"] is True
    assert all(auth == f"Bearer {TOKEN}" for _, auth in server.log.downloads if "/redirect/" not in _)
    assert server.log.other_downloads == [("/files/Patient.001.ndjson", None)]  # redirected: no token
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["processing: Procedure export failed"]
    assert server.log.deletes == ["/fhir/status/1"]  # the job is deleted once the files are in
    assert "Bearer" not in output and TOKEN not in output


def test_no_token_on_downloads_when_the_manifest_does_not_require_one(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # nor credentials from ~/.netrc
    with BulkServer(Scenario(requires_token=False, error_file=False, inject_429=False, inject_500=False)) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path / "o"), "--patient-level"])
    assert code == 0, output
    assert server.log.kickoffs[0]["path"] == "/fhir/Patient/$export"
    assert server.log.downloads and all(auth is None for _, auth in server.log.downloads)
    assert (tmp_path / "o" / "errors.ndjson").read_text() == ""


def test_an_expired_file_is_requested_again_by_a_new_export(tmp_path: Path) -> None:
    scenario = Scenario(error_file=False, expire="Patient.000.ndjson", inject_429=False, inject_500=False)
    with BulkServer(scenario) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path), "--group", "g1",
                            "--since", "2026-11-01T00:00:00Z"])
    assert code == 0, output
    assert len(server.log.kickoffs) == 2 and "re-export" in output
    assert server.log.kickoffs[1]["path"] == "/fhir/Group/g1/$export"
    assert server.log.kickoffs[1]["params"]["_since"] == "2026-11-01T00:00:00Z"
    assert (tmp_path / "export" / "Patient.000.ndjson").read_bytes() == server.files["Patient.000.ndjson"]


def test_a_file_that_expires_twice_is_named_as_an_error(tmp_path: Path) -> None:
    scenario = Scenario(error_file=False, expire="Patient.000.ndjson", expire_jobs=(1, 2), inject_429=False,
                        inject_500=False)
    with BulkServer(scenario) as server:
        code, _ = run(["export", "--fhir-server", server.base, "--out", str(tmp_path)])
    assert code == 1 and len(server.log.kickoffs) == 2
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert errors == [{"file": "Patient.000.ndjson", "line": None, "location": None,
                       "reason": "download: HTTP 404 Not Found, also after a new export"}]


def test_a_rerun_resumes_polling_and_skips_whole_files(tmp_path: Path) -> None:
    scenario = Scenario(error_file=False, inject_429=False, inject_500=False, never_ready=True,
                        broken="Encounter.000.ndjson")
    args = ["export", "--fhir-server", "", "--out", str(tmp_path)]
    with BulkServer(scenario) as server:
        args[2] = server.base
        code, output = run([*args, "--max-wait", "1"])
        assert code == 2 and "did not finish within the time allowed" in output
        scenario.never_ready = False
        code, output = run(args)  # the job in progress is polled again, not started anew
        assert code == 1 and len(server.log.kickoffs) == 1
        assert "Encounter.000.ndjson" in (tmp_path / "errors.ndjson").read_text()
        assert server.log.deletes == []  # not every file is in: the job is kept
        fetched = [p for p, _ in server.log.downloads]
        assert fetched.count("/fhir/files/1/Encounter.000.ndjson") == 4  # retried 3 times
        short = tmp_path / "export" / "MedicationRequest.000.ndjson"
        short.write_bytes(short.read_bytes()[:-10])  # a file cut short is downloaded again
        scenario.broken = None
        before = len(server.log.downloads)
        code, output = run(args)
    assert code == 0, output
    assert len(server.log.kickoffs) == 1
    assert sorted(p for p, _ in server.log.downloads[before:]) == [
        "/fhir/files/1/Encounter.000.ndjson", "/fhir/files/1/MedicationRequest.000.ndjson"]
    assert short.read_bytes() == server.files["MedicationRequest.000.ndjson"]
    assert server.log.deletes == ["/fhir/status/1"]


def test_a_rerun_after_a_finished_export_starts_a_new_one(tmp_path: Path) -> None:
    with BulkServer(quiet(deleted_file=True, error_file=True, first_job_only="Encounter.000.ndjson")) as server:
        for _ in range(2):
            code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path)])
            assert code == 1, output  # the server's error file
    assert len(server.log.kickoffs) == 2 and server.log.deletes == ["/fhir/status/1", "/fhir/status/2"]
    folder = tmp_path / "export"  # the files of the first export are gone, those of the second in place
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(set(server.files) - {"Encounter.000.ndjson"}), "manifest.json", "deleted"])
    assert [p.name for p in (folder / "deleted").iterdir()] == ["Bundle.000.ndjson"]
    state = tmp_path / ".export-state"  # beside the export, so that the reader never sees it
    assert sorted(p.name for p in state.iterdir()) == ["errors", "state.json"]
    assert [p.name for p in (state / "errors").iterdir()] == ["OperationOutcome.000.ndjson"]
    assert len((tmp_path / "errors.ndjson").read_text().splitlines()) == 1


def test_files_beyond_the_size_limit_or_short_of_the_count_are_errors(tmp_path: Path) -> None:
    scenario = Scenario(error_file=False, inject_429=False, inject_500=False, wrong_count="Patient.000.ndjson")
    with BulkServer(scenario) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path),
                            "--max-file-mb", str(500 / (1 << 20))])  # 500 bytes
    assert code == 1, output
    errors = {e["file"]: e["reason"] for e in map(json.loads, (tmp_path / "errors.ndjson").read_text().splitlines())}
    assert errors == {
        "MedicationRequest.000.ndjson": "larger than the limit of 500 bytes",  # 578 bytes
        "MedicationRequest.001.ndjson": "larger than the limit of 500 bytes",  # 581 bytes
        "Patient.000.ndjson": "the manifest says 4 resource(s), the file has 3 line(s)",
    }
    assert not (tmp_path / "export" / "MedicationRequest.000.ndjson").exists()
    assert not list((tmp_path / "export").glob(".*.part"))
    assert (tmp_path / "export" / "Observation.000.ndjson").stat().st_size == 402  # under the limit: kept


def test_a_file_url_on_plain_http_elsewhere_is_refused(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(insecure_url=True))
    assert code == 1, output
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [(e["file"], e["reason"]) for e in errors] == [
        ("Condition.001.ndjson", "download refused: the URL must use https (plain http only on a loopback address)")]
    assert server.log.deletes == []  # a file is missing: the job is kept for a re-run


def test_since_must_be_an_instant(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(), "--since", "yesterday")
    assert code == 2 and "expected a FHIR instant" in output and server.log.kickoffs == []


def test_an_unwritable_output_folder_is_one_clear_message(tmp_path: Path) -> None:
    (tmp_path / "export").write_text("a file where the export folder should be")
    server, code, output = export_with(tmp_path, quiet())
    assert code == 2 and f"error: cannot write to {tmp_path / 'export'}" in output and "Traceback" not in output
    assert server.log.kickoffs == []


@pytest.mark.slow
def test_a_file_that_takes_too_long_is_an_error(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(slow="Patient.001.ndjson", redirect=None),
                                       "--file-timeout", "1")
    assert code == 1, output
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [(e["file"], e["reason"]) for e in errors] == [("Patient.001.ndjson", "took longer than 1 s")]
    assert (tmp_path / "export" / "Patient.000.ndjson").is_file()
    assert server.log.deletes == []  # kept for a re-run


def test_a_fatal_operation_outcome_is_one_clear_message(tmp_path: Path) -> None:
    with BulkServer(Scenario(fatal_kickoff=True)) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path), "--group", "g"])
    assert code == 2
    assert "error: export kick-off: HTTP 400: not-supported: Group export is not enabled on this server" in output
    assert "Traceback" not in output


def test_a_job_that_fails_while_polled_is_one_clear_message(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(fatal_poll=True))
    assert code == 2 and "Traceback" not in output
    assert "error: export failed: HTTP 500: exception: the export job failed" in output
    assert server.log.polls == 4  # the client's own retries of a 500, then no more: not transient


def test_type_filter_posts_parameters_when_the_url_is_long(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(), "--type-filter")
    assert code == 0, output
    kick = server.log.kickoffs[0]
    assert kick["method"] == "POST"
    filters = [v for n, v in kick["pairs"] if n == "_typeFilter"]
    assert sorted(f.split("?")[0] for f in filters) == ["Condition", "Observation", "Procedure"]
    assert "http://loinc.org|2132-9" in filters[1]  # B12 (total) from the value sets


def test_type_filter_refused_by_the_server_falls_back_to_an_unfiltered_export(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(reject_type_filter=True), "--type-filter")
    assert code == 0, output
    assert "the server refused _typeFilter; exporting those types unfiltered" in output
    assert [("_typeFilter" in k["params"]) for k in server.log.kickoffs] == [True, False]


def test_type_filter_falls_back_when_the_server_does_not_declare_it(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(declare_code_search=False), "--type-filter")
    assert code == 0, output
    assert "does not declare search by code for Condition, Observation, Procedure" in output
    kick = server.log.kickoffs[0]
    assert kick["method"] == "GET" and "_typeFilter" not in kick["params"]


def test_retry_after_is_honoured_and_capped(tmp_path: Path) -> None:
    sleeps: list[float] = []
    progress: list[str] = []
    with BulkServer(Scenario(error_file=False, inject_500=False, polls_before_ready=3)) as server:
        server.retry_after = {2: "7", 3: "3600"}
        client = FhirClient(server.base, auth=BearerToken(TOKEN), sleep=sleeps.append)
        exporter = BulkExporter(client, tmp_path, ExportLimits(max_poll_wait=50.0), on_progress=progress.append,
                                sleep=sleeps.append)
        result = exporter.run(ExportRequest(export_types()))
    assert result.errors == []
    # 429 "0" (the client's own retry), 202 "7", 202 "3600" capped at 50, 202 with an HTTP-date in the past
    # raised to the 1 s floor
    assert sleeps == [0.0, 7.0, 50.0, 1.0]
    assert progress == ["20% done", "30% done", "40% done", *(f"downloaded {n}/8 file(s)" for n in range(1, 9))]


def test_batch_from_a_fhir_server_matches_batch_from_files(tmp_path: Path, screener: Screener) -> None:
    scenario = Scenario(error_file=False, deleted_file=True)
    with BulkServer(scenario) as server:
        code, output = run(["batch", "--fhir-server", server.base, "--out", str(tmp_path / "srv"),
                            "--as-of", AS_OF.isoformat(), "--workers", "1", "--no-progress"])
    assert code == 0, output
    local = tmp_path / "local"
    for name, data in server.files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    write_ndjson(local / "deleted" / "del.ndjson", [json.loads(deleted_bundle())])
    batch(screener, [local], tmp_path / "files")
    for name in ("flags.ndjson", "report.ndjson"):
        assert (tmp_path / "srv" / name).read_bytes() == (tmp_path / "files" / name).read_bytes()
    reported = (tmp_path / "srv" / "report.ndjson").read_text()
    assert "bx-met" in reported and f"Patient/{DELETED_PATIENT}\"" not in reported
    assert EXPORT.is_dir()


def test_batch_from_a_fhir_server_reports_the_servers_errors(tmp_path: Path) -> None:
    with BulkServer(Scenario()) as server:
        code, first = run(["batch", "--fhir-server", server.base, "--out", str(tmp_path), "--workers", "1",
                           "--as-of", AS_OF.isoformat(), "--no-progress"])
        assert code == 1, first
        again, output = run(["batch", "--fhir-server", server.base, "--out", str(tmp_path)])
    assert again == 2 and "already holds outputs" in output and len(server.log.kickoffs) == 1
    errors = (tmp_path / "errors.ndjson").read_text().splitlines()
    assert json.loads(errors[-1])["reason"] == "processing: Procedure export failed"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["errors"] == len(errors) and summary["export"]["files"] == 9
    assert summary["export"]["errors"] == 1 and summary["patients"] == 5
    assert summary.get("ignored_files", []) == [] and "ignored" not in first


def test_smart_backend_services_token_from_the_well_known_endpoint(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    scenario = Scenario(error_file=False, inject_429=False, inject_500=False, smart_public_key=key.public_key(),
                        token_lifetime=30)  # within the 30 s renewal margin at once: renewed before each use
    with BulkServer(scenario) as server:
        code, output = run(["export", "--fhir-server", server.base, "--out", str(tmp_path / "o"),
                            "--client-id", "b12-client", "--private-key", str(pem), "--key-id", "k1"], env={})
    assert code == 0, output
    assert server.log.tokens_issued >= 3  # kick-off, polls, downloads: renewed as it nears expiry
    assert all(k["authorization"] == f"Bearer {TOKEN}" for k in server.log.kickoffs)


def interrupt(server: BulkServer, out: Path, started: Any, command: str = "export",
              signum: int = signal.SIGINT) -> tuple[int, bytes]:
    """Run ``b12screen export`` (or ``batch``) in a process, send it ``signum`` once ``started()`` holds: (exit
    code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "b12screen", command, "--fhir-server", server.base,
                             "--out", str(out)], env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(600):
        if started():
            break
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)  # a safety bound: the slow file alone would take a minute
    return proc.returncode, err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("phase", ["polling", pytest.param("downloading", marks=pytest.mark.slow)])
def test_ctrl_c_cancels_the_job_on_the_server(tmp_path: Path, phase: str) -> None:
    scenario = quiet(never_ready=phase == "polling", slow="Patient.000.ndjson", redirect=None)
    with BulkServer(scenario) as server:
        started = (lambda: server.log.polls >= 1) if phase == "polling" else (
            lambda: any(p.endswith("/Patient.000.ndjson") for p, _ in server.log.downloads))
        code, err = interrupt(server, tmp_path, started)
    assert code == 130, err
    assert b"the export job was cancelled on the server" in err and b"Traceback" not in err
    assert server.log.deletes == ["/fhir/status/1"]
    assert not list((tmp_path / "export").glob(".*.part"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_during_batch_fhir_server_cancels_the_job_and_exits_143(tmp_path: Path) -> None:
    with BulkServer(quiet(never_ready=True, redirect=None)) as server:
        code, err = interrupt(server, tmp_path, lambda: server.log.polls >= 1, "batch", signal.SIGTERM)
    assert code == 143, err
    assert err.endswith(b"interrupted by SIGTERM: the export job was cancelled on the server\n")
    assert b"Traceback" not in err and server.log.deletes == ["/fhir/status/1"]


# -- a hostile file server: bombs, endless bodies, missing files elsewhere ----------------------------------

#: A bounded wait: each hostile download must end well within it (the server would go on for 30 s).
HANG = 15.0


def error_reasons(out: Path) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in map(json.loads, (out / "errors.ndjson").read_text().splitlines())}


def test_a_gzip_bomb_is_stopped_by_the_expansion_ratio(tmp_path: Path) -> None:
    _, code, output = export_with(tmp_path, quiet(gzip_bomb="Patient.001.ndjson", redirect=None))
    assert code == 1, output
    assert error_reasons(tmp_path) == {
        "Patient.001.ndjson": "gzip data expands more than 200 times (a decompression bomb); file not kept"}
    assert not (tmp_path / "export" / "Patient.001.ndjson").exists()
    assert not list((tmp_path / "export").glob(".*.part"))
    assert (tmp_path / "export" / "Patient.000.ndjson").is_file()


@pytest.mark.parametrize("hostile", ["endless", "drip_headers"])
@pytest.mark.slow
def test_an_endless_file_or_dripping_headers_are_cut_at_the_file_timeout(tmp_path: Path, hostile: str) -> None:
    """A body as fast as the socket takes it, for ever; or headers a line at a time, each well within the
    read timeout: the per-file deadline stops both."""
    started = time.monotonic()
    _, code, output = export_with(tmp_path, quiet(**{hostile: "Patient.001.ndjson"}, redirect=None),
                                  "--file-timeout", "1")
    assert code == 1, output
    assert error_reasons(tmp_path) == {"Patient.001.ndjson": "took longer than 1 s"}
    assert time.monotonic() - started < HANG
    assert not list((tmp_path / "export").glob(".*.part"))


def test_a_missing_file_elsewhere_is_named_as_a_404(tmp_path: Path) -> None:
    server, code, output = export_with(tmp_path, quiet(missing_elsewhere="Patient.001.ndjson", redirect=None))
    assert code == 1, output
    assert error_reasons(tmp_path) == {
        "Patient.001.ndjson": "download: HTTP 404 Not Found, also after a new export"}
    assert "expired" not in (tmp_path / "errors.ndjson").read_text()
    assert len(server.log.kickoffs) == 2  # a 404 may still be an expiry: one new export was asked for


@pytest.mark.slow
def test_a_status_request_whose_headers_drip_is_cut_at_the_timeout(tmp_path: Path, waits: Waits) -> None:
    started = time.monotonic()
    # about 2 s: four attempts of 0.5 s each (the backoff between them recorded, not slept)
    _, code, output = export_with(tmp_path, quiet(drip_headers="status"), "--timeout", "0.5")
    assert code == 2, output
    assert "error: GET status: timed out" in output
    assert waits == [0.5, 1.0, 2.0]  # the client's backoff between its four attempts
    assert time.monotonic() - started < HANG


def test_a_connection_broken_mid_file_is_an_error_row_not_a_traceback(tmp_path: Path, waits: Waits) -> None:
    with BulkServer(quiet(cut_short="Patient.001.ndjson", redirect=None)) as server:
        client = FhirClient(server.base, auth=BearerToken(TOKEN), retries=0)
        result = BulkExporter(client, tmp_path / "export", sleep=waits.sleep).run(ExportRequest(export_types()))
    assert [(e["file"], e["reason"]) for e in result.errors] == [("Patient.001.ndjson", "download connection failed")]
    assert not (tmp_path / "export" / "Patient.001.ndjson").exists()


def test_only_a_410_is_called_expired() -> None:
    assert gone_reason(404) == "download: HTTP 404 Not Found, also after a new export"
    assert gone_reason(410) == ("download: HTTP 410 Gone (the file expired on the server before it was "
                                "downloaded), also after a new export")
