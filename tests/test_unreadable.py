"""Every door reports what it could not read, with the same semantics: ``screen``, ``explain``, ``batch``
(local, one or two workers; Spark when pyspark and Java are installed) give the same patients and the same
errors for the same damaged input. Damaged gzip keeps every line before the damage plus one error naming
where it broke; a file that changes size while it is read is an error, never silence; a line over the limit
(``B12SCREEN_MAX_LINE_BYTES``, lowered here) is refused without ever being held whole."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import tracemalloc
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import batch, rows, write_ndjson
from click.testing import CliRunner
from conftest import metformin_request, patient

import b12screen.sources.files as files
import b12screen.sources.lines as lines
from b12screen import Screener, screen_paths
from b12screen.batch import scan as scan_module
from b12screen.cli import cli
from b12screen.sources import limits, read_path

AS_OF = "2026-11-24"
LIMIT = 4096
TOO_LONG = f"line longer than {LIMIT} bytes"
TRUNCATED = "gzip data ends in the middle of member 1 (truncated file)"
Error = tuple[str, "int | None", str]
_ERROR = re.compile(r"^b12screen: error: (?P<file>.+?)(?:: line (?P<line>\d+))?: (?P<reason>.*)$")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def screen_door(folder: Path, *options: str) -> tuple[set[str], list[Error], int]:
    """(patients, errors as (file name, line, reason), resources read) as ``screen`` reports them."""
    result = run("screen", "--as-of", AS_OF, "--format", "report", *options, str(folder))
    assert "Traceback" not in result.stderr and result.exit_code in (0, 1, 2), result.stderr
    errors = []
    for text in result.stderr.splitlines():
        if (match := _ERROR.match(text)) and " failed for one patient" not in text:
            line = match["line"]
            errors.append((Path(match["file"]).name, int(line) if line else None, match["reason"]))
    resources = int(re.search(r"from (\d+) resource", result.stderr)[1])  # type: ignore[index]
    return {entry["patient"] for entry in json.loads(result.stdout)}, sorted(errors, key=repr), resources


def batch_door(folder: Path, out: Path, *options: str) -> tuple[set[str], list[Error], int]:
    result = run("batch", "--as-of", AS_OF, "--no-progress", str(folder), "--out", str(out), *options)
    assert "Traceback" not in result.stderr and result.exit_code in (0, 1, 2), result.stderr
    errors = [(Path(e["file"]).name, e["line"], e["reason"]) for e in rows(out / "errors.ndjson")]
    resources = json.loads((out / "summary.json").read_text())["resources_read"]
    return {r["patient"] for r in rows(out / "report.ndjson")}, sorted(errors, key=repr), resources


def library_door(export: Path) -> tuple[set[str], list[tuple[str, int | None, str]], int]:
    """Patients, (file name, line, reason) errors and resources read of ``screen_paths``."""
    with screen_paths(export, date.fromisoformat(AS_OF), workers=2) as results:
        patients = {r.patient for r in results}
        errors = [(Path(e.source).name, _line_of(e.location), e.reason) for e in results.errors]
        return patients, sorted(errors, key=repr), results.resources_read


def _line_of(location: str | None) -> int | None:
    head = (location or "").removeprefix("line ").split(" ")[0]
    return int(head) if head.isdigit() else None


def _lines(*resources: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in resources)


def damaged_export(root: Path) -> Path:
    """One of each damage: a ``null`` line, an over-long line, a gzip file cut at three quarters, a gzip
    file with bytes after its last member, and a patient known only from a line that is not JSON."""
    export = root / "export"
    export.mkdir()
    big = patient("big") | {"text": {"status": "generated", "div": "<div>" + "x" * 2 * LIMIT + "</div>"}}
    (export / "Patient.000.ndjson").write_bytes(_lines(*(patient(f"p{i}") for i in range(5)), b"null", big,
                                                       patient("p5")))
    cut = gzip.compress(_lines(*(patient(f"q{i:03d}", "1950-01-01") for i in range(300))))
    (export / "Patient.001.ndjson.gz").write_bytes(cut[:len(cut) * 3 // 4])
    (export / "Patient.002.ndjson.gz").write_bytes(gzip.compress(_lines(*(patient(f"r{i}") for i in range(4))))
                                                   + b"trailing bytes")
    meds = [metformin_request(f"m{y}", "p1", f"{y}-01-01") for y in range(2015, 2025)]
    (export / "MedicationRequest.000.ndjson").write_bytes(_lines(*meds[:5], GHOST, big, *meds[5:]))
    return export


#: A metformin order of a patient named nowhere else, on a line that is not JSON a double can hold.
GHOST = json.dumps(metformin_request("g", "ghost", "2020-01-01")).encode()[:-1] + b', "x": 1e400}'


def _json_problem(line: bytes) -> str:
    with pytest.raises(limits.JSONProblem) as problem:
        limits.loads(line)
    return str(problem.value)


def _spark_ready() -> bool:
    from test_parity import _spark_ready as ready

    return ready()


def test_every_door_reports_damaged_input_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(LIMIT))
    export = damaged_export(tmp_path)
    patients, errors, resources = screen_door(export)
    kept = {p for p in patients if p.startswith("Patient/q")}
    assert len(kept) > 150 and kept == {f"Patient/q{i:03d}" for i in range(len(kept))}  # every line before the cut
    assert {f"Patient/p{i}" for i in range(6)} | {f"Patient/r{i}" for i in range(4)} <= patients
    assert "Patient/ghost" not in patients and "Patient/big" not in patients
    assert errors == sorted([
        ("MedicationRequest.000.ndjson", 6, _json_problem(GHOST)),
        ("MedicationRequest.000.ndjson", 7, TOO_LONG),
        ("Patient.000.ndjson", 6, "not a FHIR resource (a JSON NoneType, expected an object)"),
        ("Patient.000.ndjson", 7, TOO_LONG),
        ("Patient.001.ndjson.gz", len(kept) + 1, TRUNCATED),
        ("Patient.002.ndjson.gz", 5, "corrupt gzip data in member 2 (Error -3 while decompressing data: "
                                     "incorrect header check); the rest of the file skipped"),
    ], key=repr)
    assert batch_door(export, tmp_path / "w1", "--workers", "1") == (patients, errors, resources)
    assert batch_door(export, tmp_path / "w2", "--workers", "2", "--unit-mb", "0.001") == (
        patients, errors, resources)  # ranges of about 1 KB: long lines and gzip files cross them
    assert library_door(export) == (patients, errors, resources)
    # explain reads only the lines that name its patient (and every compressed file through), so it reports
    # the damage it met there: the gzip files, not the bad lines of other patients
    explained = run("explain", "--as-of", AS_OF, "--patient", "p1", str(export))
    said = [m for m in map(_ERROR.match, explained.stderr.splitlines()) if m]
    assert sorted(((Path(m["file"]).name, int(m["line"]), m["reason"]) for m in said), key=repr) == [
        e for e in errors if e[0].endswith(".gz")]
    assert explained.exit_code == 1 and "MET-2" in explained.stdout
    ghost = run("explain", "--as-of", AS_OF, "--patient", "ghost", str(export))
    assert ghost.exit_code == 2 and "patient 'ghost' is not in the input" in ghost.stderr


@pytest.mark.skipif(not _spark_ready(), reason="pyspark or Java not installed")
@pytest.mark.slow
def test_spark_reports_damaged_input_as_screen_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow (about 25 s: starts a JVM). The driver's line limit reaches the executors with their work."""
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(LIMIT))
    export = damaged_export(tmp_path)
    assert batch_door(export, tmp_path / "spark", "--engine", "spark", "--spark-master", "local[2]",
                      "--unit-mb", "0.001") == screen_door(export)


