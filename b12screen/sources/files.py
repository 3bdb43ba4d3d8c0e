"""Which files every door reads: suffixes, compression, Bulk Data metadata files and ``deleted/``.

``screen`` and ``batch`` (local and Spark) both call :func:`discover`; a file in an input folder is either
read or named as ignored, never passed over in silence.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError
from . import limits
from .lines import BLOCK, BOM, BadLine, gzip_lines, numbered, plain_lines, stream_lines
from .reader import Entry, read_bytes, read_lines, unwrap
from .unreadable import broken_link_reason, unreadable_reason

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json",)
#: Files of a Bulk Data export folder that hold no FHIR data: the export log and the manifest.
METADATA_NAMES = frozenset({"log.ndjson", "manifest.json"})
#: Bulk Data subfolder listing deleted resources (transaction Bundles of DELETE requests).
DELETED_FOLDER = "deleted"

PLAIN, GZIP, DOCUMENT = "ndjson", "ndjson.gz", "json"
NO_SUCH_PATH = "no such file or folder"
#: What the reader reads, for messages.
READABLE = ".json, .ndjson, .jsonl (each optionally .gz)"


def file_kind(name: str) -> str | None:
    """PLAIN, GZIP (NDJSON), DOCUMENT (JSON, gzip or not) or None: a name the reader does not read."""
    lower = name.lower()
    if lower.endswith(tuple(s + ".gz" for s in NDJSON_SUFFIXES)):
        return GZIP
    if lower.endswith(NDJSON_SUFFIXES):
        return PLAIN
    if lower.endswith(JSON_SUFFIXES) or lower.endswith(tuple(s + ".gz" for s in JSON_SUFFIXES)):
        return DOCUMENT
    return None


@dataclass
class Discovery:
    """The files of some input paths: data files, ``deleted/`` lists, ignored files, errors."""

    files: list[str] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)

    @property
    def missing(self) -> list[InputError]:
        """Errors for paths that do not exist (a usage error before anything is written)."""
        return [e for e in self.errors if e.reason == NO_SUCH_PATH]




def _walk(folder: Path, out: Discovery, chosen: dict[str, str], deleted: dict[str, str]) -> int:
    found = 0
    seen: set[str] = set()  # real folders walked: links to folders are followed, each real folder once
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        hidden = [d for d in dirs if d.startswith(".")]
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        in_deleted = DELETED_FOLDER in Path(root).relative_to(folder).parts
        out.ignored.extend(str(Path(root) / d) + "/" for d in hidden)
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or file_kind(name) is None:
                out.ignored.append(str(path))
                continue
            if name.lower() in METADATA_NAMES:
                out.metadata.append(str(path))
                continue
            found += 1
            (deleted if in_deleted else chosen).setdefault(os.path.realpath(path), str(path))
    return found


def discover(paths: Iterable[str]) -> Discovery:
    """The files under ``paths`` (files or folders, sorted, each once). A missing path, and a folder
    with nothing readable, are errors; a file named on the command line is always read."""
    out = Discovery()
    chosen: dict[str, str] = {}
    deleted: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if not _walk(path, out, chosen, deleted):
                out.errors.append(InputError(raw, None, f"nothing readable in this folder (no {READABLE} files)"))
        elif path.is_file():
            chosen.setdefault(os.path.realpath(path), raw)
        elif path.is_symlink():
            out.errors.append(InputError(raw, None, broken_link_reason(path)))
        else:
            out.errors.append(InputError(raw, None, NO_SUCH_PATH))
    out.files = sorted(set(chosen.values()))
    out.deleted_files = sorted(set(deleted.values()))
    out.ignored.sort()
    return out


def _deleted_refs(value: Any) -> Iterable[str]:
    from .extract import normalize_reference

    for entry in (value.get("entry") or []) if isinstance(value, dict) else []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if isinstance(request, dict) and request.get("method") == "DELETE" and isinstance(request.get("url"), str):
            yield normalize_reference(request["url"].split("?")[0])


def read_deleted(files: Iterable[str]) -> tuple[frozenset[str], list[InputError]]:
    """``Type/id`` of every resource the Bulk Data ``deleted/`` Bundles list (DELETE requests). NDJSON lists
    are read line by line like any NDJSON file (the same line limit, damage reported where it is)."""
    found: set[str] = set()
    errors: list[InputError] = []
    for name in files:
        kind = file_kind(name)
        try:
            lines: Iterable[tuple[int | None, bytes | BadLine]] = (
                numbered(_ndjson_lines(name, kind)) if kind in (PLAIN, GZIP)
                else [(None, unwrap(Path(name).read_bytes(), name))])
            for number, line in lines:
                where = None if number is None else f"line {number}"
                if isinstance(line, BadLine):
                    errors.append(InputError(name, where, line.reason))
                elif line.strip():
                    try:
                        found.update(_deleted_refs(limits.loads(line)))
                    except limits.JSONProblem as exc:
                        errors.append(InputError(name, where, str(exc)))
        except OSError as exc:
            errors.append(InputError(name, None, f"cannot read file ({exc.strerror or exc})"))
        except InputError as error:
            errors.append(error)
    return frozenset(found), errors


def _ndjson_lines(path: str, kind: str | None) -> Iterator[list[bytes | BadLine]]:
    """The line batches of an NDJSON file (``.gz`` too), held to ``limits.line_cap()``; the file's size
    now is the size it must keep while it is read."""
    size = os.path.getsize(path)
    cap = limits.line_cap()
    return gzip_lines(path, cap, size) if kind == GZIP else plain_lines(path, 0, size, cap, size)


def read_file(path: str) -> Iterator[Entry | InputError]:
    """Entries of one file. NDJSON (``.gz`` too) is streamed a line at a time through the line readers
    ``batch`` uses, so every door reads it alike: a line over ``limits.line_cap()`` is refused without being
    held, damaged gzip keeps every line before the damage, a file changing size while read is an error."""
    kind = file_kind(path)
    try:
        if kind in (PLAIN, GZIP):
            yield from read_lines(_ndjson_lines(path, kind), path)
            return
        data = Path(path).read_bytes()
    except OSError as exc:
        yield InputError(path, None, unreadable_reason(path, exc))
        return
    yield from read_bytes(data, path)


def read_path(path: str | Path) -> Iterator[Entry | InputError]:
    """Entries of a file, or of every file :func:`discover` finds in a folder (``deleted/`` lists not
    applied: see :func:`read_inputs`)."""
    found = discover([str(path)])
    yield from found.errors
    for name in found.files:
        yield from read_file(name)


def read_stream(f: BinaryIO, source: str = "<stdin>") -> Iterator[Entry | InputError]:
    """Entries of a stream (stdin). NDJSON, a first line that is JSON on its own with more after it, is read
    line by line under ``limits.line_cap()``; anything else (one document, pretty-printed JSON, gzip) is read
    whole and read as :func:`read_bytes` reads it."""
    cap = limits.line_cap()
    head, ndjson = _sniff(f, cap)
    if ndjson:
        yield from read_lines(stream_lines(f, head, cap), source)
    else:
        yield from read_bytes(head + f.read(), source)


_NOT_SPACE = re.compile(rb"\S")


def _sniff(f: BinaryIO, cap: int) -> tuple[bytes, bool]:
    """(the bytes read, whether the stream is NDJSON), reading no more than needed to tell: the first line and
    the start of the next non-blank one, a line limit and a block at most."""
    head = bytearray(f.read(BLOCK))
    if head[:2] == b"\x1f\x8b":
        return bytes(head), False
    start = end = -1  # the first line: its first non-blank byte, its newline
    at = 3 if head.startswith(BOM) else 0  # where the bytes not looked at yet begin
    while True:
        if start < 0 and (match := _NOT_SPACE.search(head, at)):
            start = match.start()
        if start >= 0 > end:
            end = head.find(b"\n", max(start, at))
        if end >= 0 and (_NOT_SPACE.search(head, max(end + 1, at)) or len(head) - end > cap):
            try:  # a second line, or blank lines past the limit: NDJSON when the first line is JSON
                limits.loads(bytes(head[start:end]))
            except limits.JSONProblem:
                return bytes(head), False
            return bytes(head), True
        if start < 0 and len(head) > cap:
            return bytes(head), True  # blank lines past the limit: read them as lines
        if start >= 0 > end and len(head) - start > cap:
            return bytes(head), False  # a first line over the limit: one document, read whole
        at = len(head)
        block = f.read(BLOCK)
        if not block:
            return bytes(head), False  # one line (or none) and nothing after it: one document
        head += block


@dataclass
class Inputs:
    """What some input paths hold: entries and errors, the deleted resources, what was found."""

    items: list[Entry | InputError]
    deleted: frozenset[str]
    found: Discovery


def read_inputs(paths: Iterable[str], stdin: bytes | BinaryIO | None = None) -> Inputs:
    """Every entry of ``paths`` (and of ``stdin``, its bytes or the stream, named ``<stdin>``), as ``batch``
    reads them."""
    found = discover(paths)
    deleted, errors = read_deleted(found.deleted_files)
    items: list[Entry | InputError] = [*found.errors, *errors]
    if stdin is not None:
        items.extend(read_bytes(stdin, "<stdin>") if isinstance(stdin, bytes) else read_stream(stdin))
    for name in found.files:
        items.extend(read_file(name))
    return Inputs(items, deleted, found)
