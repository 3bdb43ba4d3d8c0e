"""Property-based fuzzing of ``screen`` and ``batch``: valid NDJSON exports mutated line by line (type swaps,
deletions, deep nesting, huge numbers, NaN/Infinity, unicode oddities, duplicate keys, truncation, bad
UTF-8, ``null``) and file by file (CRLF, BOM, gzip, corrupt gzip, gzip cut short, bytes after the last gzip
member), with patients split across files.

Invariants, for both commands: no traceback; exit code in {0, 1, 2} and 0 exactly when nothing was
reported; every patient whose Patient line is intact (before any damage to its file) reported exactly once;
every broken line before the damage reported with its file and line; every damaged file named; the two
commands report the same patients. (A file changing size while it is read: ``tests/test_unreadable.py``.)

Deterministic (``derandomize``); ``B12SCREEN_FUZZ_EXAMPLES`` sets how many examples run (default 80;
e.g. ``B12SCREEN_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` for a long run).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import metformin_request, patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b12screen.cli import cli
from b12screen.sources.limits import MAX_DEPTH

EXAMPLES = int(os.environ.get("B12SCREEN_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BROKEN = ("truncate", "deep", "deeper", "huge", "nan", "infinity", "bad-utf8", "null")
ODD = ("type-swap", "delete", "duplicate-key", "unicode")
ERROR = re.compile(r"^b12screen: error: (.+?)(?:: line (\d+))?: (.*)$")
SWAPS: tuple[Any, ...] = (5, "x", [], {}, None, True, -1.5, [{"reference": 3}])


@dataclass
class Line:
    file: str
    resource: dict[str, Any]
    mutation: str | None
    data: bytes = b""


def _mutate(resource: dict[str, Any], mutation: str | None, draw: Any) -> bytes:
    value = dict(resource)
    if mutation is None:
        return json.dumps(value).encode()
    if mutation == "null":
        return b"null"
    if mutation == "type-swap":
        value[draw(st.sampled_from(sorted(value)))] = draw(st.sampled_from(SWAPS))
    elif mutation == "delete":
        del value[draw(st.sampled_from(sorted(value)))]
    elif mutation == "unicode":
        value["note"] = [{"text": draw(st.text(min_size=1, max_size=20))
                          + "\u202e\u0000\U0001f600 e\u0301\ufeff"}]
    elif mutation in ("deep", "deeper"):
        levels = 50_000 if mutation == "deeper" else MAX_DEPTH + 5
        return json.dumps(value)[:-1].encode() + b', "extension": ' + b"[" * levels + b"]" * levels + b"}"
    elif mutation in ("huge", "nan", "infinity"):
        literal = {"huge": b"1e400", "nan": b"NaN", "infinity": b"-Infinity"}[mutation]
        return json.dumps(value)[:-1].encode() + b', "x": ' + literal + b"}"
    data = json.dumps(value).encode()
    if mutation == "duplicate-key":
        return b'{"id": ' + json.dumps(draw(st.text(max_size=5))).encode() + b", " + data[1:]
    if mutation == "truncate":
        return data[:draw(st.integers(1, len(data) - 2))]
    if mutation == "bad-utf8":
        at = data.index(b'"id": "') + 7
        return data[:at] + b"\xff\xfe" + data[at:]
    return json.dumps(value).encode()


@dataclass
class Export:
    """Files (name -> bytes), their lines, and what a reader must make of them."""

    files: dict[str, bytes]
    lines: list[Line]
    intact: set[str]  # patients whose Patient line is intact and readable
    corrupt: set[str]  # files with a flipped gzip byte: no line of them is promised
    damaged: set[str]  # files cut short or with bytes after their last gzip member: named in an error
    readable: dict[str, int]  # how many leading lines of each file come before any damage


def _readable_lines(packed: bytes) -> int:
    """Lines whole within what the damaged gzip ``packed`` still expands to."""
    return zlib.decompressobj(31).decompress(packed).count(b"\n")


def _pack(draw: Any, data: bytes) -> tuple[bytes, str]:
    packing = draw(st.sampled_from(["plain", "plain", "gzip", "corrupt-gzip", "cut-gzip", "tail-gzip"]))
    if packing == "plain":
        return data, packing
    packed = gzip.compress(data)
    if packing == "corrupt-gzip":
        at = draw(st.integers(10, len(packed) - 1))
        packed = packed[:at] + bytes([packed[at] ^ 0x55]) + packed[at + 1:]
    elif packing == "cut-gzip":
        packed = packed[:draw(st.integers(10, len(packed) - 1))]
    elif packing == "tail-gzip":
        packed += draw(st.sampled_from([b"x", b"trailing bytes", b"\x1f", b"PK\x03\x04"]))
    return packed, packing


@st.composite
def exports(draw: Any) -> Export:
    mutation = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(BROKEN), st.sampled_from(ODD))
    count = draw(st.integers(2, 5))
    med_files = draw(st.integers(1, 2))
    lines: list[Line] = []
    for i in range(count):
        lines.append(Line("Patient.ndjson", patient(f"p{i}", "1950-01-01"), draw(mutation)))
        for j in range(draw(st.integers(0, 2))):
            name = f"MedicationRequest.{draw(st.integers(0, med_files - 1)):03d}.ndjson"
            lines.append(Line(name, metformin_request(f"m{i}-{j}", f"p{i}", "2026-06-01"), draw(mutation)))
    for line in lines:
        line.data = _mutate(line.resource, line.mutation, draw)
    out = Export({}, lines, set(), set(), set(), {})
    for name in sorted({line.file for line in lines}):
        end = b"\r\n" if draw(st.booleans()) else b"\n"
        data = b"".join(line.data + end for line in lines if line.file == name)
        if draw(st.booleans()):
            data = b"\xef\xbb\xbf" + data
        packed, packing = _pack(draw, data)
        if packing != "plain":
            for line in lines:
                if line.file == name:
                    line.file = name + ".gz"
            name += ".gz"
        out.files[name] = packed
        out.readable[name] = 0 if packing == "corrupt-gzip" else data.count(b"\n")
        if packing == "corrupt-gzip":
            out.corrupt.add(name)
        elif packing in ("cut-gzip", "tail-gzip"):
            out.damaged.add(name)
            out.readable[name] = _readable_lines(packed)
    out.intact = {f"Patient/{line.resource['id']}" for line, number in _numbered(lines)
                  if line.resource["resourceType"] == "Patient" and line.mutation is None
                  and number <= out.readable[line.file]}
    return out


def _numbered(lines: list[Line]) -> list[tuple[Line, int]]:
    """Each line with its number in its file."""
    numbers: dict[str, int] = {}
    out = []
    for line in lines:
        numbers[line.file] = numbers.get(line.file, 0) + 1
        out.append((line, numbers[line.file]))
    return out


def _broken(case: Export) -> set[tuple[str, int]]:
    """(file, line number) of every line that must be reported."""
    return {(line.file, number) for line, number in _numbered(case.lines)
            if line.mutation in BROKEN and number <= case.readable[line.file]}


def _folder(tmp: Path, files: dict[str, bytes]) -> Path:
    folder = tmp / "in"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _batch(folder: Path, out: Path) -> tuple[int, list[str], list[dict[str, Any]]]:
    """Exit code, reported patients and error rows of ``batch`` (one worker), run under Python's default
    recursion limit (hypothesis raises it while a test runs; batch then measures every Bundle first)."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        code, _stdout, _stderr = _run(["batch", str(folder), "--out", str(out), "--as-of", "2026-11-24",
                                       "--workers", "1", "--no-progress"])
    finally:
        sys.setrecursionlimit(raised)
    report = [json.loads(line)["patient"] for line in (out / "report.ndjson").read_text().splitlines()]
    return code, report, [json.loads(line) for line in (out / "errors.ndjson").read_text().splitlines()]


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    assert result.exit_code in (0, 1, 2), result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
@FUZZ
@given(exports())
def test_screen_and_batch_survive_mutated_exports(case: Export) -> None:
    files, intact, corrupt = case.files, case.intact, case.corrupt | case.damaged
    broken = _broken(case)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _folder(Path(tmp), files)

        code, stdout, stderr = _run(["screen", "--as-of", "2026-11-24", "--format", "report", str(folder)])
        reported = [entry["patient"] for entry in json.loads(stdout)]
        error_lines = [line for line in stderr.splitlines() if line.startswith("b12screen: error:")]
        assert len(reported) == len(set(reported))
        assert intact <= set(reported), stderr
        for name, number in broken:
            assert any(f"{folder / name}: line {number}:" in line for line in error_lines), (name, number, stderr)
        for name in corrupt:
            assert any(str(folder / name) in line for line in error_lines), stderr
        for name in case.damaged:  # where the damage is: after the last line still whole
            assert any(f"{folder / name}: line {case.readable[name] + 1}:" in line for line in error_lines), stderr
        assert (code == 0) == (not error_lines), stderr
        said = {(Path(m[1]).name, int(m[2]) if m[2] else None, m[3]) for m in map(ERROR.match, error_lines) if m}

        out = Path(tmp) / "out"
        code, report, errors = _batch(folder, out)
        assert len(report) == len(set(report)) and report == sorted(report)
        assert intact <= set(report), errors
        assert set(report) == set(reported), errors  # the same patients as screen
        rows = {(Path(e["file"]).name, e["line"]) for e in errors if "file" in e}
        assert broken <= rows, (broken - rows, errors)
        assert {name for name in corrupt} <= {name for name, _ in rows}, errors
        assert {(Path(e["file"]).name, e["line"], e["reason"]) for e in errors} == said, errors  # as screen said
        assert (code == 0) == (not errors), errors
        summary = json.loads((out / "summary.json").read_text())
        assert code != 2 or summary["resources_read"] == 0


