"""Parity: one tricky input set gives the same outcome, priority, rules and Flag identifier through every
door: ``screen``, ``batch --workers 1`` and ``2``, ``batch --engine spark`` (local mode, when pyspark and
Java are installed), the CDS service under uvicorn on 127.0.0.1 (prefetch, and fallback fetch) and
``fetch`` from a loopback FHIR server serving the same patients."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from batch_helpers import write_ndjson
from cdshooks_helpers import request_body, running_server, stub_http_server
from click.testing import CliRunner
from conftest import metformin_request, patient

from b12screen.cli import cli
from b12screen.sinks.flag import PRIORITY_EXTENSION, REASON_EXTENSION

AS_OF = "2026-11-24"
UUID = "7a3c5f0e-2b1d-4c8e-9f6a-0d1e2f3a4b5c"
LONG = "L" + "0123456789" * 7  # 71 characters: over FHIR's 64


def _metformin(prefix: str, pid: str, years: range, ref: str | None = None) -> list[dict[str, Any]]:
    out = [metformin_request(f"{prefix}{y}", pid, f"{y}-01-01") for y in years]
    if ref:
        for r in out:
            r["subject"] = {"reference": ref}
    return out


def _b12_low(rid: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-06-01",
            "valueQuantity": {"value": 120, "unit": "pg/mL", "system": "http://unitsofmeasure.org", "code": "pg/mL"}}


MISFILED = "a MedicationRequest resource in a file of Observation resources"


def build_inputs(root: Path) -> tuple[Path, Path, dict[str, list[dict[str, Any]]]]:
    """(Bulk Data folder, folder of Bundles, what a FHIR server holds per patient id after deletes)."""
    export, bundles = root / "export", root / "bundles"
    a_meds, b_meds = _metformin("a", "a", range(2015, 2025)), _metformin("b", "b", range(2015, 2025))
    write_ndjson(export / "Patient.000.ndjson.gz", [patient("a", "1958-01-01"), patient("b", "1960-03-01")],
                 gz=True)
    write_ndjson(export / "MedicationRequest.000.jsonl", a_meds[:5] + b_meds)  # a split over files
    write_ndjson(export / "MedicationRequest.001.ndjson.gz", a_meds[5:], gz=True)
    # a file of one type holding another: every door refuses the misfiled metformin orders of "d"
    misfiled = _metformin("misfiled", "d", range(2015, 2025))
    write_ndjson(export / "Observation.000.ndjson", [_b12_low("lowb", "b"), *misfiled])
    write_ndjson(export / "MedicationRequest.002.ndjson", _metformin("l", LONG, range(2015, 2025)))
    (export / "manifest.json").write_text(json.dumps({"transactionTime": "2026-11-01T00:00:00Z", "output": []}))
    write_ndjson(export / "log.ndjson", [{"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational"}]}])
    deletes = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"MedicationRequest/{r['id']}"}} for r in b_meds]}
    write_ndjson(export / "deleted" / "MedicationRequest.ndjson", [deletes])
    c_meds = _metformin("c", UUID, range(2018, 2025), ref=f"urn:uuid:{UUID}")
    c_patient = patient(UUID, "1944-05-05")
    bundle_c = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{UUID}", "resource": c_patient},
        *({"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in c_meds)]}
    bundle_d = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient("d", "1990-01-01")}]}
    bundles.mkdir(parents=True)
    (bundles / "c.json").write_text(json.dumps(bundle_c))
    (bundles / "d.json.gz").write_bytes(gzip.compress(json.dumps(bundle_d).encode()))
    server = {"a": [patient("a", "1958-01-01"), *a_meds], "b": [patient("b", "1960-03-01"), _b12_low("lowb", "b")],
              UUID: [c_patient, *c_meds], "d": [patient("d", "1990-01-01")]}
    return export, bundles, server


def flag_summary(flag: dict[str, Any]) -> tuple[str, str, tuple[str, ...], str]:
    """(outcome, priority code, reason codes, identifier) of a Flag."""
    ext = flag["extension"]
    priority = next(e["valueCodeableConcept"]["coding"][0]["code"] for e in ext if e["url"] == PRIORITY_EXTENSION)
    reasons = tuple(sorted(e["valueCoding"]["code"] for e in ext if e["url"] == REASON_EXTENSION))
    return flag["code"]["coding"][0]["code"], priority, reasons, flag["identifier"][0]["value"]


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def screen_door(paths: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    report = run("screen", "--as-of", AS_OF, "--format", "report", *map(str, paths))
    flags = run("screen", "--as-of", AS_OF, "--format", "ndjson", *map(str, paths))
    assert report.exit_code == 1, report.stderr  # the misfiled lines
    assert MISFILED in report.stderr
    entries = {r["patient"]: (r["outcome"], r["priority"], tuple(r["rules"])) for r in json.loads(report.stdout)}
    found = {f["subject"]["reference"]: flag_summary(f) for f in map(json.loads, flags.stdout.splitlines())}
    return entries, found


def batch_door(paths: list[Path], out: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    result = run("batch", "--as-of", AS_OF, "--no-progress", *options, *map(str, paths), "--out", str(out))
    assert result.exit_code == 1, result.stderr  # the misfiled lines
    assert MISFILED in (out / "errors.ndjson").read_text()
    entries = {}
    for line in (out / "report.ndjson").read_text().splitlines():
        r = json.loads(line)
        entries[r["patient"]] = (r["outcome"], r["priority"], tuple(r["rules"]))
    found = {f["subject"]["reference"]: flag_summary(f)
             for f in map(json.loads, (out / "flags.ndjson").read_text().splitlines())}
    return entries, found


def _patient_of(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return ref.removeprefix("Patient/").removeprefix("urn:uuid:") or None


@contextmanager
def fhir_server(data: dict[str, list[dict[str, Any]]]) -> Iterator[str]:
    """A small FHIR R4 server on 127.0.0.1: read ``<Type>/<id>``, search ``<Type>?patient=|subject=``
    (other parameters ignored: the rules filter), one page per search."""

    def answer(path: str) -> Any:
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s][1:]  # after /fhir
        query = dict(parse_qsl(parts.query))
        if len(segments) == 2:
            return next((r for rs in data.values() for r in rs
                         if r["resourceType"] == segments[0] and r["id"] == segments[1]), None)
        if len(segments) == 1:
            pid = (query.get("patient") or query.get("subject") or "").removeprefix("Patient/")
            found = [r for r in data.get(pid, []) if r["resourceType"] == segments[0] and _patient_of(r) == pid]
            return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                    "entry": [{"resource": r} for r in found]}
        return None

    with stub_http_server(answer) as (base, _seen):
        yield f"{base}/fhir"


def fetch_door(base: str, ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    entries, found = {}, {}
    for pid in ids:
        report = run("fetch", "--fhir-server", base, "--patient", pid, "--as-of", AS_OF, "--retries", "0")
        assert report.exit_code == 0, report.stderr
        [r] = json.loads(report.stdout)
        entries[r["patient"]] = (r["outcome"], r["priority"], tuple(r["rules"]))
        flag = run("fetch", "--fhir-server", base, "--patient", pid, "--as-of", AS_OF, "--format", "ndjson",
                   "--retries", "0")
        if flag.stdout.strip():
            found[f"Patient/{pid}"] = flag_summary(json.loads(flag.stdout))
    return entries, found


def serve_door(base: str, ids: list[str], prefetch: bool) -> dict[str, Any]:
    from b12screen import Screener
    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig
    from b12screen.cdshooks.declarations import PATIENT_VIEW
    from b12screen.plugins import get_plugin_manager
    from b12screen.sources.fhirqueries import fill_tokens

    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    config = ServiceConfig(insecure_no_auth=True, test_mode=True, auto_write_flag=True, fhir_servers=(base,))
    found = {}
    with running_server(create_app(config, screener=screener, today=lambda: date(2026, 11, 24))) as service:
        for pid in ids:
            if prefetch:  # the same patients as prefetch: each declared query answered by the FHIR server
                queries = {p.key: fill_tokens(p.template(screener.terminology), {"patientId": pid})
                           for p in PATIENT_VIEW.prefetch}
                keys = {k: requests.get(f"{base}/{q}", timeout=10).json() for k, q in queries.items()}
                body = request_body(pid=pid, prefetch=keys)
            else:
                body = request_body(pid=pid, fhirServer=base)
            response = requests.post(f"{service}/cds-services/{PATIENT_VIEW.id}", json=body, timeout=30)
            assert response.status_code == 200, response.text
            for action in response.json().get("systemActions", []):
                found[f"Patient/{pid}"] = flag_summary(action["resource"])
    return found


def _spark_ready() -> bool:
    java = shutil.which("java")
    return bool(importlib.util.find_spec("pyspark")) and java is not None and subprocess.run(
        [java, "-version"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.slow
def test_every_door_gives_the_same_answer(tmp_path: Path) -> None:
    export, bundles, held = build_inputs(tmp_path)
    paths = [export, bundles]
    entries, flags = screen_door(paths)
    keys = {"Patient/a", "Patient/b", f"Patient/{UUID}", "Patient/d", f"Patient/{LONG}"}
    assert set(entries) == keys
    assert entries["Patient/a"][2] == ("MET-2",) and entries[f"Patient/{LONG}"][2] == ("MET-2",)
    assert entries[f"Patient/{UUID}"][2] == ("MET-2",)  # urn:uuid: references joined to the Patient
    assert "MET-2" not in entries["Patient/b"][2]  # its MedicationRequests are listed in deleted/
    assert entries["Patient/d"][0] == "no-suggestion"
    assert set(flags) == {k for k, v in entries.items() if v[1]}
    doors = {"batch --workers 1": batch_door(paths, tmp_path / "w1", "--workers", "1"),
             "batch --workers 2": batch_door(paths, tmp_path / "w2", "--workers", "2", "--unit-mb", "0.001")}
    if _spark_ready():
        doors["batch --engine spark"] = batch_door(paths, tmp_path / "spark", "--engine", "spark",
                                                   "--spark-master", "local[2]")
    for door, (door_entries, door_flags) in doors.items():
        assert door_entries == entries, door
        assert door_flags == flags, door
    # Doors that read by patient id: FHIR ids (the long one is not a FHIR id: those doors refuse it).
    ids = ["a", "b", UUID, "d"]
    want_flags = {k: v for k, v in flags.items() if k != f"Patient/{LONG}"}
    with fhir_server(held) as base:
        fetched, fetched_flags = fetch_door(base, ids)
        assert fetched == {k: v for k, v in entries.items() if k != f"Patient/{LONG}"}
        assert fetched_flags == want_flags
        assert serve_door(base, ids, prefetch=True) == want_flags
        assert serve_door(base, ids, prefetch=False) == want_flags


@pytest.mark.parametrize("policy", ["evidence", "all"])
def test_the_validation_policy_is_the_same_in_screen_and_batch(tmp_path: Path, policy: str) -> None:
    export = tmp_path / "export"
    bad = metformin_request("bad", "a", "2014-01-01", status=42)  # invalid: status is not a code
    write_ndjson(export / "Patient.000.ndjson", [patient("a", "1958-01-01")])
    write_ndjson(export / "MedicationRequest.000.ndjson", [bad, *_metformin("m", "a", range(2015, 2025))])
    screened = run("screen", "--as-of", AS_OF, "--validate", policy, "--format", "report", str(export))
    batched = run("batch", "--as-of", AS_OF, "--validate", policy, "--no-progress", str(export), "--out",
                  str(tmp_path / "out"))
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.ndjson").read_text().splitlines()]
    assert screened.exit_code == batched.exit_code == 1
    assert "invalid MedicationRequest" in screened.stderr and [e["line"] for e in errors] == [1]
    [entry] = json.loads(screened.stdout)
    assert entry["rules"] == ["MET-2"]
