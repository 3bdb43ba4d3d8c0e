"""``report.parquet``: the rows of ``report.csv`` with typed columns (lists as lists), written in batches so
memory stays bounded. Needs pyarrow (the ``parquet`` extra)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from datetime import date
from typing import IO, Any

from .rows import COLUMNS

BATCH_ROWS = 8192


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
