"""Helpers for the batch tests: build small exports in tmp_path and run the batch."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from conftest import AS_OF, FIXTURES

from b12screen import Screener
from b12screen.batch import BatchOptions, BatchResult, run_batch

BATCH = FIXTURES / "batch"
OUTPUTS = ("flags.ndjson", "report.ndjson", "report.csv", "errors.ndjson")  # summary.html holds the run times


def write_ndjson(path: Path, resources: list[Any], gz: bool = False) -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def batch(screener: Screener, paths: list[Path | str], out: Path, **options: Any) -> BatchResult:
    options.setdefault("progress", False)
    options.setdefault("workers", 1)
    return run_batch([str(p) for p in paths], out, screener, BatchOptions(as_of=AS_OF, **options))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def summary(out: Path) -> dict[str, Any]:
    data = json.loads((out / "summary.json").read_text())
    data.pop("seconds")
    data.pop("run")  # how the run was made: engine, workers, times (tests of it read summary.json itself)
    return data
