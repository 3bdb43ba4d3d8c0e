"""One Bundle entry nested far beyond the depth limit costs that entry only, in every door: ``screen``,
``explain``, ``batch`` (the Spark engine shares the stream code: ``test_batch_spark``), ``fetch`` against a
loopback FHIR server and the CDS service. A document nested beyond orjson's own limit is refused whole,
with a clear line. The byte-level depth measure agrees with a plain recursive count."""

from __future__ import annotations

import json
import random
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from batch_helpers import batch, rows, write_ndjson
from cdshooks_helpers import full_prefetch, request_body, stub_http_server
from click.testing import CliRunner
from conftest import metformin_request, patient

from b12screen import Screener
from b12screen.cli import cli
from b12screen.sources import limits, read_bytes
from b12screen.sources.reader import Entry

AS_OF = "2026-11-24"
LINKS = 300  # an extension chain 603 levels deep: far past MAX_DEPTH, within orjson's 1024
HOSTILE_AT = 3  # the hostile resource's index in Bundle.entry


B12_LAB = b'{"coding": [{"system": "http://loinc.org", "code": "2132-9"}]}'  # a rule reads it: batch parses it
NO_RULE = b'{"text": "x"}'  # no rule reads it: batch counts it from its header, never parsing it


def hostile_observation(links: int = LINKS, code: bytes = B12_LAB) -> bytes:
    """An Observation of patient ``a`` with an extension chain of ``links`` links (``2 * links + 3`` levels)."""
    head = b'{"resourceType": "Observation", "id": "deep", "status": "final", "code": ' + code + b', ' \
           b'"subject": {"reference": "Patient/a"}, "extension": ['
    chain = b'{"url": "http://example.org/x", "extension": [' * links + b'{"url": "x", "valueString": "x"}' \
        + b"]}" * links
    return head + chain + b"]}"


def good_resources() -> list[dict[str, Any]]:
    return [patient("a", "1950-01-01"), *(metformin_request(f"m{y}", "a", f"{y}-01-01") for y in range(2015, 2025))]


def bundle_bytes(hostile: bytes, kind: str = "collection") -> bytes:
    entries = [json.dumps({"fullUrl": f"urn:uuid:e{i}", "resource": r}).encode()
               for i, r in enumerate(good_resources())]
    entries.insert(HOSTILE_AT, b'{"fullUrl": "urn:uuid:deep", "resource": ' + hostile + b"}")
    return b'{"resourceType": "Bundle", "type": "' + kind.encode() + b'", "entry": [' + b", ".join(entries) + b"]}"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


REASON = f"Observation nested more than {limits.MAX_DEPTH} levels deep"


def test_read_bytes_gives_one_error_for_the_hostile_entry_and_every_other_entry() -> None:
    items = list(read_bytes(bundle_bytes(hostile_observation()), "bundle.json"))
    errors = [i for i in items if not isinstance(i, Entry)]
    assert [(e.source, e.location, e.reason) for e in errors] == [("bundle.json", f"entry[{HOSTILE_AT}]", REASON)]
    assert len([i for i in items if isinstance(i, Entry)]) == len(good_resources())


def test_just_within_the_limit_is_read_and_one_level_more_is_not() -> None:
    fits = (limits.MAX_DEPTH - 3) // 2
    within = list(read_bytes(bundle_bytes(hostile_observation(fits)), "b.json"))
    assert all(isinstance(i, Entry) for i in within) and limits.depth(hostile_observation(fits)) <= limits.MAX_DEPTH
    beyond = list(read_bytes(bundle_bytes(hostile_observation(fits + 1)), "b.json"))
    assert [i.reason for i in beyond if not isinstance(i, Entry)] == [REASON]


def test_screen_and_explain_read_the_rest_of_the_bundle(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(bundle_bytes(hostile_observation()))
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(path))
    assert screened.exit_code == 1, screened.stderr
    assert f"{path}: entry[{HOSTILE_AT}]: {REASON}" in screened.stderr
    assert "Traceback" not in screened.stderr
    [report] = json.loads(screened.stdout)
    assert report["patient"] == "Patient/a" and report["rules"] == ["MET-2"]
    explained = run("explain", "--as-of", AS_OF, "--patient", "a", str(path))
    assert "MET-2" in explained.stdout and "Traceback" not in explained.stderr, explained.stderr
    assert f"entry[{HOSTILE_AT}]: {REASON}" in explained.stderr


