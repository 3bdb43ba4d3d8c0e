"""The output files, written atomically: each goes to a temporary file in the output folder and
is renamed into place; ``summary.json`` comes last, so its presence marks a complete set."""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

FLAGS, REPORT, ERRORS, SUMMARY = "flags.ndjson", "report.ndjson", "errors.ndjson", "summary.json"
REPORT_CSV, REPORT_PARQUET, SUMMARY_HTML = "report.csv", "report.parquet", "summary.html"
COUNTS = "counts.csv"
OUTPUT_NAMES = (FLAGS, REPORT, REPORT_CSV, REPORT_PARQUET, COUNTS, ERRORS, SUMMARY_HTML, SUMMARY)
COVERAGE = ("medication", "condition or procedure", "laboratory result", "B12 result")
_DUMP = orjson.OPT_NON_STR_KEYS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def existing_outputs(out: Path) -> list[str]:
    """Output files already in ``out``."""
    return [name for name in OUTPUT_NAMES if (out / name).exists()]


class AtomicFile:
    """A file written under a temporary name in its final folder and renamed into place by ``commit``."""

    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent)
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        self.tmp = Path(name)
        self.handle: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()

    def commit(self) -> None:
        self.close()
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        """Remove the temporary file (first: closing flushes, which can fail on a full disk)."""
        self.tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.handle.close()


def error_key(row: dict[str, Any]) -> tuple[str, int]:
    return (row["file"], row["line"] or 0)


def merged_errors(sorted_streams: Iterable[Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Merge error rows already sorted by (file, line), keeping each stream's order for ties."""
    return heapq.merge(*sorted_streams, key=error_key)



def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def dump_summary(summary: dict[str, Any]) -> bytes:
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2 | _DUMP) + b"\n"
