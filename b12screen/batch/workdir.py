"""The work folder a batch spills into, stale work left by killed runs, and workers that die with their
parent.

A work folder is named ``.b12screen-work-<pid>-<random>`` inside ``--out``, and temporary output files
``.<name>.<pid>.<random>.partial`` for every name in :data:`~b12screen.batch.outputs.OUTPUT_NAMES` and the
audit's ``AUDIT_NAMES``: the pid says which run owns them, so a later run removes exactly those whose owner
is gone (``--overwrite`` also removes ones from before owners were named).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .auditstats import AUDIT_NAMES
from .outputs import OUTPUT_NAMES

WORK_PREFIX = ".b12screen-work-"
# the names come from the one list of outputs, so a new output's temporary files are cleaned up too
_OURS = "|".join([re.escape(WORK_PREFIX), *(re.escape(f".{name}.") for name in (*OUTPUT_NAMES, *AUDIT_NAMES))])
_OWNED = re.compile(rf"^(?:{_OURS})(\d+)[-.]")
_LEGACY = re.compile(rf"^(?:{_OURS})")
_PR_SET_PDEATHSIG = 1
HOLD_ENV = "B12SCREEN_TEST_HOLD"
HOLD_SECONDS = 60.0


def make_work(out: Path) -> Path:
    """A new work folder in ``out`` owned by this process."""
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=out))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_entries(out: Path, legacy: bool = False) -> list[Path]:
    """Work folders and temporary outputs in ``out`` whose owning process is gone (and, with ``legacy``,
    ones that name no owner)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in sorted(out.iterdir()):
            m = _OWNED.match(entry.name)
            if m is not None:
                if not _alive(int(m.group(1))):
                    found.append(entry)
            elif legacy and _LEGACY.match(entry.name) and (entry.is_dir() or entry.name.endswith(".partial")):
                found.append(entry)
    return found


def clean_stale(out: Path, legacy: bool = False) -> int:
    """Remove what :func:`stale_entries` finds; returns how many entries went."""
    entries = stale_entries(out, legacy)
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return len(entries)


def die_with_parent(parent: int) -> None:
    """Pool initializer: this worker gets SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``); if the
    parent is already gone, exit now. It leaves an interruption to its parent, which ends the workers before
    removing their files: SIGINT (a terminal's Ctrl-C reaches the whole process group) is ignored, SIGTERM
    has its default action (not the handler a command may have installed in the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def hold_point(name: str) -> None:
    """Test support: with ``B12SCREEN_TEST_HOLD=<name>:<file>`` in the environment, the process reaching the
    point ``name`` creates ``file`` and waits there (``HOLD_SECONDS`` at most), so a test can signal or kill a
    real run at that moment: ``stream`` and ``screen`` (a unit spilled, a partition about to be screened: raw
    patient data in the work folder), ``write`` (every output's temporary file in ``--out``). Without the
    variable it does nothing."""
    at, _, marker = os.environ.get(HOLD_ENV, "").partition(":")
    if at == name and marker:
        own = f"{marker}.{os.getpid()}"  # workers can reach the point at once
        Path(own).write_text(str(os.getpid()))  # the test reads the pid of the process held
        os.replace(own, marker)
        time.sleep(HOLD_SECONDS)
