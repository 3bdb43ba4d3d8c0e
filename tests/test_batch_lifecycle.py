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
from pathlib import Path

import pytest
from held_batch import AS_OF, B12SCREEN, BOUND, children, start_held, wait_gone

from b12screen.batch.outputs import OUTPUT_NAMES, REPORT_PARQUET, SUMMARY, AtomicFile
from b12screen.batch.workdir import WORK_PREFIX, clean_stale, stale_entries
from b12screen.sinks import parquet

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")

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


@pytest.mark.slow
def test_a_batch_killed_while_writing_the_outputs_leaves_nothing_the_next_run_keeps(tmp_path: Path) -> None:
    proc, held, out = start_held(tmp_path, "write", "--workers", "1")
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
@pytest.mark.slow
def test_sigterm_and_sigint_end_the_batch_with_a_line_an_exit_code_and_nothing_left(
        tmp_path: Path, signum: int, at: str, workers: str) -> None:
    proc, held, out = start_held(tmp_path, at, "--workers", workers, "--unit-mb", "0.01")
    workers_seen = children(proc.pid)
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
    assert wait_gone(workers_seen) == [], "workers outlived the interrupted batch"
