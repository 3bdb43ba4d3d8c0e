"""``screen_paths``: screen files, folders and globs from Python with the engine of ``b12screen batch``."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from datetime import date

from .batch.api import StreamingResults, screen_files
from .batch.runner import BatchOptions
from .core.config import Config
from .errors import InputError
from .screening import Screener
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
                 validate: str = EVIDENCE, workers: int | None = None,
                 progress: bool | None = None) -> StreamingResults:
    """Screen every file, folder or glob pattern in ``paths`` (Bundles, resources, NDJSON, ``.gz``) at
    ``as_of`` with the engine of ``b12screen batch``: memory is bounded by the largest patient, not the
    input. ``workers``: processes (None: the machine's cores); ``progress``: tqdm bars (None: in an
    interactive Python prompt or notebook, not in a script). The results iterate patient by patient (sorted);
    unreadable input is in ``.errors``, each naming the file, entry or line and the reason."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    screener = screener or Screener(profile=profile, config=config)
    names, pattern_errors = expand(paths)
    options = BatchOptions(as_of=as_of, workers=workers, progress=progress, validate=validate)
    return screen_files(names, options, screener, pattern_errors)
