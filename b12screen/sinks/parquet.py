"""``report.parquet``: the rows of ``report.csv`` with typed columns (lists as lists), written in row
groups of ``BATCH_ROWS`` rows so memory stays bounded. Needs arro3 (``arro3-core`` and ``arro3-io``, the
``parquet`` extra): the Rust Arrow and Parquet implementation, whose import adds about 9 MB and a few
milliseconds, where pyarrow's libraries added about 40 MB and 0.07 s of CPU to every batch.

The writing runs in a child process, forked once the rows (one JSON object a line) are written, that writes
the table while the batch finishes its other outputs: the batch and its workers never load the Parquet
libraries.
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from .rows import COLUMNS, LIST_COLUMNS

BATCH_ROWS = 2048  # rows per row group, which the writer holds encoded until it is complete
ARRAY_ROWS = 512  # rows per record batch handed to the writer: the child holds one batch as Python values
ZSTD = "zstd(3)"
_EPOCH = date(1970, 1, 1).toordinal()


def available() -> bool:
    return importlib.util.find_spec("arro3") is not None and importlib.util.find_spec("arro3.io") is not None


class _Table:
    """The schema of ``report.parquet`` and the record batches of rows, built with arro3."""

    def __init__(self) -> None:
        import arro3.core as ac

        self.ac = ac
        self.text, self.int32 = ac.DataType.string(), ac.DataType.int32()
        strings = ac.DataType.list(ac.Field("element", self.text, nullable=True))  # the Parquet LIST layout
        self.types = {"flagged": ac.DataType.bool(), "evidence_count": self.int32, "as_of": ac.DataType.date32(),
                      **{name: strings for name in LIST_COLUMNS}}
        self.schema = ac.Schema([ac.Field(name, self.types.get(name, self.text), nullable=True) for name in COLUMNS])

    def column(self, name: str, values: list[Any]) -> Any:
        ac, kind = self.ac, self.types.get(name, self.text)
        if name in LIST_COLUMNS:
            offsets, flat = [0], []
            for items in values:
                flat.extend(items)
                offsets.append(len(flat))
            return ac.list_array(ac.Array(offsets, self.int32), ac.Array(flat, self.text), type=kind)
        if name == "as_of":  # days since 1970-01-01, the date32 encoding
            days = [None if v is None else date.fromisoformat(v).toordinal() - _EPOCH for v in values]
            return ac.Array(days, self.int32).cast(kind)
        return ac.Array(values, kind)

    def batches(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Any]:
        """Record batches of ``ARRAY_ROWS`` rows, each row put into its columns as it comes (no row kept)."""
        it = iter(rows)
        while True:
            columns: list[list[Any]] = [[] for _ in COLUMNS]
            for row in islice(it, ARRAY_ROWS):
                for values, name in zip(columns, COLUMNS, strict=True):
                    values.append(row[name])
            if not columns[0]:
                return
            arrays = [self.column(name, values) for name, values in zip(COLUMNS, columns, strict=True)]
            yield self.ac.RecordBatch.from_arrays(arrays, schema=self.schema)


def write_rows(rows: Iterable[Mapping[str, Any]], target: Path) -> None:
    """Write ``rows`` (analyst rows, ``as_of`` as ISO text) to ``target`` and flush it to disk."""
    import arro3.io as aio

    table = _Table()
    reader = table.ac.RecordBatchReader.from_batches(table.schema, table.batches(rows))  # pulled a group at a time
    aio.write_parquet(reader, str(target), compression=ZSTD, max_row_group_size=BATCH_ROWS)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _child(channel: Any, prepare: Callable[[], None], rows_path: Path, target: Path) -> None:
    gc.freeze()  # collections here would touch, and so copy, every page of the objects inherited from the parent
    prepare()
    try:
        with open(rows_path, "rb") as f:
            write_rows((orjson.loads(line) for line in f), target)
    except OSError as exc:
        channel.send((exc.errno, exc.strerror or str(exc)))
        sys.exit(1)
    except Exception as exc:  # arro3's own errors (a ValueError or IOError wrapping a full disk, say)
        channel.send((None, str(exc).split("\n")[0][:200]))
        sys.exit(1)
    channel.send(None)


class ParquetChild:
    """A child process that writes ``target`` from the (complete) rows file ``rows_path``; :meth:`wait`
    raises ``OSError`` with the child's reason when it failed. ``prepare`` runs first in the child (e.g. to
    die with the parent). It is forked once the rows are written, when the parent has little left to do:
    pages the parent writes to after the fork are copied, and the child keeps the originals (a child forked
    at the start of a batch ended up with 16-25 MB of such pages). arro3 loads in a few milliseconds, so
    there is nothing to gain from loading it any earlier."""

    def __init__(self, prepare: Callable[[], None], rows_path: Path, target: Path) -> None:
        context = multiprocessing.get_context("fork")
        self._channel, theirs = context.Pipe()
        self.process = context.Process(target=_child, args=(theirs, prepare, rows_path, target), daemon=True)
        self.process.start()
        theirs.close()

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
