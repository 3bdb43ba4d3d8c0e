"""Bounds on hostile input, shared by every reader (files, batch, the CDS service, the FHIR client).

- :data:`MAX_DEPTH`: a resource (an NDJSON line, a Bundle entry) nesting deeper than this is refused, that
  resource only (no FHIR resource comes close; Python recursion in validators would not survive much more).
- :data:`HARD_DEPTH`: a whole document nesting deeper than this is refused (orjson's own limit).
- :func:`loads` / :func:`loads_document`: ``orjson.loads`` with those bounds, every decode failure (bad
  JSON, a number that overflows a double, nesting) one :class:`JSONProblem` with a short reason
  (:class:`TooDeep` for nesting).
- :func:`depth`: nesting measured on JSON text with C-speed byte operations (no Python loop per byte).
- :func:`gunzip_bounded`: streamed gzip decompression with a cap on the expanded size.
- :func:`line_cap`: the longest NDJSON line any door reads (longer ones are refused, never held whole).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from ..core.fhirtypes import R4_RESOURCE_TYPES

#: Deepest nesting (objects and arrays) of one resource: an NDJSON line, a Bundle entry, an array item.
MAX_DEPTH = 64
#: Largest expanded size of one compressed document read whole (``.json.gz``, any gzip input of
#: ``screen``); ``B12SCREEN_MAX_EXPANDED_BYTES`` overrides it.
MAX_DOCUMENT_BYTES = 256 << 20
#: A streamed gzip file (batch ``.ndjson.gz``) expanding more than this many times its compressed size,
#: once past :data:`RATIO_FLOOR` bytes, is a decompression bomb (FHIR NDJSON compresses 10-30 times).
MAX_RATIO = 200
RATIO_FLOOR = 16 << 20
#: Longest NDJSON line read, in bytes; ``B12SCREEN_MAX_LINE_BYTES`` overrides it.
MAX_LINE_BYTES = 64 << 20
_CHUNK = 1 << 18
#: A document (a Bundle, an array) nesting deeper than this is refused whole: orjson's own limit.
HARD_DEPTH = 1024
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def document_cap() -> int:
    """The expanded-size cap for documents: ``B12SCREEN_MAX_EXPANDED_BYTES`` or the default."""
    return _bytes_setting("B12SCREEN_MAX_EXPANDED_BYTES", MAX_DOCUMENT_BYTES)


def _bytes_setting(name: str, default: int) -> int:
    """A positive number of bytes from the environment variable ``name``, else ``default``."""
    raw = os.environ.get(name, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def line_cap() -> int:
    """The line limit: ``B12SCREEN_MAX_LINE_BYTES`` or :data:`MAX_LINE_BYTES`."""
    return _bytes_setting("B12SCREEN_MAX_LINE_BYTES", MAX_LINE_BYTES)


def bomb_reason(expanded: int, compressed: int, then: str = "rest of file skipped") -> str | None:
    """Why a streamed gzip file (or gzip-encoded download) is refused after ``expanded`` bytes out of
    ``compressed`` bytes read; ``then`` says what happens to it."""
    if expanded > document_cap() * 64:
        return f"gzip data expands to more than {document_cap() * 64} bytes"
    if expanded > RATIO_FLOOR and expanded > MAX_RATIO * max(compressed, 1):
        return f"gzip data expands more than {MAX_RATIO} times (a decompression bomb); {then}"
    return None


class JSONProblem(ValueError):
    """JSON that cannot be used; ``str()`` is the reason for an error row."""


class TooDeep(JSONProblem):
    """JSON nested beyond a depth bound (the other problems: bad JSON, a number a double cannot hold)."""


def depth(data: bytes, limit: int = HARD_DEPTH) -> int:
    """Deepest nesting of objects and arrays in JSON text (brackets inside strings do not count), or
    ``limit + 1`` when deeper than ``limit`` (or unbalanced). C-speed byte operations only: escape
    sequences dropped, everything but brackets and quotes deleted, strings that hold no bracket (``""``
    by now) removed, the rest of the strings cut out, then innermost ``[]`` pairs peeled off one level
    per pass."""
    if b"[" not in data and b"{" not in data:
        return 0
    first = data.find(b"\\")
    if first < 0:
        marks = data.translate(_SQUARE, _NOT_MARKS)
    else:  # escapes are few and close together (a narrative): rewrite that stretch only
        last = data.rfind(b"\\") + 2
        parts = (data[:first], _ESCAPE.sub(b"", data[first:last]), data[last:])
        marks = b"".join(part.translate(_SQUARE, _NOT_MARKS) for part in parts)
    marks = marks.replace(b'""', b"")
    if b'"' in marks:  # strings holding brackets ("[Epogen]"): keep what lies between them
        marks = b"".join(marks.split(b'"')[::2])
    level = 0
    while marks:
        if level >= limit:
            return limit + 1
        peeled = marks.replace(b"[]", b"")
        if len(peeled) == len(marks):
            return limit + 1  # unbalanced: not JSON, whatever a parser says of it
        marks, level = peeled, level + 1
    return level


def what(value: Any) -> str:
    """How an error names a JSON value: its resourceType when it is a known one, else ``JSON``."""
    kind = value.get("resourceType") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) and kind in R4_RESOURCE_TYPES else "JSON"


def nesting_reason(value: Any, limit: int = MAX_DEPTH) -> str:
    """The reason given for a value nested beyond ``limit``, naming its resource type."""
    return f"{what(value)} nested more than {limit} levels deep"


def value_within(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests at most ``limit`` levels: orjson's serialisation measured at byte
    level (C speed), or, for what orjson will not serialise, the iterative :func:`too_deep`."""
    try:
        data = orjson.dumps(value)
    except TypeError:  # orjson stops at 255 levels, and at types JSON does not have
        return not too_deep(value, limit)
    return depth(data, limit) <= limit


