"""The work folder a batch spills into, stale work left by killed runs, and workers that die with their
parent.

A work folder is named ``.b12screen-work-<pid>-<random>`` inside ``--out``, and temporary output files
``.<name>.<pid>.<random>.partial``: the pid says which run owns them, so a later run removes exactly those
whose owner is gone (``--overwrite`` also removes ones from before owners were named).
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
from pathlib import Path

WORK_PREFIX = ".b12screen-work-"
_OWNED = re.compile(r"^(?:\.b12screen-work-|\.(?:flags|report|errors)\.ndjson\.|\.summary\.json\.)(\d+)[-.]")
_LEGACY = re.compile(r"^(?:\.b12screen-work-|\.(?:flags|report|errors)\.ndjson\.|\.summary\.json\.).*")
_PR_SET_PDEATHSIG = 1


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
    parent is already gone, exit now."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