def test_batch_reports_the_entry_and_screens_the_patient(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_bytes(bundle_bytes(hostile_observation(), kind="transaction"))
    result = batch(Screener(), [folder], tmp_path / "out")
    assert result.exit_code == 1
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert (Path(error["file"]).name, error["location"], error["reason"]) == ("a.json", f"entry[{HOSTILE_AT}]", REASON)
    [report] = rows(tmp_path / "out" / "report.ndjson")
    assert report["patient"] == "Patient/a" and report["rules"] == ["MET-2"]


def test_batch_counts_a_hostile_entry_no_rule_reads_as_it_counts_such_an_ndjson_line(tmp_path: Path) -> None:
    # as for an NDJSON line, batch decodes only the header of an entry no rule can use: never parsed, never
    # measured, counted under its patient (screen, which parses every document whole, reports it)
    hostile = hostile_observation(code=NO_RULE)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_bytes(bundle_bytes(hostile, kind="transaction"))
    write_ndjson(tmp_path / "nd" / "Patient.000.ndjson", [patient("a", "1950-01-01")])
    write_ndjson(tmp_path / "nd" / "MedicationRequest.000.ndjson", good_resources()[1:])
    (tmp_path / "nd" / "Observation.000.ndjson").write_bytes(hostile + b"\n")
    for name in ("in", "nd"):
        result = batch(Screener(), [tmp_path / name], tmp_path / f"out-{name}")
        assert result.exit_code == 0 and not (tmp_path / f"out-{name}" / "errors.ndjson").read_text()
        assert result.summary["resources_read"] == len(good_resources()) + 1
        [report] = rows(tmp_path / f"out-{name}" / "report.ndjson")
        assert report["patient"] == "Patient/a" and report["rules"] == ["MET-2"]
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(tmp_path / "in" / "a.json"))
    assert f"entry[{HOSTILE_AT}]: {REASON}" in screened.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ guard the C stack whatever the recursion limit")
def test_with_a_raised_recursion_limit_batch_measures_every_bundle_first(tmp_path: Path) -> None:
    # msgspec's guard is Python's recursion limit on 3.11: raised past orjson's 1024 levels it no longer bounds
    # a document, so each Bundle is measured whole first, and a deep one read entry by entry (all measured)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_bytes(bundle_bytes(hostile_observation(code=NO_RULE), kind="transaction"))
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(limits.HARD_DEPTH + 1)
    try:
        result = batch(Screener(), [tmp_path / "in"], tmp_path / "out")
    finally:
        sys.setrecursionlimit(raised)
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert (error["location"], error["reason"], result.exit_code) == (f"entry[{HOSTILE_AT}]", REASON, 1)


@pytest.mark.parametrize(("resource", "reason"), [
    (b'{"resourceType": "Patient", "id": "a", "birthDate": "1950-01-01", "multipleBirthInteger": 1e400}',
     "malformed JSON (number is infinity when parsed as double"),  # an entry batch parses: as screen, whole file
    (b'{"resourceType": "Observation", "code": {"text": "x"}, "subject": {"reference": ["Patient/a"]}}',
     "entry[0]: Observation has no usable reference to a Patient"),  # counted from its header: a reference not text
])
def test_a_bad_entry_in_a_split_bundle_is_an_error_row_as_screen_gives_it(tmp_path: Path, resource: bytes,
                                                                            reason: str) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.json"
    path.write_bytes(b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": ' + resource + b"}]}")
    result = batch(Screener(), [tmp_path / "in"], tmp_path / "out")
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert result.input_errors == 1 and reason in f"{error['location']}: {error['reason']}", error
    screened = run("screen", "--as-of", AS_OF, str(path))
    assert reason in screened.stderr and "Traceback" not in screened.stderr


