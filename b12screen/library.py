"""``screen_paths``: screen files, folders and globs from Python with the reader of ``b12screen screen``."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from datetime import date

from .core.config import Config
from .errors import InputError
from .screening import Screener, ScreeningResults, group, screen_grouped
from .sources import read_inputs
from .sources.validation import EVIDENCE

GLOB_CHARS = frozenset("*?[")


def expand(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[InputError]]:
    """Paths with glob patterns (``**`` recurses) expanded, and an error for each pattern matching nothing."""
    found: list[str] = []
    errors: list[InputError] = []
    for raw in paths:
        text = os.fspath(raw)
        if GLOB_CHARS & set(text) and not os.path.exists(text):
            matches = sorted(glob.glob(text, recursive=True))
            found.extend(matches)
            if not matches:
                errors.append(InputError(text, None, "no file or folder matches this pattern"))
        else:
            found.append(text)
    return found, errors


def screen_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], as_of: date,
                 profile: str = "default", config: Config | None = None, screener: Screener | None = None,
                 validate: str = EVIDENCE) -> ScreeningResults:
    """Screen every file, folder or glob pattern in ``paths`` (Bundles, resources, NDJSON, ``.gz``) at
    ``as_of``, as ``b12screen screen`` does; unreadable input is in ``.errors``, each naming the file,
    entry or line and the reason."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    screener = screener or Screener(profile=profile, config=config)
    names, pattern_errors = expand(paths)
    inputs = read_inputs(names)
    grouped = group(screener, [*pattern_errors, *inputs.items], validate, inputs.deleted)
    return screen_grouped(screener, grouped, as_of)