def test_a_null_line_is_an_error_in_screen_and_batch(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.000.ndjson").write_bytes(b'{"resourceType":"Patient","id":"a"}\nnull\n')
    null = [("Patient.000.ndjson", 2, "not a FHIR resource (a JSON NoneType, expected an object)")]
    assert screen_door(folder) == ({"Patient/a"}, null, 1)
    assert batch_door(folder, tmp_path / "out", "--workers", "1") == ({"Patient/a"}, null, 1)


def test_a_patient_known_only_from_a_rejected_line_is_not_reported(screener: Screener, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.000.ndjson", [patient("a")])
    write_ndjson(folder / "MedicationRequest.000.ndjson", [GHOST.decode(), metformin_request("ok", "a", "2020-01-01")])
    screened = screen_door(folder)
    assert screened[0] == {"Patient/a"} and screened[2] == 2
    assert batch_door(folder, tmp_path / "out", "--workers", "1") == screened
    result = batch(screener, [folder], tmp_path / "lib")
    assert result.summary["patients"] == 1 and result.summary["resources_read"] == 2 and result.exit_code == 1


def _cut_gzip(path: Path, count: int) -> None:
    data = gzip.compress(_lines(*(patient(f"p{i:04d}") for i in range(count))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:len(data) * 3 // 4])


def test_a_cut_gzip_file_keeps_every_line_before_the_cut_in_screen_as_in_batch(tmp_path: Path) -> None:
    """The defect as met: a 2,000-patient export cut at three quarters gave ``screen`` no patient at all."""
    _cut_gzip(tmp_path / "in" / "Patient.000.ndjson.gz", 2000)
    patients, errors, _resources = screen_door(tmp_path / "in")
    assert len(patients) > 1400 and errors == [("Patient.000.ndjson.gz", len(patients) + 1, TRUNCATED)]
    assert batch_door(tmp_path / "in", tmp_path / "out", "--workers", "1")[:2] == (patients, errors)


def _peak(func: Any) -> int:
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True])
def test_screen_refuses_an_over_long_line_without_holding_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            gz: bool) -> None:
    """An 8 MiB line against a 64 KiB limit: refused, the lines around it read, memory a few blocks."""
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(64 << 10))
    huge = b'{"resourceType":"Patient","id":"big","x":"' + b"x" * (8 << 20) + b'"}'
    data = _lines(patient("a"), huge, patient("b"))
    path = tmp_path / ("Patient.000.ndjson" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data, 1) if gz else data)
    items: list[Any] = []
    peak = _peak(lambda: items.extend(read_path(path)))
    assert [getattr(i, "resource", {}).get("id") for i in items] == ["a", None, "b"]
    assert str(items[1]) == f"{path}: line 2: line longer than {64 << 10} bytes"
    assert peak < 2 << 20, peak  # the whole line held once would be 8 MiB


