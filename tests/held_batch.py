"""Run ``b12screen batch`` as a real process held at a named point of the run (the test-support variable
``B12SCREEN_TEST_HOLD``), to signal or kill it there; and see which of its processes still run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import write_ndjson
from conftest import metformin_request, patient

from b12screen.batch.workdir import HOLD_ENV

AS_OF = "2026-11-24"
B12SCREEN = str(Path(sys.executable).parent / "b12screen")
BOUND = 30.0  # seconds: a bound that fails the test if a run hangs, never a timing assertion


def export(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_ndjson(folder / "Patient.ndjson", [patient(f"p{i}") for i in range(200)])
    write_ndjson(folder / "MedicationRequest.ndjson",
                 [metformin_request(f"m{i}", f"p{i}", "2026-01-01") for i in range(200)])
    return folder


def start_held(tmp_path: Path, at: str, *args: str, bound: float = BOUND,
               command: tuple[str, ...] = ("batch",)) -> tuple[subprocess.Popen[str], int, Path]:
    """Start ``b12screen batch`` (or ``command``) held at the point ``at`` (failing after ``bound`` seconds):
    (process, pid of the process held, --out)."""
    marker, out = tmp_path / "held", tmp_path / "out"
    proc = subprocess.Popen([B12SCREEN, *command, str(export(tmp_path)), "--out", str(out), "--as-of", AS_OF,
                             *args], env={**os.environ, HOLD_ENV: f"{at}:{marker}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + bound
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the batch never reached the point {at!r}: {proc.communicate()[1]}")
        time.sleep(0.02)
    return proc, int(marker.read_text()), out


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a worker reparented and not yet reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + BOUND
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if running(p)]
