"""Bounds on hostile input, shared by every reader (files, batch, the CDS service, the FHIR client).

- :data:`MAX_DEPTH`: JSON nesting deeper than this is refused (no FHIR resource comes close; Python
  recursion in decoders and validators would not survive much more).
- :func:`loads`: ``orjson.loads`` that refuses deep nesting and turns every decode failure (bad JSON,
  a number that overflows a double, recursion) into one :class:`JSONProblem` with a short reason.
- :func:`gunzip_bounded`: streamed gzip decompression with a cap on the expanded size.
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Any

import orjson

#: Deepest JSON nesting (objects and arrays) accepted anywhere.
MAX_DEPTH = 64
#: Largest expanded size of one compressed document read whole (``.json.gz``, any gzip input of
#: ``screen``); ``B12SCREEN_MAX_EXPANDED_BYTES`` overrides it.
MAX_DOCUMENT_BYTES = 256 << 20
#: A streamed gzip file (batch ``.ndjson.gz``) expanding more than this many times its compressed size,
#: once past :data:`RATIO_FLOOR` bytes, is a decompression bomb (FHIR NDJSON compresses 10-30 times).
MAX_RATIO = 200
RATIO_FLOOR = 16 << 20
_CHUNK = 1 << 18
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def document_cap() -> int:
    """The expanded-size cap for documents: ``B12SCREEN_MAX_EXPANDED_BYTES`` or the default."""
    raw = os.environ.get("B12SCREEN_MAX_EXPANDED_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_DOCUMENT_BYTES


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


def depth(data: bytes) -> int:
    """Deepest nesting of objects and arrays in JSON text (brackets inside strings do not count)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return 0 if b"[" not in data and b"{" not in data else min(MAX_DEPTH, _scan(data))
    return _scan(data)


def _scan(data: bytes) -> int:
    level = deepest = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            level += 1
            if level > deepest:
                deepest = level
        elif token in (b"]", b"}"):
            level -= 1
    return deepest


def check_depth(data: bytes) -> None:
    """Raise :class:`JSONProblem` when ``data`` nests deeper than :data:`MAX_DEPTH`."""
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _scan(data) > MAX_DEPTH:
        raise JSONProblem(f"JSON nested more than {MAX_DEPTH} levels deep")


def loads(data: bytes | str) -> Any:
    """Parse JSON with the depth bound; every failure is a :class:`JSONProblem`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    check_depth(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JSONProblem(f"malformed JSON ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise JSONProblem(f"JSON nested more than {MAX_DEPTH} levels deep") from None


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