def test_the_planner_finds_line_ends_without_holding_a_line(tmp_path: Path) -> None:
    path = tmp_path / "Patient.000.ndjson"
    huge = b'{"resourceType":"Patient","id":"big","x":"' + b"x" * (8 << 20) + b'"}'
    path.write_bytes(_lines(patient("a"), huge, patient("b"), patient("c")))
    size = path.stat().st_size
    ranges: list[tuple[int, int]] = []
    peak = _peak(lambda: ranges.extend(scan_module._split_plain(str(path), size, 1 << 20)))
    assert peak < 2 << 20, peak  # readline() at a cut held the 8 MiB line
    data = path.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == size and all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(data[end - 1] == ord("\n") for _start, end in ranges) and len(ranges) == 2  # after the big line


def _truncating(real: Any, at: int) -> Any:
    """``plain_lines``/``gzip_lines`` that cut their file to ``at`` bytes once the first batch is read."""

    def lines_then_cut(path: str, *args: Any) -> Iterator[Any]:
        batches = real(path, *args)
        first = next(batches)
        with open(path, "r+b") as f:
            f.truncate(at)
        yield first
        yield from batches

    return lines_then_cut


@pytest.mark.parametrize("gz", [False, True])
def test_screen_reports_a_file_that_shrinks_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       gz: bool) -> None:
    monkeypatch.setattr(lines, "BLOCK", 4096)
    path = tmp_path / ("Patient.000.ndjson" + (".gz" if gz else ""))
    data = _lines(*(patient(f"p{i:04d}") for i in range(2000)))
    path.write_bytes(gzip.compress(data) if gz else data)
    size = path.stat().st_size
    name = "gzip_lines" if gz else "plain_lines"
    monkeypatch.setattr(files, name, _truncating(getattr(lines, name), size // 2))
    items = list(read_path(path))
    errors = [i for i in items if not hasattr(i, "resource")]
    assert len(errors) == 1 and errors[0] is items[-1]
    assert len(items) - 1 == 2000 if gz else len(items) - 1 < 2000  # a small gzip file was read in one go
    assert errors[0].reason == (f"file changed size while being read ({size} bytes, then {size // 2}); "
                                "the rest of it was not read")
    assert errors[0].location == f"line {len(items)}"


def test_batch_reports_files_that_shrink_or_grow_after_the_plan(screener: Screener, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect as met: an export truncated during a batch lost its lines without a word (exit 0)."""
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.000.ndjson", [patient(f"p{i:04d}") for i in range(2000)])
    write_ndjson(folder / "Patient.001.ndjson.gz", [patient(f"q{i:04d}") for i in range(500)], gz=True)
    write_ndjson(folder / "Patient.002.ndjson", [patient(f"r{i}") for i in range(10)])
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    real = scan_module.scan

    def plan_then_change(paths: list[str], unit_bytes: int) -> Any:
        plan = real(paths, unit_bytes)
        for name in ("Patient.000.ndjson", "Patient.001.ndjson.gz"):
            with open(folder / name, "r+b") as f:
                f.truncate(sizes[name] // 2)
        with open(folder / "Patient.002.ndjson", "ab") as f:
            f.write(_lines(patient("late")))
        return plan

    import b12screen.batch.runner as runner

    monkeypatch.setattr(runner, "scan", plan_then_change)
    result = batch(screener, [folder], tmp_path / "out", workers=2, unit_bytes=20_000)
    errors = [(Path(e["file"]).name, e["reason"]) for e in rows(tmp_path / "out" / "errors.ndjson")]
    changed = "file changed size while being read ({} bytes, then {}); the rest of it was not read"
    half = {name: changed.format(size, size // 2) for name, size in sizes.items()}
    assert ("Patient.001.ndjson.gz", half["Patient.001.ndjson.gz"]) in errors
    assert ("Patient.000.ndjson", half["Patient.000.ndjson"]) in errors
    grown = sizes["Patient.002.ndjson"] + len(_lines(patient("late")))
    assert ("Patient.002.ndjson", changed.format(sizes["Patient.002.ndjson"], grown)) in errors
    assert sorted(name for name, _ in errors) == sorted(sizes) and result.exit_code == 1  # each file once
    assert 0 < result.summary["patients"] < 2500


def test_the_line_limit_is_a_setting_of_every_door(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B12SCREEN_MAX_LINE_BYTES", raising=False)
    assert limits.line_cap() == limits.MAX_LINE_BYTES == 64 << 20
    for raw in ("", "0", "-5", "lots"):
        monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", raw)
        assert limits.line_cap() == 64 << 20
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", "1000")
    from b12screen.batch import BatchOptions

    assert limits.line_cap() == 1000 and BatchOptions(as_of=None).max_line_bytes == 1000  # type: ignore[arg-type]


def test_deleted_lists_are_read_line_by_line_like_any_ndjson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``deleted/`` list cut short still removes what it lists before the cut; the cut is one error."""
    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(LIMIT))
    export = tmp_path / "export"
    write_ndjson(export / "Patient.000.ndjson", [patient("a"), patient("b")])
    write_ndjson(export / "MedicationRequest.000.ndjson", [metformin_request(f"{p}{y}", p, f"{y}-01-01")
                                                           for p in "ab" for y in range(2015, 2025)])

    def deletes(pid: str) -> bytes:
        return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": f"MedicationRequest/{pid}{y}"}} for y in range(2015, 2025)]}
        ).encode()

    listed = gzip.compress(_lines(deletes("a"), b"[" + b" " * LIMIT + b"]") + b"\n" * 5000 + deletes("b") + b"\n")
    (export / "deleted").mkdir()
    (export / "deleted" / "MedicationRequest.ndjson.gz").write_bytes(listed[:len(listed) - 40])
    where = ("MedicationRequest.ndjson.gz", 3 + 5000, TRUNCATED)
    patients, errors, _resources = screen_door(export)
    assert errors == sorted([("MedicationRequest.ndjson.gz", 2, TOO_LONG), where], key=repr)
    assert batch_door(export, tmp_path / "out", "--workers", "1")[:2] == (patients, errors)
    report = {r["patient"]: r["rules"] for r in rows(tmp_path / "out" / "report.ndjson")}
    assert "MET-2" not in report["Patient/a"] and report["Patient/b"] == ["MET-2"]  # b's list was cut off


def test_ndjson_on_stdin_is_read_line_by_line_and_documents_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """``screen -``: NDJSON is streamed under the line limit (an 8 MiB line costs a few blocks); one
    document (compact, pretty-printed, gzip) is read whole as before; nothing at all is nothing readable."""
    import io

    from b12screen.sources.files import read_stream

    monkeypatch.setenv("B12SCREEN_MAX_LINE_BYTES", str(64 << 10))
    huge = b'{"resourceType":"Patient","id":"big","x":"' + b"x" * (8 << 20) + b'"}'
    stream = io.BytesIO(b"\xef\xbb\xbf\n" + _lines(patient("a"), huge, b"null", patient("b")))
    items: list[Any] = []
    peak = _peak(lambda: items.extend(read_stream(stream)))
    assert [str(i) if isinstance(i, Exception) else (i.resource or {}).get("id", i.location) for i in items] == [
        "a", f"<stdin>: line 3: line longer than {64 << 10} bytes", "line 4", "b"]  # null: refused when grouped
    assert peak < 2 << 20, peak
    document = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient("x")}]}
    for data in (json.dumps(document).encode(), json.dumps(document).encode() + b"\n\n",
                 json.dumps(document, indent=2).encode(), gzip.compress(_lines(document))):
        [entry] = read_stream(io.BytesIO(data))
        assert entry.location == "entry[0]" and entry.resource["id"] == "x"  # type: ignore[union-attr]
    for data in (b"", b" \n\n "):
        assert [str(e) for e in read_stream(io.BytesIO(data))] == ["<stdin>: nothing readable (empty)"]
    result = CliRunner().invoke(cli, ["screen", "--as-of", AS_OF, "--format", "report", "-"],
                                input=_lines(patient("a"), huge, patient("b")))
    assert result.exit_code == 1 and f"<stdin>: line 2: line longer than {64 << 10} bytes" in result.stderr
    assert [r["patient"] for r in json.loads(result.stdout)] == ["Patient/a", "Patient/b"]
