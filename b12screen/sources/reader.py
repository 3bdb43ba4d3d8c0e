"""Read FHIR JSON in every shape users have: Bundles of any type, single resources, JSON arrays and
NDJSON (optionally gzip-compressed), from files or stdin. Yields entries and per-item errors; one bad
item never stops the rest."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..errors import InputError
from . import limits
from .lines import BadLine, bounded, numbered


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource read from the input, with where it came from."""

    resource: Any
    source: str
    location: str
    full_url: str | None = None


#: The reason given for an input with no bytes (or only whitespace): nothing readable.
EMPTY_FILE = "nothing readable (empty)"


def _join(prefix: str, part: str) -> str:
    return f"{prefix} {part}" if prefix else part


def read_value(value: Any, source: str, location: str = "", *, checked: bool = False,
               _level: int = 0) -> Iterator[Entry | InputError]:
    """Entries of a parsed JSON value: a Bundle's entries (recursively), an array's items, a resource.

    No resource nested deeper than :data:`~b12screen.sources.limits.MAX_DEPTH` is yielded: each is one
    error naming its entry and type, and the others are read. ``checked``: the caller has measured the
    whole value within that depth (nothing left to measure)."""
    if not checked:
        checked = not isinstance(value, (list, dict)) or limits.value_within(value)
    if isinstance(value, list) or (isinstance(value, dict) and value.get("resourceType") == "Bundle"):
        if _level >= limits.MAX_DEPTH:  # only a document deeper than any resource gets here: no recursion
            yield InputError(source, location or None, f"Bundles and arrays nested more than {_level} deep")
        else:
            yield from _read_container(value, source, location, checked, _level + 1)
        return
    if not checked:
        yield InputError(source, location or "resource", limits.nesting_reason(value))
        return
    yield Entry(value, source, location or "resource")


def _read_container(value: Any, source: str, location: str, checked: bool,
                    level: int) -> Iterator[Entry | InputError]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from read_value(item, source, _join(location, f"[{i}]"), checked=checked, _level=level)
        return
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        yield InputError(source, location or None, "Bundle.entry is not a list")
        return
    for i, entry in enumerate(entries):
        where = _join(location, f"entry[{i}]")
        if not isinstance(entry, dict):
            yield InputError(source, where, "bundle entry is not a JSON object")
            continue
        resource = entry.get("resource")
        if resource is None:
            if "request" in entry or "response" in entry:
                continue  # a transaction/batch entry without a body (e.g. DELETE) carries no data
            yield InputError(source, where, "bundle entry has no resource")
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            yield from read_value(resource, source, where, checked=checked, _level=level)
        elif checked or limits.value_within(resource):
            yield Entry(resource, source, where, full_url)
        else:
            yield InputError(source, where, limits.nesting_reason(resource))


def _is_ndjson_name(source: str) -> bool:
    name = source.lower()
    return name.endswith((".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"))


def announced_type(name: str) -> str | None:
    """The resource type a Bulk Data file name announces (``Patient.000.ndjson``, ``1.Patient.ndjson``).

    Every door that reads NDJSON files holds their lines to it: a resource of another type is an input
    error naming the line (a Bulk Data file holds the resources of one type)."""
    parts = os.path.basename(name).split(".")
    for part in parts[:-1]:
        if part in R4_RESOURCE_TYPES:
            return part
    return None


def misfiled(found: str, announced: str) -> str:
    """The reason given for a ``found`` resource in a file announcing ``announced`` resources."""
    return f"a {found} resource in a file of {announced} resources"


def type_mismatch(value: Any, announced: str | None) -> str | None:
    """The reason a line's value does not belong in a file of ``announced`` resources, else None."""
    if announced is None or not isinstance(value, dict):
        return None
    found = value.get("resourceType")
    if isinstance(found, str) and found in R4_RESOURCE_TYPES and found != announced:
        return misfiled(found, announced)
    return None


def read_lines(batches: Iterable[list[bytes | BadLine]], source: str) -> Iterator[Entry | InputError]:
    """Entries of NDJSON lines, in batches as :mod:`b12screen.sources.lines` yields them, numbered from 1. An
    unreadable line (a :class:`BadLine`: too long, where gzip data broke off, where the file changed size) is
    an error naming it; only blank lines is nothing readable."""
    announced = announced_type(source) if _is_ndjson_name(source) else None
    readable = False
    for number, line in numbered(batches):
        if isinstance(line, BadLine):
            readable = True
            yield InputError(source, f"line {number}", line.reason)
            continue
        if not line.strip():
            continue
        readable = True
        yield from _read_line(line, source, number, announced)
    if not readable:
        yield InputError(source, None, EMPTY_FILE)


def _read_line(line: bytes, source: str, number: int, announced: str | None) -> Iterator[Entry | InputError]:
    try:
        value = limits.loads(line)
    except limits.JSONProblem as exc:
        yield InputError(source, f"line {number}", str(exc))
        return
    mismatch = type_mismatch(value, announced)
    if mismatch is not None:
        yield InputError(source, f"line {number}", mismatch)
        return
    yield from read_value(value, source, f"line {number}", checked=True)  # loads measured the line


def _split_lines(data: bytes, source: str) -> Iterator[Entry | InputError]:
    """NDJSON held in memory (stdin, a document that turned out to be NDJSON), lines held to the limit."""
    return read_lines([bounded(data.split(b"\n"), limits.line_cap())], source)


def short_reason(exc: Exception) -> str:
    """The first line of an exception's message, bounded (no input data follows it)."""
    return str(exc).split("\n")[0][:120]


def unwrap(data: bytes, source: str) -> bytes:
    """An input's bytes with gzip (recognised by its magic number) undone and a UTF-8 BOM dropped."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = limits.gunzip_bounded(data, limits.document_cap())
        except limits.JSONProblem as exc:
            raise InputError(source, None, str(exc)) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(source, None, f"unreadable gzip data ({short_reason(exc)})") from None
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def read_bytes(data: bytes, source: str) -> Iterator[Entry | InputError]:
    """Entries of one input's bytes. NDJSON is recognised by name or, failing whole-document JSON,
    by having several lines."""
    try:
        data = unwrap(data, source)
    except InputError as error:
        yield error
        return
    if not data.strip():
        yield InputError(source, None, EMPTY_FILE)
        return
    if _is_ndjson_name(source):
        yield from _split_lines(data, source)
        return
    try:
        value = limits.loads_document(data)
    except limits.JSONProblem as exc:
        if data.strip().count(b"\n") >= 1:
            yield from _split_lines(data, source)
        else:
            yield InputError(source, None, str(exc))
        return
    yield from read_value(value, source, checked=limits.depth(data, limits.MAX_DEPTH) <= limits.MAX_DEPTH)