# -- Bundle-shaped: per-patient Bundles with hostile entries among good ones -------------------------

HOSTILE = ("deep", "deep-unread", "not-an-object", "no-type", "unknown-type")
B12_LAB = b'{"coding": [{"system": "http://loinc.org", "code": "2132-9"}]}'


def _hostile_entry(kind: str, pid: str, draw: Any) -> bytes:
    if kind.startswith("deep"):  # nested beyond MAX_DEPTH, within the document limit: that entry only is refused
        # "deep-unread": no rule reads it, so batch never parses it (well within msgspec's guard, see _batch)
        levels = draw(st.integers(MAX_DEPTH + 1, 1000 if kind == "deep" else 600))
        return (b'{"resourceType": "Observation", "id": "deep", "status": "final", "code": '
                + (b'{"text": "x"}' if kind == "deep-unread" else B12_LAB) + b', '
                b'"subject": {"reference": "Patient/' + pid.encode() + b'"}, "valueString": "[", "note": '
                + b"[" * levels + b"]" * levels + b"}")
    return {"not-an-object": b'"[Epogen]"', "no-type": b'{"id": "x"}',
            "unknown-type": b'{"resourceType": "Nonsense", "id": "x"}'}[kind]


Folders = tuple[dict[str, bytes], set[str], set[tuple[str, str]], set[str], set[tuple[str, str]]]


