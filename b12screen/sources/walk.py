"""Walk an input folder the same way in every reader: symbolic links to folders are followed (each real
folder once, so a link loop ends), and a link that leads nowhere or into a loop is reported, not skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def broken_link_reason(path: Path) -> str:
    """Why ``path`` (a symbolic link that does not resolve) cannot be read."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.strerror and "symbolic links" in exc.strerror:
            return "symbolic link loops back on itself"
    return "symbolic link points to nothing"


def walk(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for every file under ``folder`` (hidden entries skipped, names sorted per folder),
    and ``(path, reason)`` for every link that does not resolve."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.is_symlink() and not path.exists():
                yield path, broken_link_reason(path)
            elif path.is_file():
                yield path, None
