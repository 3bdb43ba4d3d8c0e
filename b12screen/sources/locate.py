"""What one patient's answer needs, found without reading the whole input (``b12screen explain``).

Every file is searched for the patient's id as bytes, a chunk at a time (no JSON is parsed; gzip is
undone as a stream): a JSON document (a Bundle) that holds the id is read whole, of an NDJSON file only
the lines that hold it are read, with their own line numbers. When the patient's entry has a fullUrl of
another id (``urn:uuid:x``), the search is made again for both. Medications that the resources found name
(``medicationReference``) but do not define are then searched for the same way, by id, and only
Medication resources are taken from what holds them. An id is matched as a whole word (``p1`` is not
found in ``p10``); an id written with JSON ``\\u`` escapes is not found.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .extract import normalize_reference, resource_ref
from .files import DOCUMENT, discover, file_kind, read_deleted, read_file
from .limits import line_cap
from .reader import Entry, read_bytes

CHUNK = 1 << 20
_ID_CHARS = rb"A-Za-z0-9\-."


class Ids:
    """Some ids, found in bytes as whole ids: not inside a longer run of id characters."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.needles = sorted({i.encode("utf-8", "surrogatepass") for i in ids})
        alternatives = b"|".join(map(re.escape, self.needles))
        self.pattern = re.compile(rb"(?<![%s])(?:%s)(?![%s])" % (_ID_CHARS, alternatives, _ID_CHARS))
        #: Bytes kept from one chunk for the next: the longest id and a byte either side.
        self.overlap = max(map(len, self.needles)) + 2

    def found_in(self, data: bytes, opens: bool = True, closes: bool = True) -> bool:
        """Whether ``data`` holds one of the ids. ``opens``/``closes`` False: ``data`` was cut out of longer
        bytes at its start/end, so a match touching that edge is not sure (the next chunk decides)."""
        if not any(n in data for n in self.needles):  # bytes.find first: far faster than the pattern
            return False
        return any((opens or m.start() > 0) and (closes or m.end() < len(data))
                   for m in self.pattern.finditer(data))


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        while chunk := stream.read(CHUNK):
            yield chunk


def holds(path: str, ids: Ids) -> bool:
    """Whether the file's bytes (gzip undone) hold one of ``ids``."""
    tail, opens = b"", True  # opens: the tail starts at the start of the file
    for chunk in _chunks(path):
        window = tail + chunk
        if ids.found_in(window, opens, closes=False):
            return True
        if len(window) > ids.overlap:
            tail, opens = window[-ids.overlap:], False
        else:
            tail = window
    return ids.found_in(tail, opens)


def matching_lines(path: str, ids: Ids) -> tuple[list[tuple[int, bytes]], list[int]]:
    """(line number, line) of every line holding one of ``ids``, and the numbers of such lines too long to
    keep (over the line limit of every door, :func:`b12screen.sources.limits.line_cap`: searched as they
    stream by, never held)."""
    cap = line_cap()
    found: list[tuple[int, bytes]] = []
    too_long: list[int] = []
    pending = b""
    number = 0  # lines complete so far
    skipping = hit = False  # inside a line too long to keep; whether it holds an id
    for chunk in _chunks(path):
        data = pending + chunk
        if skipping:
            end = data.find(b"\n")
            hit = hit or ids.found_in(data if end < 0 else data[:end], opens=False, closes=end >= 0)
            if end < 0:
                pending = data[-ids.overlap:]  # an id may span two chunks
                continue
            if hit:
                too_long.append(number + 1)
            data, number, skipping = data[end + 1:], number + 1, False
        cut = data.rfind(b"\n") + 1
        body, pending = data[:cut], data[cut:]
        if body and ids.found_in(body):
            for i, line in enumerate(body.split(b"\n")[:-1], start=1):
                if ids.found_in(line):
                    if len(line) > cap:
                        too_long.append(number + i)
                    else:
                        found.append((number + i, line))
        number += body.count(b"\n")
        if len(pending) > cap:
            hit, skipping, pending = ids.found_in(pending, closes=False), True, pending[-ids.overlap:]
    if skipping:
        if hit:
            too_long.append(number + 1)
    elif pending and ids.found_in(pending):
        found.append((number + 1, pending))
    return found, too_long


