"""Files, folders and glob patterns to entries: the reader of ``b12screen screen`` and ``screen_paths``."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InputError
from .reader import Entry, read_path

GLOB_CHARS = frozenset("*?[")


def read_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Entry | InputError]:
    """Entries of every file, folder or glob pattern (``**`` recurses), with an error naming each path
    that does not exist or pattern that matches nothing."""
    for raw in paths:
        text = os.fspath(raw)
        if GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                yield InputError(text, None, "no file or folder matches this pattern")
            for match in matches:
                yield from read_path(Path(match))
            continue
        path = Path(text)
        if not path.exists():
            yield InputError(text, None, "no such file or folder")
            continue
        yield from read_path(path)
