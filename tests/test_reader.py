"""Reading every input shape, and one clear error per bad item while the rest is screened."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from conftest import AS_OF, FIXTURES, bundle, metformin_request, patient

from b12screen.errors import InputError
from b12screen.screening import group, screen_grouped
from b12screen.sources import Entry, read_bytes, read_path
from b12screen.sources.validation import ALL


def _split(items: list[Entry | InputError]) -> tuple[list[Entry], list[InputError]]:
    return [i for i in items if isinstance(i, Entry)], [i for i in items if isinstance(i, InputError)]


def test_bundle_types_are_all_read() -> None:
    for kind in ("collection", "searchset", "transaction", "batch", "document"):
        data = json.dumps(bundle(patient("p1"), metformin_request("m1", "p1", "2020-01-01"), kind=kind)).encode()
        entries, errors = _split(list(read_bytes(data, "in.json")))
        assert [e.resource["resourceType"] for e in entries] == ["Patient", "MedicationRequest"], kind
        assert errors == []
        assert entries[1].location == "entry[1]"


def test_single_resource_array_and_ndjson() -> None:
    single = list(read_bytes(json.dumps(patient("p1")).encode(), "p.json"))
    assert len(single) == 1 and single[0].location == "resource"
    array = list(read_bytes(json.dumps([patient("p1"), patient("p2")]).encode(), "a.json"))
    assert [e.location for e in array] == ["[0]", "[1]"]
    ndjson = "\n".join(json.dumps(r) for r in (patient("p1"), patient("p2"))).encode()
    lines = list(read_bytes(ndjson, "x.ndjson"))
    assert [e.location for e in lines] == ["line 1", "line 2"]
    # NDJSON is recognised without the .ndjson name too
    assert len(list(read_bytes(ndjson, "<stdin>"))) == 2


def test_gzip_input_and_truncated_gzip() -> None:
    raw = json.dumps(patient("p1")).encode()
    assert len(list(read_bytes(gzip.compress(raw), "p.json.gz"))) == 1
    broken = list(read_bytes(gzip.compress(raw)[:-12], "p.json.gz"))
    assert len(broken) == 1 and isinstance(broken[0], InputError)
    assert "gzip" in broken[0].reason


def test_malformed_json_names_file_and_reason() -> None:
    [error] = list(read_path(FIXTURES / "errors" / "malformed.json"))
    assert isinstance(error, InputError)
    assert error.source.endswith("malformed.json")
    assert error.reason.startswith("malformed JSON")


def test_ndjson_bad_lines_name_the_line_and_keep_the_rest() -> None:
    entries, errors = _split(list(read_path(FIXTURES / "errors" / "mixed.ndjson")))
    assert [e.resource if isinstance(e.resource, int) else e.resource["id"] for e in entries] == [
        "err-good", 1, 2, "err-met-2"]
    assert [e.location for e in errors] == ["line 2"]


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    [error] = list(read_path(tmp_path / "absent.json"))
    assert isinstance(error, InputError) and error.reason == "no such file or folder"


def test_folder_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.json").write_text(json.dumps(patient("p2")))
    (tmp_path / "1.json").write_text(json.dumps(patient("p1")))
    (tmp_path / "notes.txt").write_text("ignored")
    ids = [e.resource["id"] for e in read_path(tmp_path) if isinstance(e, Entry)]
    assert ids == ["p1", "p2"]


def test_bad_entries_in_a_good_bundle_are_reported_and_good_ones_screened(screener) -> None:
    grouped = group(screener, read_path(FIXTURES / "errors" / "bundle-with-bad-entries.json"), ALL)
    reasons = {e.location: e.reason for e in grouped.errors}
    assert reasons["entry[2]"] == "MedicationRequest has no usable reference to a Patient"
    assert reasons["entry[3]"].startswith("invalid MedicationRequest")
    assert reasons["entry[4]"] == "bundle entry has no resource"
    assert reasons["entry[5]"] == "unknown resourceType 'Spaceship'"
    assert "does not resolve" in reasons["entry[6]"]
    results = screen_grouped(screener, grouped, AS_OF)
    assert [r.patient for r in results] == ["Patient/err-good"]
    assert results[0].rules == ["MET-2"]


def test_error_messages_carry_no_patient_data(screener) -> None:
    grouped = group(screener, read_path(FIXTURES / "errors" / "bundle-with-bad-entries.json"), ALL)
    text = " ".join(str(e) for e in grouped.errors)
    assert "not-a-date" not in text  # the invalid value itself is not echoed
    assert "1950" not in text


def test_not_fhir_and_unknown_type(screener) -> None:
    for name, reason in (("not-fhir.json", "no resourceType"), ("unknown-type.json", "unknown resourceType")):
        grouped = group(screener, read_path(FIXTURES / "errors" / name), ALL)
        assert grouped.patients == {}
        assert len(grouped.errors) == 1 and reason in grouped.errors[0].reason
