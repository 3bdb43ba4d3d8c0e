"""Why a symbolic link among the inputs cannot be read."""

from __future__ import annotations

import os
from pathlib import Path


def broken_link_reason(path: Path) -> str:
    """Why ``path`` (a symbolic link that does not resolve) cannot be read."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.strerror and "symbolic links" in exc.strerror:
            return "symbolic link loops back on itself"
    return "symbolic link points to nothing"


def unreadable_reason(path: str | Path, exc: OSError) -> str:
    """The error reason for a file that could not be opened: a broken link says so."""
    if os.path.islink(path) and not os.path.exists(path):
        return broken_link_reason(Path(path))
    return f"cannot read file ({exc.strerror or exc})"
