"""Line readers shared by every door: a byte range of a plain NDJSON file, or a whole gzip file member by member.

Both yield batches (lists) of ``bytes`` lines (without the newline), where a :class:`BadLine` stands for
one unreadable line (too long, where gzip data broke off, where a file that changed size while being read
stops being trusted). Memory stays bounded by the block size and the line limit: a line over the limit is
skipped without ever being held whole.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .limits import bomb_reason

BLOCK = 1 << 18  # lines are decoded while they are still in the CPU cache
GZIP_BLOCK = 1 << 18
GZIP_MAGIC = b"\x1f\x8b\x08"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class BadLine:
    """An unreadable line: its number is the position where it is yielded."""

    reason: str


def too_long(max_line: int) -> BadLine:
    """The problem of a line over ``max_line`` bytes."""
    return BadLine(f"line longer than {max_line} bytes")


class _Splitter:
    """Split a stream of blocks into batches of lines, replacing lines over ``max_line`` bytes by a
    BadLine."""

    def __init__(self, max_line: int, at_start: bool = True) -> None:
        self.max_line = max_line
        self.at_start = at_start  # a byte order mark may open the data
        self.carry: list[bytes] = []
        self.carry_len = 0
        self.oversize = False

    def _too_long(self) -> BadLine:
        return too_long(self.max_line)

    def feed(self, data: bytes) -> list[bytes | BadLine]:
        if self.at_start:
            self.at_start = False
            if data.startswith(BOM):
                data = data[3:]
        parts: list[bytes | BadLine] = data.split(b"\n")  # type: ignore[assignment]
        last: bytes = parts.pop()  # type: ignore[assignment]
        if parts:
            if len(data) > self.max_line:
                parts = [self._too_long() if len(p) > self.max_line else p for p in parts]  # type: ignore[arg-type]
            if self.carry or self.oversize:
                parts[0] = self._finish(parts[0])
        if last:
            if self.carry_len + len(last) > self.max_line:
                self.oversize = True
                self.carry, self.carry_len = [], 0
            elif not self.oversize:
                self.carry.append(last)
                self.carry_len += len(last)
        return parts

    def _finish(self, tail: bytes | BadLine) -> bytes | BadLine:
        oversize = self.oversize or isinstance(tail, BadLine) or self.carry_len + len(tail) > self.max_line
        line = b"" if oversize else b"".join([*self.carry, tail])  # type: ignore[list-item]
        self.carry, self.carry_len, self.oversize = [], 0, False
        return self._too_long() if oversize else line

    def pending(self) -> bool:
        return bool(self.carry) or self.oversize

    def end(self) -> list[bytes | BadLine]:
        return [self._finish(b"")] if self.pending() else []

    def drop(self) -> None:
        self.carry, self.carry_len, self.oversize = [], 0, False


CHANGED_SIZE = "file changed size while being read"


def changed_size(planned: int, now: int) -> BadLine:
    """The problem of a file that was ``planned`` bytes when reading began and is ``now`` bytes."""
    return BadLine(f"{CHANGED_SIZE} ({planned} bytes, then {now}); the rest of it was not read")


def _size_problem(f: BinaryIO, size: int | None) -> BadLine | None:
    """A :func:`changed_size` problem when the open file ``f`` is no longer ``size`` bytes."""
    now = os.fstat(f.fileno()).st_size
    return None if size is None or now == size else changed_size(size, now)


def plain_lines(path: str, start: int, end: int, max_line: int,
                size: int | None = None) -> Iterator[list[bytes | BadLine]]:
    """Batches of lines of ``path[start:end]`` (the range starts at a line start and ends after a newline
    or at the end of the file). ``size`` is the file's size when the read was planned: a range cut short,
    or a file whose size differs once its last range is read, ends with a :func:`changed_size` problem."""
    splitter = _Splitter(max_line, start == 0)
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        while remaining > 0:
            data = f.read(min(BLOCK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield splitter.feed(data)
        problem = None
        if remaining > 0:  # cut short
            problem = changed_size(end if size is None else size, os.fstat(f.fileno()).st_size)
        elif size is not None and end >= size:  # the last range: the file must still end where it did
            problem = _size_problem(f, size)
    if problem is not None:
        splitter.drop()  # a line cut short is no line
        yield [problem]
        return
    yield splitter.end()


def stream_lines(f: BinaryIO, head: bytes, max_line: int) -> Iterator[list[bytes | BadLine]]:
    """Batches of lines of ``head``, the bytes already read from the stream ``f`` (stdin), then of the rest
    of it, a block at a time."""
    splitter = _Splitter(max_line)
    data = head
    while data:
        yield splitter.feed(data)
        data = f.read(BLOCK)
    yield splitter.end()


def numbered(batches: Iterable[list[bytes | BadLine]]) -> Iterator[tuple[int, bytes | BadLine]]:
    """Each line of ``batches`` with its number in the file, from 1."""
    return enumerate(itertools.chain.from_iterable(batches), start=1)


def bounded(lines: Iterable[bytes], max_line: int) -> list[bytes | BadLine]:
    """Lines already in memory (a document read whole that turned out to be NDJSON), held to the limit."""
    problem = too_long(max_line)
    return [problem if len(line) > max_line else line for line in lines]


def next_line_start(f: BinaryIO, offset: int, size: int) -> int:
    """The file offset just after the first newline at or after ``offset`` (``size`` if none): found a block
    at a time, so a line of any length costs one block of memory (the first reads are small: most lines are)."""
    f.seek(offset)
    step = 8192
    while offset < size:
        block = f.read(step)
        if not block:
            return size
        at = block.find(b"\n")
        if at >= 0:
            return offset + at + 1
        offset += len(block)
        step = min(step * 2, BLOCK)
    return size


def _find_magic(f: BinaryIO, offset: int) -> int | None:
    """File offset of the next gzip header magic at or after ``offset``."""
    f.seek(offset)
    overlap = b""
    base = offset
    while True:
        block = f.read(BLOCK)
        if not block:
            return None
        data = overlap + block
        at = data.find(GZIP_MAGIC)
        if at >= 0:
            return base - len(overlap) + at
        overlap = data[-(len(GZIP_MAGIC) - 1):]
        base += len(block)


def gzip_lines(path: str, max_line: int, size: int | None = None) -> Iterator[list[bytes | BadLine]]:
    """Batches of lines of a gzip file of one or more members. A corrupt member (trailing garbage too) is reported
    and reading resumes at the next member; data cut short is reported where it stops, as a :func:`changed_size`
    problem when the file is no longer ``size`` bytes (its size when the read was planned). Output is expanded a
    block at a time, and a file expanding like a decompression bomb is reported and left (``limits.bomb_reason``)."""
    splitter = _Splitter(max_line)
    members = expanded = 0  # members started, bytes expanded
    with open(path, "rb") as f:
        decomp = zlib.decompressobj(31)
        started = resyncing = produced = False
        member_start = pending_at = 0
        pending = b""  # compressed bytes not yet fed; pending_at is the file offset of pending[0]
        while True:
            if not started and pending[:1] == b"\x00":
                stripped = pending.lstrip(b"\x00")  # NUL padding after a member
                pending_at += len(pending) - len(stripped)
                pending = stripped
            if not pending:
                pending_at = f.tell()
                pending = f.read(GZIP_BLOCK)
                if not pending:
                    break
                continue
            if not started:
                started, produced = True, False
                members += 1
                member_start = pending_at
            try:
                out = decomp.decompress(pending, BLOCK)
            except zlib.error as exc:
                nxt = _find_magic(f, member_start + 1)
                if not resyncing or produced:
                    splitter.drop()
                    rest = "the rest of the file skipped" if nxt is None else "skipped to the next member"
                    yield [BadLine(f"corrupt gzip data in member {members} ({exc}); {rest}")]
                if nxt is None:
                    return
                f.seek(nxt)
                pending, started, resyncing = b"", False, True
                decomp = zlib.decompressobj(31)
                continue
            if out:
                produced = True
                expanded += len(out)
                reason = bomb_reason(expanded, f.tell())
                if reason is not None:
                    splitter.drop()
                    yield [BadLine(reason)]
                    return
                yield splitter.feed(out)
            if decomp.eof:
                unused = decomp.unused_data
                pending_at += len(pending) - len(unused)
                pending = unused
                decomp = zlib.decompressobj(31)
                started = resyncing = False
            else:
                tail = decomp.unconsumed_tail
                pending_at += len(pending) - len(tail)
                pending = tail
        problem = _size_problem(f, size)
        if started:
            splitter.drop()
            yield [problem or BadLine(f"gzip data ends in the middle of member {members} (truncated file)")]
            return
        if problem is not None:
            splitter.drop()
            yield [problem]
            return
        yield splitter.end()
