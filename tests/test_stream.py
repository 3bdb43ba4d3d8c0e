"""Unit tests of :mod:`b12screen.batch.stream`: one unit of NDJSON or JSON files (written to ``tmp_path``)
streamed into per-patient counts, relevant lines, facts and errors named by file, piece and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import bundle, metformin_request, patient
from unit_helpers import extractor

from b12screen.batch.scan import Piece, Unit, scan
from b12screen.batch.stream import StreamContext, UnitOutput, stream_unit
from b12screen.sources.files import DOCUMENT, PLAIN, Discovery
from b12screen.sources.reader import EMPTY_FILE
from b12screen.testing import ICD10CM, make_condition

#: B12 deficiency (relevant) and asthma (in no value set) for p1 and p2.
DX_P1 = make_condition("E53.8", ICD10CM, rid="c1")
ASTHMA_P2 = make_condition("J45", ICD10CM, rid="c2", patient="p2")
DX_P2 = make_condition("D51.0", ICD10CM, rid="c3", patient="p2")


def ndjson(path: Path, *items: Any) -> str:
    """Write one line per item (bytes as they are, anything else as JSON)."""
    path.write_bytes(b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n" for i in items))
    return str(path)


def stream(*files: str, unit_bytes: int = 1 << 20, **ctx: Any) -> UnitOutput:
    """The first unit of ``files`` streamed (with ``ctx``: ``deleted``, ``max_line``, ``pool``)."""
    return stream_unit(StreamContext(extractor(), **ctx), scan(Discovery(files=list(files)), unit_bytes).units[0])


def kept(out: UnitOutput) -> dict[str, tuple[int, list[Any]]]:
    """Per patient: resources counted and the positions of the lines kept for evaluation."""
    return {key: (p.resources, [pos for _, pos in p.lines]) for key, p in sorted(out.partials.items())}


def test_a_file_of_one_type_counts_every_line_and_keeps_the_relevant_ones(tmp_path: Path) -> None:
    out = stream(ndjson(tmp_path / "Condition.000.ndjson", DX_P1, ASTHMA_P2, DX_P2))
    assert (out.errors, out.resources, out.lines) == ([], 3, [(0, 0, 3)])
    assert kept(out) == {"Patient/p1": (1, [(0, 0, 1, None)]), "Patient/p2": (2, [(0, 0, 3, None)])}
    assert out.partials["Patient/p1"].lines[0][0] == json.dumps(DX_P1).encode()
    assert out.bytes == (tmp_path / "Condition.000.ndjson").stat().st_size


def test_line_by_line_reading_gives_what_the_typed_batch_gives(tmp_path: Path) -> None:
    typed = stream(ndjson(tmp_path / "Condition.ndjson", DX_P1, ASTHMA_P2, DX_P2))
    mixed = stream(ndjson(tmp_path / "mixed.ndjson", DX_P1, ASTHMA_P2, DX_P2))
    assert kept(typed) == kept(mixed) and typed.resources == mixed.resources == 3


def test_each_bad_line_is_an_error_naming_its_line_and_the_rest_is_read(tmp_path: Path) -> None:
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/p1"}}
    name = ndjson(tmp_path / "Condition.ndjson", DX_P1, b"", observation, b'{"resourceType": "Condition", bad',
                  make_condition("E53.8", ICD10CM, rid="c9", subject=None), b"x" * 3000, DX_P2)
    out = stream(name, max_line=2000)
    assert out.errors == [
        ((0, 0, 3, None), "a Observation resource in a file of Condition resources"),
        ((0, 0, 4, None), "malformed JSON (unexpected character, expected a string key: line 1 column 31 (char 30))"),
        ((0, 0, 5, None), "Condition has no usable reference to a Patient"),
        ((0, 0, 6, None), "line longer than 2000 bytes"),
    ]
    assert kept(out) == {"Patient/p1": (1, [(0, 0, 1, None)]), "Patient/p2": (1, [(0, 0, 7, None)])}
    assert out.lines == [(0, 0, 7)] and out.resources == 3


def test_patients_medications_and_bundles_in_a_mixed_file(tmp_path: Path) -> None:
    medication = {"resourceType": "Medication", "id": "med1", "code": {"text": "metformin"}}
    name = ndjson(tmp_path / "mixed.ndjson", patient("p1"), medication, metformin_request("m1", "p1", "2024-01-01"),
                  bundle(make_condition("E53.8", ICD10CM, rid="cb")), [make_condition("D51.0", ICD10CM, rid="ca")], 5)
    out = stream(name)
    assert out.errors == [((0, 0, 6, None), "not a FHIR resource (a JSON int, expected an object)")]
    assert out.medications == [("Medication/med1", medication)]
    p1 = out.partials["Patient/p1"]
    assert [f.ref for f in p1.patients] == ["Patient/p1"]
    assert [pos for _, pos in p1.lines] == [(0, 0, 3, None)]  # a line on its own: extracted at evaluation
    assert [(f.ref, pos) for f, _, pos in p1.facts] == [("Condition/cb", (0, 0, 4, "entry[0]")),
                                                        ("Condition/ca", (0, 0, 5, "[0]"))]
    assert p1.resources == 4 and out.resources == 5  # a Bundle counts its entries, not itself


def test_a_bundle_in_a_file_of_another_type_is_misfiled(tmp_path: Path) -> None:
    out = stream(ndjson(tmp_path / "Condition.ndjson", bundle(DX_P1), DX_P2))
    assert out.errors == [((0, 0, 1, None), "a Bundle resource in a file of Condition resources")]
    assert kept(out) == {"Patient/p2": (1, [(0, 0, 2, None)])}


def test_deleted_resources_are_counted_and_left_out(tmp_path: Path) -> None:
    for name in ("Condition.ndjson", "mixed.ndjson"):
        out = stream(ndjson(tmp_path / name, DX_P1, DX_P2), deleted=frozenset({"Condition/c1"}))
        assert out.resources == 2 and kept(out) == {"Patient/p2": (1, [(0, 0, 2, None)])}, name


def test_a_json_document_is_read_whole_with_entry_locations(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:u1", "resource": patient("p1")},
        {"resource": make_condition("E53.8", ICD10CM, subject={"reference": "urn:uuid:u1"})},
        {"resource": make_condition("E53.8", ICD10CM, rid="lost", subject=None)}]}))
    out = stream(str(path))
    assert out.errors == [((0, 0, None, "entry[2]"), "Condition has no usable reference to a Patient")]
    p1 = out.partials["Patient/p1"]
    assert [(f.ref, pos) for f, _, pos in p1.facts] == [("Condition/condition-E53.8", (0, 0, None, "entry[1]"))]
    assert out.lines == [(0, 0, 0)] and out.resources == 3


def test_a_file_of_blank_lines_is_empty_and_a_missing_one_unreadable(tmp_path: Path) -> None:
    assert stream(ndjson(tmp_path / "Condition.ndjson", b"", b"  ")).errors == [((0, 0, None, None), EMPTY_FILE)]
    gone = str(tmp_path / "gone.ndjson")
    unit = Unit(0, (Piece(0, gone, PLAIN, 0, 10, 0, None), Piece(0, gone, PLAIN, 10, 20, 1, None)), 20)
    out = stream_unit(StreamContext(extractor()), unit)
    assert out.errors == [((0, 0, None, None), "cannot read file (No such file or directory)")]  # once per file
    assert out.lines == [(0, 0, 0), (0, 1, 0)]


def test_lines_are_numbered_within_their_piece(tmp_path: Path) -> None:
    name = ndjson(tmp_path / "Condition.ndjson", DX_P1, ASTHMA_P2, DX_P2, DX_P1)
    units = scan(Discovery(files=[name]), 2 * len(json.dumps(DX_P1))).units
    second = stream_unit(StreamContext(extractor()), units[1])
    assert second.unit == 1 and [p.index for p in units[1].pieces] == [1]
    assert kept(second) == {"Patient/p1": (1, [(0, 1, 2, None)]), "Patient/p2": (1, [(0, 1, 1, None)])}


def test_the_summary_carries_the_errors_only_when_asked(tmp_path: Path) -> None:
    out = stream(ndjson(tmp_path / "mixed.ndjson", DX_P1, 5))
    carried = out.summary(carry_errors=True)
    assert (carried.error_count, carried.errors) == (1, out.errors)
    counted = out.summary(carry_errors=False, spill=["part-0"])
    assert (counted.error_count, counted.errors, counted.spill) == (1, [], ["part-0"])
    assert (counted.unit, counted.lines, counted.resources, counted.bytes) == (0, [(0, 0, 2)], 1, out.bytes)


def test_a_document_piece_that_is_ndjson_is_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "conditions.json"
    ndjson(path, DX_P1, DX_P2)
    unit = Unit(0, (Piece(0, str(path), DOCUMENT, 0, path.stat().st_size, 0, None),), path.stat().st_size)
    out = stream_unit(StreamContext(extractor()), unit)
    assert out.errors == [] and kept(out) == {"Patient/p1": (1, [(0, 0, 1, None)]),
                                              "Patient/p2": (1, [(0, 0, 2, None)])}


def test_a_line_the_header_decoder_refuses_is_kept_the_same_way_by_the_general_path(tmp_path: Path) -> None:
    """A ``patient`` that is not an object fails the header decode; the subject still names the patient, and
    the line is kept raw for evaluation like any other (not extracted early without the Medication pool)."""
    odd = {**DX_P1, "patient": "Patient/p1"}
    for name in ("Condition.ndjson", "mixed.ndjson"):
        out = stream(ndjson(tmp_path / name, odd))
        assert out.errors == [] and kept(out) == {"Patient/p1": (1, [(0, 0, 1, None)])}, name
        assert out.partials["Patient/p1"].facts == [] and out.partials["Patient/p1"].lines[0][0] == json.dumps(
            odd).encode()
