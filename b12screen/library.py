"""``screen_paths``: screen files, folders and globs from Python with the reader of ``b12screen screen``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date

from .core.config import Config
from .core.engine import Screener, ScreeningResults
from .sources.paths import read_paths


def screen_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], as_of: date,
                 profile: str = "default", config: Config | None = None,
                 screener: Screener | None = None) -> ScreeningResults:
    """Screen every file, folder or glob pattern in ``paths`` (Bundles, resources, NDJSON, ``.gz``) at
    ``as_of``; unreadable input is in ``.errors``, one item naming the file, entry or line and the reason."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    screener = screener or Screener(profile=profile, config=config)
    grouped = screener.read(read_paths(paths))
    return screener.screen_records(grouped.records.values(), as_of, grouped.errors, grouped.resources_read)
