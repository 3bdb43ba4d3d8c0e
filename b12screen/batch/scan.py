"""Find the input files of a batch and cut them into units of work.

Plain NDJSON files are split into byte ranges at newline boundaries, so that workers stay balanced even
when one file dominates; gzip files and JSON documents (per-patient Bundles) are read whole. Small pieces
are grouped into units of about ``unit_bytes`` so that many small files do not mean many tiny tasks. Bytes
of a type that costs more to read count for more (``COST_PER_BYTE``): a Patient file's units are smaller.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from ..sources.files import DOCUMENT, GZIP, PLAIN, Discovery, file_kind
from ..sources.lines import next_line_start
from ..sources.reader import EMPTY_FILE, announced_type
from ..sources.unreadable import unreadable_reason


@dataclass(frozen=True, slots=True)
class Piece:
    """A byte range of one file (``end`` -1: to the end). ``index`` numbers the pieces of a file; ``size`` is
    the file's size when the batch was planned (a file that changes size while being read is an error)."""

    file_id: int
    path: str
    kind: str
    start: int
    end: int
    index: int
    file_type: str | None
    size: int = -1


@dataclass(frozen=True, slots=True)
class Unit:
    """A task: consecutive pieces, in file order."""

    id: int
    pieces: tuple[Piece, ...]
    size: int


@dataclass
class Plan:
    """What a batch reads: the files found (``found``, walked once), units of work, the Medication files read
    first, the input errors met so far (the walk's and the planner's) and the bytes to read."""

    found: Discovery
    units: list[Unit] = field(default_factory=list)
    medication_units: list[Unit] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    total_bytes: int = 0

    @property
    def files(self) -> list[str]:
        return self.found.files

    @property
    def deleted_files(self) -> list[str]:
        return self.found.deleted_files

    @property
    def ignored(self) -> list[str]:
        return self.found.ignored


def _split_plain(path: str, size: int, piece_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``piece_bytes`` ending just after a newline (looked for a block at a time: a
    line of any length costs one block of memory)."""
    if size <= piece_bytes:
        return [(0, size)]
    bounds = [0]
    with open(path, "rb") as f:
        target = piece_bytes
        while target < size:
            end = next_line_start(f, target - 1, size)
            if end >= size:
                break
            if end > bounds[-1]:
                bounds.append(end)
            target = max(end, target) + piece_bytes
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def scan(found: Discovery, unit_bytes: int | Callable[[int], int]) -> Plan:
    """Plan the batch over the files ``found`` by :func:`b12screen.sources.files.discover`, in units of
    ``unit_bytes`` (or of ``unit_bytes(total bytes)``)."""
    plan = Plan(found, errors=list(found.errors))
    sized: list[tuple[int, str, int]] = []
    for file_id, name in enumerate(found.files):
        try:
            size = os.path.getsize(name)
        except OSError as exc:
            plan.errors.append(InputError(name, None, unreadable_reason(name, exc)))
            continue
        plan.total_bytes += size
        if size == 0:
            plan.errors.append(InputError(name, None, EMPTY_FILE))
            continue
        sized.append((file_id, name, size))
    if callable(unit_bytes):
        unit_bytes = unit_bytes(plan.total_bytes)
    pieces: list[Piece] = []
    medication: list[Piece] = []
    for file_id, name, size in sized:
        kind = file_kind(name) or DOCUMENT
        base = os.path.basename(name)
        ftype = announced_type(base) if kind != DOCUMENT else None
        if kind == PLAIN:
            try:
                ranges = _split_plain(name, size, max(1, unit_bytes // _weight(ftype)))
            except OSError as exc:
                plan.errors.append(InputError(name, None, f"cannot read file ({exc.strerror or exc})"))
                continue
        else:
            ranges = [(0, -1 if kind == GZIP else size)]
        target = medication if ftype == "Medication" else pieces
        for index, (start, end) in enumerate(ranges):
            target.append(Piece(file_id, name, kind, start, end, index, ftype, size))
    plan.units = _group(pieces, unit_bytes)
    plan.medication_units = _group(medication, unit_bytes, first_id=len(plan.units))
    return plan


#: Relative CPU per byte of reading a file of a type, where it differs much from the rest: each Patient line
#: is parsed in full (every one is evidence), the others mostly end after the header decode. Measured on
#: Synthea Bulk Data: Patient files stream at about 65 MB/s, the other types at 180-340 MB/s.
COST_PER_BYTE = {"Patient": 4}


def _weight(file_type: str | None) -> int:
    return COST_PER_BYTE.get(file_type or "", 1)


def _piece_cost(piece: Piece) -> int:
    return _piece_size(piece) * _weight(piece.file_type)


def unit_cost(unit: Unit) -> int:
    """An estimate of a unit's CPU (its bytes weighted by ``COST_PER_BYTE``), to schedule the dearest first.
    Units are cut to about the same cost, not the same size."""
    return sum(map(_piece_cost, unit.pieces))


def dearest_first(units: Sequence[Unit]) -> list[Unit]:
    """``units`` in the order to schedule them: dearest first, so the last tasks to end are the cheap ones."""
    return sorted(units, key=lambda u: (-unit_cost(u), u.id))


def _piece_size(piece: Piece) -> int:
    if piece.end >= 0:
        return piece.end - piece.start
    try:
        return os.path.getsize(piece.path)
    except OSError:
        return 0


def _group(pieces: list[Piece], unit_bytes: int, first_id: int = 0) -> list[Unit]:
    units: list[Unit] = []
    current: list[Piece] = []
    size = 0
    cost = 0
    for piece in pieces:
        psize = _piece_size(piece)
        pcost = psize * _weight(piece.file_type)
        if current and cost + pcost > unit_bytes:
            units.append(Unit(first_id + len(units), tuple(current), size))
            current, size, cost = [], 0, 0
        current.append(piece)
        size += psize
        cost += pcost
    if current:
        units.append(Unit(first_id + len(units), tuple(current), size))
    return units
