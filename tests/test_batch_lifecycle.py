"""A batch leaves nothing behind: killed with SIGKILL, its temporary files of every output name are removed
by the next run; interrupted with SIGTERM or SIGINT, it ends its workers, removes its work folder and
temporary files itself, says so in one line and exits 143 or 130.

Real processes: ``b12screen batch`` runs as a subprocess and is held at a named point of the run by the
test-support variable ``B12SCREEN_TEST_HOLD`` (no sleeping and hoping), then signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import write_ndjson
from conftest import metformin_request, patient

from b12screen.batch.outputs import OUTPUT_NAMES, REPORT_PARQUET, SUMMARY, AtomicFile
from b12screen.batch.workdir import HOLD_ENV, WORK_PREFIX, clean_stale, stale_entries
from b12screen.sinks import parquet

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")

AS_OF = "2026-11-24"
B12SCREEN = str(Path(sys.executable).parent / "b12screen")
BOUND = 30.0  # seconds: a bound that fails the test if a run hangs, never a timing assertion


def _export(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.ndjson", [patient(f"p{i}") for i in range(200)])
    write_ndjson(folder / "MedicationRequest.ndjson",
                 [metformin_request(f"m{i}", f"p{i}", "2026-01-01") for i in range(200)])
    return folder


def _start_held(tmp_path: Path, at: str, *args: str) -> tuple[subprocess.Popen[str], int, Path]:
    """Start ``b12screen batch`` held at the point ``at``: (process, pid of the process held, --out)."""
    marker, out = tmp_path / "held", tmp_path / "out"
    proc = subprocess.Popen([B12SCREEN, "batch", str(_export(tmp_path)), "--out", str(out), "--as-of", AS_OF,
                             *args], env={**os.environ, HOLD_ENV: f"{at}:{marker}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + BOUND
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the batch never reached the point {at!r}: {proc.communicate()[1]}")
        time.sleep(0.02)
    return proc, int(marker.read_text()), out


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a worker reparented and not yet reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + BOUND
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if _running(p)]


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_temporary_files_of_every_output_name_are_stale_once_their_owner_is_gone(tmp_path: Path) -> None:
    # a process that dies while writing every output leaves one temporary file per name; the names come
    # from OUTPUT_NAMES, so an output added there is covered here without a change to this test
    code = ("import os, sys; from pathlib import Path; from b12screen.batch.outputs import AtomicFile, OUTPUT_NAMES\n"
            "files = [AtomicFile(Path(sys.argv[1]) / n) for n in OUTPUT_NAMES]\n"
            "[f.write(b'half') for f in files]; [f.handle.flush() for f in files]; os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == len(OUTPUT_NAMES)
    assert sorted(p.name for p in stale_entries(tmp_path)) == left
    mine = AtomicFile(tmp_path / SUMMARY)  # this process is alive: its file is not stale
    assert clean_stale(tmp_path) == len(OUTPUT_NAMES)
    assert [p.name for p in tmp_path.iterdir()] == [mine.tmp.name]
    mine.discard()


def test_legacy_temporary_files_of_every_output_name_go_with_overwrite(tmp_path: Path) -> None:
    for name in OUTPUT_NAMES:  # named before owners were: no pid
        (tmp_path / f".{name}.abc123.partial").write_text("half")
    (tmp_path / ".notes.txt.partial").write_text("not ours")
    assert stale_entries(tmp_path) == []
    assert len(stale_entries(tmp_path, legacy=True)) == len(OUTPUT_NAMES)
    clean_stale(tmp_path, legacy=True)
    assert [p.name for p in tmp_path.iterdir()] == [".notes.txt.partial"]


def test_a_batch_killed_while_writing_the_outputs_leaves_nothing_the_next_run_keeps(tmp_path: Path) -> None:
    proc, held, out = _start_held(tmp_path, "write", "--workers", "1")
    assert held == proc.pid
    partial = sorted(p.name.split(f".{proc.pid}.")[0][1:] for p in out.glob(".*.partial"))
    written = sorted(n for n in OUTPUT_NAMES if n != SUMMARY and (n != REPORT_PARQUET or parquet.available()))
    assert partial == written  # every output but summary.json is being written at this point
    proc.kill()
    proc.communicate(timeout=BOUND)
    assert len(list(out.glob(".*.partial"))) == len(written)  # what a kill -9 leaves
    again = subprocess.run([B12SCREEN, "batch", str(tmp_path / "in"), "--out", str(out), "--as-of", AS_OF,
                            "--workers", "1"], capture_output=True, text=True, timeout=BOUND)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, SUMMARY])  # nothing hidden is left


@pytest.mark.parametrize(("signum", "at", "workers"), [
    (signal.SIGTERM, "stream", "2"),  # held in a worker, its unit spilled
    (signal.SIGTERM, "screen", "2"),  # held in a worker, about to screen a partition
    (signal.SIGINT, "screen", "2"),
    (signal.SIGTERM, "screen", "1"),  # one worker: the screening still runs in a forked worker
    (signal.SIGTERM, "write", "2"),  # held in the batch process, every temporary output open
    (signal.SIGINT, "write", "1"),
])
def test_sigterm_and_sigint_end_the_batch_with_a_line_an_exit_code_and_nothing_left(
        tmp_path: Path, signum: int, at: str, workers: str) -> None:
    proc, held, out = _start_held(tmp_path, at, "--workers", workers, "--unit-mb", "0.01")
    workers_seen = _children(proc.pid)
    work = [p for p in out.iterdir() if p.name.startswith(WORK_PREFIX)]
    if at == "write":  # the patients' outputs in the work folder, the temporary outputs beside it
        assert held == proc.pid and any(work[0].glob("p*.out")) and any(out.glob(".*.partial"))
    else:  # a worker held, units of patient data spilled
        assert held in workers_seen and any(work[0].glob("u*.spill"))
    if signum == signal.SIGINT:  # as a terminal's Ctrl-C: to every process of the group, workers too
        os.killpg(proc.pid, signum)
    else:  # as kill PID
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=BOUND)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr
    assert stderr == (f"b12screen: interrupted by {name}: the batch stopped; its workers, work folder and "
                      "temporary files were removed\n")  # one line, no traceback (from a worker either)
    assert list(out.iterdir()) == []  # no work folder, spill file or temporary output outlives the run
    assert _wait_gone(workers_seen) == [], "workers outlived the interrupted batch"
