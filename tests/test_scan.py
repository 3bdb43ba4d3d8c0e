"""Unit tests of :mod:`b12screen.batch.scan`: files cut into pieces at line boundaries and grouped into
units of work by cost (files written to ``tmp_path``)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

from b12screen.batch.scan import COST_PER_BYTE, Piece, Unit, dearest_first, scan, unit_cost
from b12screen.sources.files import DOCUMENT, GZIP, PLAIN, Discovery
from b12screen.sources.reader import EMPTY_FILE

#: 10-byte lines (nine characters and a newline).
LINE = b"123456789\n"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def found(*files: str, **kw: list[str]) -> Discovery:
    return Discovery(files=list(files), **kw)


def pieces(units: list[Unit]) -> list[tuple[str, int, int, int]]:
    return [(Path(p.path).name, p.start, p.end, p.index) for u in units for p in u.pieces]


def test_a_plain_file_is_cut_just_after_a_newline_and_the_pieces_cover_it(tmp_path: Path) -> None:
    data = b"".join(b"%d" % i * (i % 7 + 1) + b"\n" for i in range(200))
    name = write(tmp_path / "Condition.ndjson", data)
    plan = scan(found(name), 64)
    cut = [(p.start, p.end) for u in plan.units for p in u.pieces]
    assert len(cut) > 5 and cut[0][0] == 0 and cut[-1][1] == len(data)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(cut))
    assert all(data[end - 1:end] == b"\n" for _, end in cut)
    assert [p.index for u in plan.units for p in u.pieces] == list(range(len(cut)))
    assert {(p.kind, p.file_type, p.size) for u in plan.units for p in u.pieces} == {(PLAIN, "Condition", len(data))}


def test_a_piece_ends_at_the_first_newline_from_its_target(tmp_path: Path) -> None:
    name = write(tmp_path / "Condition.ndjson", LINE * 5)
    assert pieces(scan(found(name), 50).units) == [("Condition.ndjson", 0, 50, 0)]
    assert [(p.start, p.end) for u in scan(found(name), 20).units for p in u.pieces] == [(0, 20), (20, 40), (40, 50)]
    assert [(p.start, p.end) for u in scan(found(name), 25).units for p in u.pieces] == [(0, 30), (30, 50)]


def test_a_line_longer_than_a_piece_is_never_split(tmp_path: Path) -> None:
    name = write(tmp_path / "Observation.ndjson", LINE + b"x" * 99 + b"\n" + LINE)
    cut = [(p.start, p.end) for u in scan(found(name), 15).units for p in u.pieces]
    assert cut == [(0, 110), (110, 120)]


def test_a_patient_files_pieces_are_smaller_by_its_cost_per_byte(tmp_path: Path) -> None:
    assert COST_PER_BYTE == {"Patient": 4}
    patients = scan(found(write(tmp_path / "Patient.ndjson", LINE * 8)), 40).units
    conditions = scan(found(write(tmp_path / "Condition.ndjson", LINE * 8)), 40).units
    # a Patient piece is 40 // 4 = 10 bytes (one line), costing the unit's 40: one piece a unit
    assert [(p.start, p.end) for u in patients for p in u.pieces] == [(i * 10, i * 10 + 10) for i in range(8)]
    assert [(unit_cost(u), u.size) for u in patients] == [(40, 10)] * 8
    assert [(unit_cost(u), u.size) for u in conditions] == [(40, 40)] * 2


def test_pieces_fill_a_unit_up_to_its_cost_and_no_further(tmp_path: Path) -> None:
    names = [write(tmp_path / f"{i}.Condition.ndjson", LINE * 3) for i in range(3)]
    assert [len(u.pieces) for u in scan(found(*names), 60).units] == [2, 1]
    assert [len(u.pieces) for u in scan(found(*names), 59).units] == [1, 1, 1]
    assert [u.id for u in scan(found(*names), 30).units] == [0, 1, 2]


def test_gzip_and_json_files_are_read_whole(tmp_path: Path) -> None:
    packed = tmp_path / "Condition.ndjson.gz"
    packed.write_bytes(gzip.compress(LINE * 100))
    document = write(tmp_path / "bundle.json", b'{"resourceType": "Bundle"}')
    plan = scan(found(str(packed), document), 10)
    assert [(p.kind, p.start, p.end, p.file_type) for u in plan.units for p in u.pieces] == [
        (GZIP, 0, -1, "Condition"), (DOCUMENT, 0, 26, None)]
    assert plan.units[0].size == packed.stat().st_size  # a gzip piece counts its file's bytes


def test_medication_files_are_units_of_their_own_numbered_after_the_rest(tmp_path: Path) -> None:
    medication = write(tmp_path / "Medication.ndjson", LINE)
    condition = write(tmp_path / "Condition.ndjson", LINE)
    plan = scan(found(medication, condition), 100)
    assert pieces(plan.units) == [("Condition.ndjson", 0, 10, 0)]
    assert pieces(plan.medication_units) == [("Medication.ndjson", 0, 10, 0)]
    assert [u.id for u in plan.units + plan.medication_units] == [0, 1]
    assert [p.file_id for p in plan.medication_units[0].pieces] == [0]


def test_empty_and_vanished_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    empty = write(tmp_path / "Condition.ndjson", b"")
    gone = str(tmp_path / "Observation.ndjson")
    kept = write(tmp_path / "Patient.ndjson", LINE)
    plan = scan(found(empty, gone, kept), 100)
    assert [(e.source, e.location, e.reason) for e in plan.errors] == [
        (empty, None, EMPTY_FILE), (gone, None, "cannot read file (No such file or directory)")]
    assert pieces(plan.units) == [("Patient.ndjson", 0, 10, 0)] and plan.units[0].pieces[0].file_id == 2
    assert plan.total_bytes == 10


def test_the_discoverys_findings_pass_through(tmp_path: Path) -> None:
    name = write(tmp_path / "Condition.ndjson", LINE)
    discovery = found(name, deleted_files=["deleted/Condition.ndjson"], ignored=["notes.txt"])
    plan = scan(discovery, 100)
    assert (plan.files, plan.deleted_files, plan.ignored) == ([name], ["deleted/Condition.ndjson"], ["notes.txt"])
    empty = scan(found(), 100)
    assert (empty.units, empty.medication_units, empty.errors, empty.total_bytes) == ([], [], [], 0)


def test_the_unit_size_may_follow_the_total(tmp_path: Path) -> None:
    names = [write(tmp_path / f"{i}.Condition.ndjson", LINE * 2) for i in range(4)]
    totals: list[int] = []

    def quarter(total: int) -> int:
        totals.append(total)
        return total // 4

    assert len(scan(found(*names), quarter).units) == 4 and totals == [80]


def test_the_dearest_units_come_first_and_ties_keep_their_order() -> None:
    def unit(uid: int, size: int, file_type: str | None) -> Unit:
        return Unit(uid, (Piece(uid, "x", PLAIN, 0, size, 0, file_type),), size)

    units = [unit(0, 100, "Condition"), unit(1, 30, "Patient"), unit(2, 100, None), unit(3, 120, "Observation")]
    assert [unit_cost(u) for u in units] == [100, 120, 100, 120]
    assert [u.id for u in dearest_first(units)] == [1, 3, 0, 2]
