"""Hostile input and faults: each case ends as one error naming the file and line (or entry) and the reason,
every other patient screened, the documented exit code."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from batch_helpers import batch, rows, write_ndjson
from click.testing import CliRunner
from conftest import metformin_request, patient
from held_batch import BOUND, children, start_held, wait_gone

from b12screen import Screener
from b12screen.batch.outputs import OUTPUT_NAMES
from b12screen.batch.workdir import WORK_PREFIX, clean_stale, stale_entries
from b12screen.cli import cli
from b12screen.sources import limits

AS_OF = "2026-11-24"
B12SCREEN = str(Path(sys.executable).parent / "b12screen")


def _export(tmp_path: Path, bad_line: str, name: str = "MedicationRequest.ndjson") -> Path:
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.ndjson", [patient("p1"), patient("p2")])
    write_ndjson(folder / name, [metformin_request("ok", "p2", "2026-01-01"), bad_line])
    return folder


def _metformin_with(extra_json: str) -> str:
    line = json.dumps(metformin_request("bad", "p1", "2026-01-01"))
    return line[:-1] + f', "note": {extra_json}}}'


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


@pytest.mark.parametrize(("payload", "reason"), [
    ("[" * 1000 + "]" * 1000, f"MedicationRequest nested more than {limits.MAX_DEPTH} levels deep"),
    ("[" * 50_000 + "]" * 50_000, f"JSON nested more than {limits.MAX_DEPTH} levels deep"),  # beyond orjson's
    ("[1e400]", "number is infinity"),
    ('[{"text": -1e400}]', "number is infinity"),
])
def test_deep_nesting_and_overflowing_numbers_are_one_error_row(screener: Screener, tmp_path: Path,
                                                               payload: str, reason: str) -> None:
    folder = _export(tmp_path, _metformin_with(payload))
    result = batch(screener, [folder], tmp_path / "out")
    errors = rows(tmp_path / "out" / "errors.ndjson")
    assert [(Path(e["file"]).name, e["line"]) for e in errors] == [("MedicationRequest.ndjson", 2)]
    assert reason in errors[0]["reason"]
    assert [r["patient"] for r in rows(tmp_path / "out" / "report.ndjson")] == ["Patient/p1", "Patient/p2"]
    assert result.exit_code == 1
    code, stderr = _cli("screen", "--as-of", AS_OF, "--format", "report", str(folder))
    assert code == 1 and reason in stderr and "MedicationRequest.ndjson: line 2" in stderr


def test_depth_just_under_the_limit_is_read() -> None:
    ok = b"[" * limits.MAX_DEPTH + b"]" * limits.MAX_DEPTH
    assert limits.loads(ok) is not None
    with pytest.raises(limits.JSONProblem, match="nested more than"):
        limits.loads(b"[" + ok + b"]")
    assert limits.depth(b'{"a": "[[[[[[", "b": [{}]}') == 3  # brackets in strings do not count


def _bomb(path: Path, megabytes: int, head: bytes = b"", fill: bytes = b" ") -> Path:
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(head)
        block = fill * (1 << 20)
        for _ in range(megabytes):
            f.write(block)
    return path


@pytest.mark.slow
def test_screen_refuses_a_gzip_bomb_and_reads_the_rest(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.json.gz", 300, b'{"resourceType": "Bundle", "type": "collection", "entry": [')
    good = write_ndjson(tmp_path / "Patient.ndjson", [patient("p1")])
    code, stderr = _cli("screen", "--as-of", AS_OF, "--format", "report", str(bomb), str(good))
    assert code == 1
    assert f"{bomb}: gzip data expands more than {limits.MAX_RATIO} times" in stderr
    assert "screened 1 patient(s)" in stderr


def test_gunzip_caps_and_errors() -> None:
    data = gzip.compress(os.urandom(4000))  # incompressible: the ratio check does not apply
    assert len(limits.gunzip_bounded(data, 4000)) == 4000
    with pytest.raises(limits.JSONProblem, match="more than 3999 bytes"):
        limits.gunzip_bounded(data, 3999)
    with pytest.raises(EOFError):
        limits.gunzip_bounded(data[:-12], 10_000)
    assert limits.gunzip_bounded(data + b"\x00\x00" + gzip.compress(b"x"), 10_000)[-1:] == b"x"


@pytest.mark.slow
def test_a_document_bomb_in_a_batch_folder_is_one_error(screener: Screener, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _bomb(folder / "bundle.json.gz", 300, b'{"resourceType": "Bundle", "type": "collection", "entry": [')
    write_ndjson(folder / "Patient.ndjson", [patient("p1")])
    result = batch(screener, [folder], tmp_path / "out")
    errors = rows(tmp_path / "out" / "errors.ndjson")
    assert [Path(e["file"]).name for e in errors] == ["bundle.json.gz"]
    assert "decompression bomb" in errors[0]["reason"]
    assert result.summary["patients"] == 1 and result.exit_code == 1


@pytest.mark.slow
def test_a_newline_flood_is_cut_short(screener: Screener, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _bomb(folder / "Patient.ndjson.gz", 200, json.dumps(patient("p1")).encode() + b"\n", b"\n")
    write_ndjson(folder / "Condition.ndjson", [{"resourceType": "Condition", "id": "c",
                                                "subject": {"reference": "Patient/p2"}, "code": {"text": "x"}}])
    result = batch(screener, [folder], tmp_path / "out")
    errors = rows(tmp_path / "out" / "errors.ndjson")
    assert len(errors) == 1 and errors[0]["file"].endswith("Patient.ndjson.gz")
    assert "decompression bomb" in errors[0]["reason"] and errors[0]["line"] > limits.RATIO_FLOOR // 2
    assert [r["patient"] for r in rows(tmp_path / "out" / "report.ndjson")] == ["Patient/p1", "Patient/p2"]
    assert result.exit_code == 1


def _limited(limit: int):  # type: ignore[no-untyped-def]
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_a_full_disk_is_exit_3_with_nothing_under_a_final_name(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.ndjson", [patient(f"p{i}") for i in range(200)])
    out = tmp_path / "out"
    done = subprocess.run([B12SCREEN, "batch", str(folder), "--out", str(out), "--as-of", AS_OF, "--workers", "1"],
                          capture_output=True, text=True, preexec_fn=_limited(4000), timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and f"cannot write the outputs in {out}: File too large" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []  # no outputs, no temporary files, no work folder
    done = subprocess.run([B12SCREEN, "screen", "--as-of", AS_OF, "--format", "report", str(folder),
                           "-o", str(tmp_path / "r.json")],
                          capture_output=True, text=True, preexec_fn=_limited(4000), timeout=120)
    assert done.returncode == 3 and "cannot write the output" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_an_unwritable_or_vanished_out_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    folder = write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1")]).parent
    code, stderr = _cli("batch", str(folder), "--out", str(tmp_path / "file" / "out"), "--as-of", AS_OF)
    assert code == 3 and "Not a directory" in stderr
    code, stderr = _cli("screen", "--as-of", AS_OF, str(folder), "-o", str(tmp_path / "gone" / "r.json"))
    assert code == 3 and "No such file or directory" in stderr
    if Path("/dev/full").exists():
        code, stderr = _cli("screen", "--as-of", AS_OF, str(folder), "-o", "/dev/full")
        assert code == 3 and "No space left on device" in stderr


def test_stale_work_folders_are_removed_only_when_their_owner_is_gone(screener: Screener, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = out / f"{WORK_PREFIX}{dead_pid}-abc"
    (stale / "sub").mkdir(parents=True)
    (out / f".report.ndjson.{dead_pid}.x1.partial").write_text("half")
    live = out / f"{WORK_PREFIX}{os.getppid()}-abc"  # a running process owns it
    live.mkdir()
    legacy = out / f"{WORK_PREFIX}zzzz"
    legacy.mkdir()
    assert {p.name for p in stale_entries(out)} == {stale.name, f".report.ndjson.{dead_pid}.x1.partial"}
    folder = write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1")]).parent
    batch(screener, [folder], out)
    assert not stale.exists() and live.exists() and legacy.exists()
    batch(screener, [folder], out, overwrite=True)
    assert not legacy.exists() and live.exists()
    assert clean_stale(out) == 0


def test_a_hard_killed_batch_leaves_nothing_the_next_run_keeps_and_no_workers(tmp_path: Path) -> None:
    # held where a worker has spilled a unit of patient data: the kill lands mid-run, every time
    proc, held, out = start_held(tmp_path, "stream", "--workers", "2", "--unit-mb", "0.01")
    kids = children(proc.pid)
    assert held in kids and any(p.name.startswith(WORK_PREFIX) for p in out.glob(".*"))
    proc.kill()
    proc.communicate(timeout=BOUND)
    assert wait_gone(kids) == [], "workers outlived their parent"
    assert any(p.name.startswith(WORK_PREFIX) for p in out.glob(".*"))
    code, stderr = _cli("batch", str(tmp_path / "in"), "--out", str(out), "--as-of", AS_OF, "--workers", "1")
    assert code == 0, stderr
    left = {p.name for p in out.iterdir()}
    assert left <= set(OUTPUT_NAMES)  # no work folder or temporary file is left beside the outputs
    assert {"errors.ndjson", "flags.ndjson", "report.ndjson", "summary.json"} <= left


def test_dangling_and_looping_links_are_errors_and_linked_folders_are_read(screener: Screener,
                                                                           tmp_path: Path) -> None:
    real = write_ndjson(tmp_path / "real" / "Patient.ndjson", [patient("p1")]).parent
    top = tmp_path / "top"
    write_ndjson(top / "Condition.ndjson", [{"resourceType": "Condition", "id": "c",
                                             "subject": {"reference": "Patient/p2"}, "code": {"text": "x"}}])
    (top / "linked").symlink_to(real)
    (real / "up").symlink_to(top)  # a loop through the folders
    (top / "dangling.ndjson").symlink_to(tmp_path / "nowhere.ndjson")
    (top / "loop.json").symlink_to(top / "loop.json")
    result = batch(screener, [top], tmp_path / "out")
    errors = {Path(e["file"]).name: e["reason"] for e in rows(tmp_path / "out" / "errors.ndjson")}
    assert errors == {"dangling.ndjson": "symbolic link points to nothing",
                      "loop.json": "symbolic link loops back on itself"}
    assert [r["patient"] for r in rows(tmp_path / "out" / "report.ndjson")] == ["Patient/p1", "Patient/p2"]
    assert result.exit_code == 1
    code, stderr = _cli("screen", "--as-of", AS_OF, "--format", "report", str(top))
    assert code == 1 and "screened 2 patient(s)" in stderr
    assert "dangling.ndjson: symbolic link points to nothing" in stderr
    assert "loop.json: symbolic link loops back on itself" in stderr
    code, stderr = _cli("screen", "--as-of", AS_OF, str(top / "dangling.ndjson"))
    assert code == 2 and "symbolic link points to nothing" in stderr


def test_a_file_gone_before_it_is_read_is_one_error_row(screener: Screener, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import b12screen.batch.stream as stream

    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.ndjson", [patient(f"p{i}") for i in range(2000)])
    write_ndjson(folder / "Condition.ndjson", [{"resourceType": "Condition", "id": "c",
                                                "subject": {"reference": "Patient/q"}, "code": {"text": "x"}}])
    real = stream.plain_lines

    def vanished(path: str, *args: object):  # type: ignore[no-untyped-def]
        if path.endswith("Patient.ndjson"):
            raise FileNotFoundError(2, "No such file or directory")
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stream, "plain_lines", vanished)
    result = batch(screener, [folder], tmp_path / "out", unit_bytes=20_000)
    errors = rows(tmp_path / "out" / "errors.ndjson")
    assert [(Path(e["file"]).name, e["reason"]) for e in errors] == [
        ("Patient.ndjson", "cannot read file (No such file or directory)")]
    assert result.summary["patients"] == 1 and result.exit_code == 1