@st.composite
def bundle_folders(draw: Any) -> Folders:
    """(file name -> bytes, patients to report, (file, entry) of every hostile entry, files refused whole,
    (file, entry) of the hostile entries batch never reads, or (file, "maybe") when it may read them all)."""
    files: dict[str, bytes] = {}
    hostile: set[tuple[str, str]] = set()
    unread: set[tuple[str, str]] = set()
    refused: set[str] = set()
    intact: set[str] = set()
    for i in range(draw(st.integers(1, 4))):
        pid = f"p{i}"
        entries = [json.dumps(patient(pid, "1950-01-01")).encode()]
        entries += [json.dumps(metformin_request(f"m{i}-{y}", pid, f"{y}-01-01")).encode()
                    for y in range(2020, 2020 + draw(st.integers(0, 3)))]
        kinds = draw(st.lists(st.sampled_from(HOSTILE), max_size=3))
        for kind in kinds:
            entries.insert(draw(st.integers(1, len(entries))), _hostile_entry(kind, pid, draw))
        name = f"bundle-{i}.json"
        kind = draw(st.sampled_from(["collection", "transaction", "searchset"]))
        body = b", ".join(b'{"fullUrl": "urn:uuid:' + pid.encode() + b"-" + str(n).encode() + b'", "resource": '
                          + e + b"}" for n, e in enumerate(entries))
        data = b'{"resourceType": "Bundle", "type": "' + kind.encode() + b'", "entry": [' + body + b"]}"
        if draw(st.integers(0, 9)) == 0:  # beyond orjson's own limit outside any entry: refused whole
            data = b'{"resourceType": "Bundle", "meta": ' + b"[" * 1100 + b"]" * 1100 + b', ' + data[1:]
            refused.add(name)
        else:
            intact.add(f"Patient/{pid}")
            hostile |= {(name, f"entry[{n}]") for n, e in enumerate(entries) if not e.startswith(b'{"resourceType": "'
                                                                                                    b'Patient"')
                        and not e.startswith(b'{"resourceType": "MedicationRequest"')}
            unread |= {(name, f"entry[{n}]") for n, e in enumerate(entries) if b'{"text": "x"}' in e}
            # read whole, every entry measured, when not a plain Bundle or maybe nested past msgspec's guard
            if not {"deep", "deep-unread"} >= set(kinds) or any(b"[" * 601 in e for e in entries):
                unread.add((name, "maybe"))
        files[name] = data
    return files, intact, hostile, refused, unread


@pytest.mark.slow
@FUZZ
@given(bundle_folders())
def test_a_hostile_bundle_entry_costs_that_entry_only(case: Folders) -> None:
    files, intact, hostile, refused, unread = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = _folder(Path(tmp), files)
        _code, stdout, stderr = _run(["screen", "--as-of", "2026-11-24", "--format", "report", str(folder)])
        assert {entry["patient"] for entry in json.loads(stdout)} == intact, stderr
        for name, where in hostile:
            assert f"{folder / name}: {where}: " in stderr, (name, where, stderr)
        for name in refused:
            assert f"{folder / name}: JSON document nested more than 1024 levels deep" in stderr, stderr

        out = Path(tmp) / "out"
        _code, report, errors = _batch(folder, out)
        assert set(report) == intact, errors
        located = {(Path(e["file"]).name, e.get("location")) for e in errors}
        maybe = {name for name, where in unread if where == "maybe"}
        assert hostile - unread <= located, (hostile, errors)
        assert not {(name, where) for name, where in unread if name not in maybe} & located, errors  # as NDJSON
        assert {(name, None) for name in refused} <= located, errors
