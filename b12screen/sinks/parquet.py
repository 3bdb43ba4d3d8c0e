"""``report.parquet``: the rows of ``report.csv`` with typed columns (lists as lists), written in batches so
memory stays bounded. Needs pyarrow (the ``parquet`` extra).

pyarrow is never imported by the process that starts a :class:`ParquetChild`: a child process reads the
rows (one JSON object a line) and writes the table, so the batch and its workers do not carry pyarrow's
~35 MB, and the child does not load pandas or NumPy, which pyarrow would import for conversions never
used here (another ~45 MB and a quarter of a second).
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from importlib.abc import MetaPathFinder
from pathlib import Path
from typing import IO, Any

import orjson

from .rows import COLUMNS

PREPARE = "prepare"  # the message that has the child load pyarrow before the rows are there
BATCH_ROWS = 2048  # rows held before a row group is written: the child stays small
_UNUSED = ("pandas", "numpy")  # modules pyarrow imports when they are installed, for conversions not used here


def available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


class ParquetRows:
    """Rows appended one at a time, flushed as a row group every ``BATCH_ROWS`` rows."""

    def __init__(self, handle: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        text, strings = pa.string(), pa.list_(pa.string())
        types = {"flagged": pa.bool_(), "evidence_count": pa.int32(), "as_of": pa.date32(), "reasons": strings,
                 "risk_factors": strings, "modifiers": strings}
        self._pa = pa
        self.schema = pa.schema([(name, types.get(name, text)) for name in COLUMNS])
        self.writer = pq.ParquetWriter(handle, self.schema, compression="zstd")
        self.pending: list[Mapping[str, Any]] = []

    def add(self, values: Mapping[str, Any]) -> None:
        self.pending.append({**values, "as_of": date.fromisoformat(values["as_of"])})
        if len(self.pending) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(self._pa.Table.from_pylist(self.pending, schema=self.schema))
            self.pending = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


def write_rows(rows: Iterable[Mapping[str, Any]], target: Path) -> None:
    """Write ``rows`` (analyst rows, ``as_of`` as ISO text) to ``target`` and flush it to disk."""
    with open(target, "wb") as handle:
        table = ParquetRows(handle)
        for values in rows:
            table.add(values)
        table.close()
        handle.flush()
        os.fsync(handle.fileno())


class _Refuse(MetaPathFinder):
    """Makes the modules in :data:`_UNUSED` look absent (pyarrow works without them)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in _UNUSED:
            raise ModuleNotFoundError(f"{name} is not used to write Parquet", name=name)


def _import_lean() -> None:
    """Import pyarrow without pandas and NumPy where this pyarrow can; else as it comes."""
    if any(name in sys.modules for name in _UNUSED):
        return  # already loaded (and shared with the parent): nothing to save
    refuse = _Refuse()
    sys.meta_path.insert(0, refuse)
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:  # an older pyarrow that needs NumPy
        for name in [n for n in sys.modules if n.partition(".")[0] == "pyarrow"]:
            del sys.modules[name]
    finally:
        sys.meta_path.remove(refuse)


def _child(channel: Any, prepare: Callable[[], None]) -> None:
    gc.freeze()  # collections here would touch, and so copy, every page of the objects inherited from the parent
    prepare()
    try:
        job = channel.recv()
        if job == PREPARE:  # load pyarrow now, while the parent writes the other outputs
            _import_lean()
            job = channel.recv()
        if job is None:
            return  # the parent gave up
        _import_lean()
        rows_path, target = job
        with open(rows_path, "rb") as f:
            write_rows((orjson.loads(line) for line in f), target)
    except EOFError:
        return  # the parent is gone
    except OSError as exc:
        channel.send((exc.errno, exc.strerror or str(exc)))
        sys.exit(1)
    except Exception as exc:  # pyarrow's own errors (e.g. ArrowIOError wrapping a full disk)
        channel.send((None, str(exc).split("\n")[0][:200]))
        sys.exit(1)
    channel.send(None)


class ParquetChild:
    """A child process forked early, while the parent is small (it shares the parent's pages and costs
    almost nothing while it waits), that writes a table from a rows file when :meth:`write` asks;
    :meth:`wait` raises ``OSError`` with the child's reason when it failed. ``prepare`` runs first in the
    child (e.g. to die with the parent)."""

    def __init__(self, prepare: Callable[[], None]) -> None:
        context = multiprocessing.get_context("fork")
        self._channel, theirs = context.Pipe()
        self.process = context.Process(target=_child, args=(theirs, prepare), daemon=True)
        self.process.start()
        theirs.close()

    def prepare(self) -> None:
        """Have the child load pyarrow now (call it once the heavy work is done: pyarrow's libraries are
        resident from then on), so that loading overlaps what the parent does before :meth:`write`."""
        self._channel.send(PREPARE)

    def write(self, rows_path: Path, target: Path) -> None:
        """Write ``target`` from the (complete) rows file ``rows_path``."""
        self._channel.send((rows_path, target))

    def wait(self) -> None:
        try:
            outcome = self._channel.recv()
        except EOFError:
            outcome = (None, "the process writing report.parquet ended without a word")
        finally:
            self._channel.close()
            self.process.join()
        if outcome is not None:
            raise OSError(outcome[0], f"report.parquet: {outcome[1]}")

    def stop(self) -> None:
        """End the child if it is still there (nothing to write, or the batch failed)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self._channel.close()