def sparse(lines: list[tuple[int, bytes]]) -> bytes:
    """The lines at their own line numbers, every other line empty (so a reader numbers them right)."""
    out = bytearray()
    at = 1
    for number, line in lines:
        out += b"\n" * (number - at) + line
        at = number
    return bytes(out)


@dataclass
class Located:
    """Entries and errors of what was read, the deleted resources, how many files were searched, and the
    paths that do not exist (when there are any, nothing is searched)."""

    items: list[Entry | InputError] = field(default_factory=list)
    deleted: frozenset[str] = frozenset()
    searched: int = 0
    missing: list[InputError] = field(default_factory=list)


def _read_matching(name: str, ids: Ids) -> list[Entry | InputError]:
    """What of one file holds one of ``ids``: the whole document, or the NDJSON lines that do."""
    try:
        if file_kind(name) == DOCUMENT:
            return list(read_file(name)) if holds(name, ids) else []
        lines, too_long = matching_lines(name, ids)
    except (OSError, EOFError, zlib.error):  # unreadable or broken gzip: read it to say why
        return list(read_file(name))
    items: list[Entry | InputError] = [InputError(name, f"line {n}", f"line longer than {line_cap()} bytes")
                                       for n in too_long]
    return items + (list(read_bytes(sparse(lines), name)) if lines else [])


def _bare_id(reference: str) -> str:
    """The id part of a reference or fullUrl (``Type/x``, ``urn:uuid:x``, an absolute URL: ``x``)."""
    return normalize_reference(reference).removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def missing_medications(items: Iterable[Entry | InputError]) -> set[str]:
    """The ``medicationReference`` targets of the entries that no Medication among them defines."""
    defined: set[str] = set()
    named: set[str] = set()
    for item in items:
        if not isinstance(item, Entry) or not isinstance(item.resource, dict):
            continue
        resource = item.resource
        if resource.get("resourceType") == "Medication":
            defined.update(filter(None, (resource_ref(resource, item.full_url), item.full_url)))
        reference = resource.get("medicationReference")
        target = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(target, str) and target and not target.startswith("#"):
            named.add(target)
    return {t for t in named if t not in defined and normalize_reference(t) not in defined}


def _defines(item: Entry | InputError, targets: set[str]) -> bool:
    """Whether ``item`` is a Medication that one of ``targets`` names."""
    if not isinstance(item, Entry) or not isinstance(item.resource, dict):
        return False
    if item.resource.get("resourceType") != "Medication":
        return False
    return bool({resource_ref(item.resource, item.full_url), item.full_url} & targets)


def _aliases(patient_id: str, items: list[Entry | InputError]) -> set[str]:
    """The ids in the fullUrls of the entries of Patient ``patient_id`` (``urn:uuid:x``: ``x``)."""
    return {_bare_id(item.full_url) for item in items
            if isinstance(item, Entry) and item.full_url and isinstance(item.resource, dict)
            and item.resource.get("resourceType") == "Patient" and item.resource.get("id") == patient_id}


def locate(paths: Iterable[str], patient_id: str) -> Located:
    """The entries ``b12screen explain`` needs for the patient ``patient_id`` (a bare id) from ``paths``,
    with the errors met in what was read."""
    found = discover(paths)
    if found.missing:
        return Located(missing=found.missing)
    deleted, deleted_errors = read_deleted(found.deleted_files)
    out = Located(items=[*found.errors, *deleted_errors], deleted=deleted, searched=len(found.files))
    ids = {patient_id}
    by_file = {name: _read_matching(name, Ids(ids)) for name in found.files}
    aliases = _aliases(patient_id, [item for items in by_file.values() for item in items])
    if aliases - ids:  # resources elsewhere may name the patient by its fullUrl alone: search again for both
        ids |= aliases
        by_file = {name: _read_matching(name, Ids(ids)) for name in found.files}
    wanted = missing_medications(item for items in by_file.values() for item in items)
    if wanted:
        wanted |= {normalize_reference(t) for t in wanted}
        medications = Ids(_bare_id(t) for t in wanted)
        for name in found.files:
            if file_kind(name) == DOCUMENT and by_file[name]:
                continue  # read whole already: it defines none of them
            by_file[name] += [item for item in _read_matching(name, medications) if _defines(item, wanted)]
    for name in found.files:
        out.items.extend(by_file[name])
    return out