def test_a_document_beyond_the_hard_limit_is_refused_whole_with_a_clear_line(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "deep.json").write_bytes(bundle_bytes(hostile_observation(limits.HARD_DEPTH // 2)))
    (folder / "b.json").write_bytes(bundle_bytes(hostile_observation(1)).replace(b'"a"', b'"b"')
                                    .replace(b"Patient/a", b"Patient/b"))
    reason = f"JSON document nested more than {limits.HARD_DEPTH} levels deep"
    screened = run("screen", "--as-of", AS_OF, "--format", "report", str(folder))
    assert f"{folder / 'deep.json'}: {reason}" in screened.stderr and "Traceback" not in screened.stderr
    assert [r["patient"] for r in json.loads(screened.stdout)] == ["Patient/b"]
    batch(Screener(), [folder], tmp_path / "out")
    [error] = rows(tmp_path / "out" / "errors.ndjson")
    assert (Path(error["file"]).name, error["reason"]) == ("deep.json", reason)
    assert [r["patient"] for r in rows(tmp_path / "out" / "report.ndjson")] == ["Patient/b"]


def _fhir_routes(path: str) -> Any:
    """A FHIR server whose MedicationRequest search holds the hostile resource among patient a's orders."""
    path = path.split("?")[0].strip("/")
    if path == "Patient/a":
        return patient("a", "1950-01-01")
    if path == "MedicationRequest":
        return bundle_bytes(hostile_observation(), kind="searchset").replace(
            json.dumps({"fullUrl": "urn:uuid:e0", "resource": patient("a", "1950-01-01")}).encode() + b", ", b"")
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


def test_fetch_skips_the_hostile_resource_of_a_search_page() -> None:
    with stub_http_server(_fhir_routes) as (base, _seen):
        fetched = run("fetch", "--fhir-server", base, "--patient", "a", "--as-of", AS_OF, "--retries", "0",
                      "--format", "report")
    assert fetched.exit_code == 1, fetched.stderr
    assert REASON in fetched.stderr and "Traceback" not in fetched.stderr
    assert json.loads(fetched.stdout)[0]["rules"] == ["MET-2"]


def test_cds_service_screens_the_prefetch_without_the_hostile_entry() -> None:
    from starlette.testclient import TestClient

    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig

    searchset = orjson.loads(bundle_bytes(hostile_observation(), kind="searchset"))
    orders = {**searchset, "entry": searchset["entry"][1:]}  # the orders and the hostile Observation
    body = request_body(pid="a", prefetch=full_prefetch("a", medicationRequests=orders))
    app = create_app(ServiceConfig(insecure_no_auth=True).checked(), today=lambda: date(2026, 11, 24))
    with TestClient(app) as client:
        response = client.post("/cds-services/b12screen-patient-view", json=body)
    assert response.status_code == 200, response.text
    [card] = response.json()["cards"]
    assert "MET-2" in json.dumps(card) and "Observation/deep" not in json.dumps(card)


def _nesting(value: Any) -> int:
    if isinstance(value, dict | list):
        return 1 + max(map(_nesting, value.values() if isinstance(value, dict) else value), default=0)
    return 0


def test_byte_level_depth_matches_a_recursive_count_with_brackets_and_escapes_in_strings() -> None:
    rng = random.Random(7)
    texts = ["[Epogen]", '"}{', "a\\", "\\\\]", "", "x"]

    def value(level: int) -> Any:
        if level > 7 or rng.random() < 0.3:
            return rng.choice([*texts, 1, None])
        if rng.random() < 0.5:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(texts) + str(i): value(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(2000):
        item = value(0)
        for text in (orjson.dumps(item), json.dumps(item, indent=1, ensure_ascii=False).encode()):
            assert limits.depth(text) == _nesting(item)
            assert limits.depth(text, 2) == min(_nesting(item), 3)
    assert limits.depth(b"[[[") == limits.depth(b"]][[") == limits.HARD_DEPTH + 1  # unbalanced: not JSON


def _unit_outputs(paths: list[Path], split: bool, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from b12screen.batch import bundles
    from b12screen.batch.scan import Piece, Unit
    from b12screen.batch.stream import StreamContext, stream_unit
    from b12screen.sources.files import DOCUMENT
    from b12screen.sources.validation import extractor_for

    monkeypatch.setattr(bundles, "split_bundle", bundles.split_bundle if split else lambda data: None)
    ctx = StreamContext(extractor_for(Screener().terminology, "evidence"))
    outputs = []
    for i, path in enumerate(paths):
        out = stream_unit(ctx, Unit(i, (Piece(i, str(path), DOCUMENT, 0, -1, 0, None),), 1))
        outputs.append((out.resources, out.errors, sorted(
            (key, p.resources, repr(p.patients), [(f, r, pos) for f, r, pos in p.facts], p.lines)
            for key, p in out.partials.items())))
    return outputs


def test_the_split_path_gives_what_the_general_path_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "odd.json"  # an unreferenced Condition before a Patient without id or fullUrl, a Medication pool
    odd.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Condition", "id": "c", "code": {"text": "x"}}},
        {"resource": {"resourceType": "Patient"}},
        {"fullUrl": "urn:uuid:p", "resource": patient("p", "1950-01-01")},
        {"fullUrl": "urn:uuid:med", "resource": {"resourceType": "Medication", "id": "med", "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]}}},
        {"resource": {**metformin_request("r", "x", "2020-01-01"), "subject": {"reference": "urn:uuid:p"},
                      "medicationReference": {"reference": "urn:uuid:med"}}},
        {"request": {"method": "DELETE", "url": "Patient/gone"}}]}))
    deep = tmp_path / "deep.json"  # an entry the split path parses, nested beyond the limit: that entry's error
    deep.write_bytes(bundle_bytes(hostile_observation(), kind="transaction"))
    fixtures = Path(__file__).parent.parent / "fixtures"
    paths = [odd, deep, *sorted((fixtures / "batch" / "bundles").glob("*.json")),
             *sorted((fixtures / "clinical").glob("*.json"))]
    split = _unit_outputs(paths, True, monkeypatch)
    assert split == _unit_outputs(paths, False, monkeypatch)
    assert [reason for _pos, reason in split[0][1]] == [  # the odd Bundle's errors, in the order screen gives
        "Patient has neither id nor fullUrl", "Condition has no usable reference to a Patient"]


def test_batch_reads_family_history_from_ndjson_as_from_a_bundle(tmp_path: Path) -> None:
    # FamilyMemberHistory's codes are in condition[].code, outside the header relevance reads: every one is read
    bundle = json.loads((Path(__file__).parent.parent / "fixtures" / "clinical" / "sym1.json").read_text())
    pid = "sym1-family-history-fmh"
    mine = [r for r in (e["resource"] for e in bundle["entry"]) if r.get("id") == pid
            or (r.get("subject") or r.get("patient") or {}).get("reference") == f"Patient/{pid}"]
    assert sorted(r["resourceType"] for r in mine) == ["Condition", "FamilyMemberHistory", "Patient"]
    for resource in mine:
        write_ndjson(tmp_path / "in" / f"{resource['resourceType']}.000.ndjson", [resource])
    batch(Screener(), [tmp_path / "in"], tmp_path / "out")
    assert [r["rules"] for r in rows(tmp_path / "out" / "report.ndjson")] == [["SYM-1"]]


def test_values_that_are_not_objects_are_no_nesting_error() -> None:
    from b12screen.sources import read_value

    [item] = read_value(5, "x")
    assert isinstance(item, Entry) and item.resource == 5  # "not a FHIR resource" is the grouping's to say
    items = list(read_value([{"resourceType": "Patient", "id": "a"}, "text"], "x"))
    assert [i.resource for i in items if isinstance(i, Entry)] == [{"resourceType": "Patient", "id": "a"}, "text"]


def test_cds_request_nested_beyond_the_document_limit_is_one_clear_400() -> None:
    from starlette.testclient import TestClient

    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig

    body = json.dumps(request_body(pid="a", prefetch=full_prefetch("a"))).encode()
    deep = body[:-1] + b', "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    app = create_app(ServiceConfig(insecure_no_auth=True).checked(), today=lambda: date(2026, 11, 24))
    with TestClient(app) as client:
        response = client.post("/cds-services/b12screen-patient-view", content=deep,
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert f"JSON nested more than {limits.HARD_DEPTH} levels deep" in response.text
