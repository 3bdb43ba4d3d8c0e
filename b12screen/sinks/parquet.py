"""``report.parquet``: the rows of ``report.csv`` with typed columns (lists as lists), written in row
groups of ``BATCH_ROWS`` rows so memory stays bounded. Needs arro3 (``arro3-core`` and ``arro3-io``, the
``parquet`` extra), the Rust Arrow and Parquet implementation, much lighter to load than pyarrow (why:
``docs/benchmarks/history.md``).

The batch writes the table from the rows file (one JSON object a line) once the screening is done and its
workers have ended, so they never load the Parquet libraries and the run's peak memory stays that of the
screening.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from .rows import COLUMNS, KINDS, LIST_COLUMNS

BATCH_ROWS = 2048  # rows per row group, which the writer holds encoded until it is complete
ARRAY_ROWS = 512  # rows per record batch handed to the writer: one batch is held as Python values
ZSTD = "zstd(3)"
_EPOCH = date(1970, 1, 1).toordinal()


def _day(value: str | date) -> int:
    return (value if isinstance(value, date) else date.fromisoformat(value)).toordinal()


def available() -> bool:
    return importlib.util.find_spec("arro3") is not None and importlib.util.find_spec("arro3.io") is not None


class _Table:
    """The schema of ``report.parquet`` and the record batches of rows, built with arro3."""

    def __init__(self) -> None:
        import arro3.core as ac

        self.ac = ac
        self.text, self.int32 = ac.DataType.string(), ac.DataType.int32()
        strings = ac.DataType.list(ac.Field("element", self.text, nullable=True))  # the Parquet LIST layout
        arrow = {"text": self.text, "bool": ac.DataType.bool(), "int": ac.DataType.int64(),
                 "float": ac.DataType.float64(), "date": ac.DataType.date32(), "list": strings}
        self.types = {name: arrow[kind] for name, kind in KINDS.items()}
        self.schema = ac.Schema([ac.Field(name, self.types[name], nullable=True) for name in COLUMNS])

    def column(self, name: str, values: list[Any]) -> Any:
        ac, kind = self.ac, self.types[name]
        if name in LIST_COLUMNS:
            offsets, flat = [0], []
            for items in values:
                flat.extend(items)
                offsets.append(len(flat))
            return ac.list_array(ac.Array(offsets, self.int32), ac.Array(flat, self.text), type=kind)
        if KINDS[name] == "date":  # days since 1970-01-01, the date32 encoding
            days = [None if v is None else _day(v) - _EPOCH for v in values]
            return ac.Array(days, self.int32).cast(kind)
        if KINDS[name] == "float":
            values = [None if v is None else float(v) for v in values]
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
    """Write ``rows`` (analyst rows as read from JSON, dates as ISO text) to ``target`` and flush it to disk."""
    import arro3.io as aio

    table = _Table()
    reader = table.ac.RecordBatchReader.from_batches(table.schema, table.batches(rows))  # pulled a group at a time
    aio.write_parquet(reader, str(target), compression=ZSTD, max_row_group_size=BATCH_ROWS)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(rows_path: Path, target: Path) -> None:
    """Write ``target`` from the rows file ``rows_path`` (one JSON object a line); any failure is an
    ``OSError`` whose reason starts with ``report.parquet:``."""
    try:
        with open(rows_path, "rb") as f:
            write_rows((orjson.loads(line) for line in f), target)
    except OSError as exc:
        raise OSError(exc.errno, f"report.parquet: {exc.strerror or exc}") from None
    except Exception as exc:  # arro3's own errors (a ValueError or IOError wrapping a full disk, say)
        raise OSError(None, f"report.parquet: {str(exc).split(chr(10))[0][:200]}") from None
