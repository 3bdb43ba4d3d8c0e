"""Spill files: each unit's partial facts, cut into partitions by a stable hash of the patient key, so
that evaluation holds one partition at a time (memory stays flat as the export grows)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .evaluate import PatientOutput, partition_of
from .stream import Partial

#: (offset, length) of each partition's segment in a unit's spill file.
SpillIndex = list[tuple[int, int]]


def write_spill(path: Path, partials: Mapping[str, Partial], partitions: int) -> SpillIndex:
    buckets: list[dict[str, Partial]] = [{} for _ in range(partitions)]
    for key, partial in partials.items():
        buckets[partition_of(key, partitions)][key] = partial
    index: SpillIndex = []
    with open(path, "wb") as f:
        for bucket in buckets:
            if not bucket:
                index.append((0, 0))
                continue
            data = pickle.dumps(bucket, protocol=pickle.HIGHEST_PROTOCOL)
            index.append((f.tell(), len(data)))
            f.write(data)
    return index


def read_partition(spills: Sequence[tuple[Path, SpillIndex]], partition: int) -> dict[str, list[Partial]]:
    """Every partial of one partition, per key, in unit order."""
    merged: dict[str, list[Partial]] = {}
    for path, index in spills:
        offset, length = index[partition]
        if not length:
            continue
        with open(path, "rb") as f:
            f.seek(offset)
            bucket: dict[str, Partial] = pickle.loads(f.read(length))
        for key, partial in bucket.items():
            merged.setdefault(key, []).append(partial)
    return merged


def write_objects(path: Path, objects: Sequence[Any]) -> None:
    with open(path, "wb") as f:
        for obj in objects:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_objects(path: Path) -> Iterator[Any]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def read_outputs(path: Path) -> Iterator[PatientOutput]:
    yield from read_objects(path)