def _decode(raw: bytes, too_deep_reason: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).splitlines()[0]
        if reason.startswith("depth limit exceeded"):
            raise TooDeep(too_deep_reason) from None
        raise JSONProblem(f"malformed JSON ({reason[:120]})") from None


def loads(data: bytes | str) -> Any:
    """Parse one resource's JSON (an NDJSON line, a fetched resource): every failure, and nesting beyond
    :data:`MAX_DEPTH`, is a :class:`JSONProblem` whose reason names the resource type when it is known."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    value = _decode(raw, f"JSON nested more than {MAX_DEPTH} levels deep")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and depth(raw, MAX_DEPTH) > MAX_DEPTH:
        raise TooDeep(nesting_reason(value))
    return value


def loads_document(data: bytes) -> Any:
    """Parse a whole document (a Bundle, an array) bounded only by orjson's own :data:`HARD_DEPTH`:
    the depth of each entry is :func:`b12screen.sources.reader.read_value`'s to check, so that one
    hostile entry costs that entry only."""
    return _decode(data, f"JSON document nested more than {HARD_DEPTH} levels deep")


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip data (one or more members) without ever expanding more than ``limit`` bytes.

    Raises :class:`JSONProblem` past the limit or the bomb ratio, and ``zlib.error``/``EOFError`` for corrupt or
    truncated data."""
    out: list[bytes] = []
    size = 0
    pending = data
    while pending:
        decomp = zlib.decompressobj(31)
        while True:
            chunk = decomp.decompress(pending, _CHUNK)
            size += len(chunk)
            if size > limit:
                raise JSONProblem(f"gzip data expands to more than {limit} bytes")
            if size > RATIO_FLOOR and size > MAX_RATIO * (len(data) - len(decomp.unconsumed_tail)):
                raise JSONProblem(f"gzip data expands more than {MAX_RATIO} times (a decompression bomb)")
            out.append(chunk)
            pending = decomp.unconsumed_tail
            if decomp.eof:
                break
            if not pending:
                raise EOFError("compressed data ended before the end-of-stream marker")
        pending = decomp.unused_data.lstrip(b"\x00")
    return b"".join(out)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests objects/arrays more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    children: Iterable[Any]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return False
