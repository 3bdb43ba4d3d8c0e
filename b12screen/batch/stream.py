"""Stream one unit of input into compact per-patient facts.

Each NDJSON line is decoded into a small header and tested for relevance by
:mod:`b12screen.sources.relevance` (the one place that decides it), so irrelevant resources never become
Python objects. Only resources whose codes match a value set are parsed fully (orjson) and reduced to facts by
:class:`b12screen.sources.extract.Extractor`; their raw JSON is kept so the ones that become evidence can be
validated with fhir.resources later (:mod:`b12screen.batch.evaluate`). Anything unusual (arrays,
Bundles, bad types, bad JSON) falls back to the general path with ``screen``'s semantics.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.facts import MEDICATION_TYPES, PatientFact
from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..core.pickling import positional_pickle
from ..core.terminology import Terminology
from ..sources import limits, read_value
from ..sources.extract import (
    PATIENT_SCOPED_TYPES,
    UNDERSTOOD_TYPES,
    Extractor,
    Fact,
    ResourceProblem,
    check_resource_type,
    names_other_medication,
    patient_reference,
    resource_ref,
)
from ..sources.files import DOCUMENT, GZIP
from ..sources.grouping import BundleIndex, patient_key, patient_resource_key
from ..sources.lines import BadLine, bounded, gzip_lines, plain_lines
from ..sources.reader import EMPTY_FILE, misfiled
from ..sources.relevance import (
    CACHE_LIMIT,
    HEAD_ERRORS,
    NO_REFERENCE,
    ConceptMatcher,
    decode_head,
    is_relevant,
    relevant_indices,
    typed_decoder,
)
from ..sources.unreadable import unreadable_reason
from .bundles import BundleReading
from .scan import Piece, Unit

#: Where a fact or error came from: (file id, piece index, line within the piece or None, location).
Pos = tuple[int, int, int | None, str | None]
#: Stands for "line N" in evidence names of resources without id, until the line's number is known.
LINE_MARK = "\x00line\x00"
_FAST_TYPES = R4_RESOURCE_TYPES - {"Bundle"}
_MISSING: Any = object()
_SPECIAL_TYPES = frozenset({"Patient", "Medication"})


@positional_pickle
@dataclass(slots=True)
class Partial:
    """What one unit knows about one patient: resource count, Patient facts, facts of Bundle entries
    (with their raw JSON and position), and the raw NDJSON lines a rule may use, extracted at evaluation
    time when the whole Medication pool is known (raw bytes pickle far faster than facts), as are the
    Bundle entries naming a Medication their Bundle does not hold (``pending``: raw JSON, name, position)."""

    resources: int = 0
    patients: list[PatientFact] = field(default_factory=list)
    facts: list[tuple[Fact, bytes, Pos]] = field(default_factory=list)
    lines: list[tuple[bytes, Pos]] = field(default_factory=list)
    pending: list[tuple[bytes, str, Pos]] = field(default_factory=list)


@dataclass
class UnitOutput:
    """The result of streaming one unit."""

    unit: int
    partials: dict[str, Partial] = field(default_factory=dict)
    errors: list[tuple[Pos, str]] = field(default_factory=list)
    lines: list[tuple[int, int, int]] = field(default_factory=list)  # (file id, piece index, lines)
    resources: int = 0
    bytes: int = 0
    medications: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def summary(self, carry_errors: bool, spill: list[Any] | None = None) -> UnitSummary:
        """What the driver keeps of this unit: its errors themselves when ``carry_errors`` (Spark), else only
        their count (the local engine keeps them in the work folder beside the ``spill`` index)."""
        return UnitSummary(self.unit, self.lines, self.resources, self.bytes, self.medications, len(self.errors),
                           self.errors if carry_errors else [], spill or [])


@dataclass
class UnitSummary:
    """What the driver keeps of a streamed unit, whichever engine streamed it (the facts stay where the
    engine put them): line counts per piece, resources and bytes read, its Medications for the pool, how
    many input errors it met (and the errors, where the engine carries them back), and its spill index."""

    unit: int
    lines: list[tuple[int, int, int]]
    resources: int
    bytes: int
    medications: list[tuple[str, dict[str, Any]]]
    error_count: int = 0
    errors: list[tuple[Pos, str]] = field(default_factory=list)
    spill: list[Any] = field(default_factory=list)


@dataclass
class StreamContext:
    """What streaming needs: the extractor (no validation), the Medication pool read so far, the
    deleted-resource list and the line limit."""

    extractor: Extractor
    pool: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()
    max_line: int = field(default_factory=limits.line_cap)
    matcher: ConceptMatcher = field(init=False)
    key_cache: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matcher = ConceptMatcher(self.extractor.terminology)

    @property
    def terminology(self) -> Terminology:
        return self.extractor.terminology


#: What a batch of header decodes may raise: a bad line, or a reference that is not hashable.
_HEAD_OR_TYPE_ERRORS: tuple[type[Exception], ...] = (*HEAD_ERRORS, TypeError)


class UnitReader(BundleReading):
    """Streams the pieces of one unit into a :class:`UnitOutput`."""

    def __init__(self, ctx: StreamContext, unit: Unit) -> None:
        self.ctx = ctx
        self.unit = unit
        self.out = UnitOutput(unit.id)
        self.piece: Piece = unit.pieces[0]

    # -- bookkeeping -------------------------------------------------------------------------

    def _error(self, line: int | None, location: str | None, reason: str) -> None:
        self.out.errors.append(((self.piece.file_id, self.piece.index, line, location), reason))

    def _partial(self, key: str) -> Partial:
        partial = self.out.partials.get(key)
        if partial is None:
            partial = self.out.partials[key] = Partial()
        return partial

    def _key(self, reference: str) -> str | None:
        cache = self.ctx.key_cache
        key = cache.get(reference, _MISSING)
        if key is _MISSING:
            key = patient_key(reference)
            if len(cache) > CACHE_LIMIT:
                cache.clear()
            cache[reference] = key
        return key

    # -- pieces ------------------------------------------------------------------------------

    def run(self) -> UnitOutput:
        self.out.bytes = self.unit.size
        for piece in self.unit.pieces:
            self.piece = piece
            try:
                if piece.kind == DOCUMENT:
                    self._document()
                    count = 0
                else:
                    before = (len(self.out.errors), self.out.resources)
                    count = self._lines()
                    if (len(self.out.errors), self.out.resources) == before and self._whole_file():
                        self._error(None, None, EMPTY_FILE)  # only blank lines: nothing readable
            except OSError as exc:
                if piece.index == 0 or not isinstance(exc, (FileNotFoundError, PermissionError)):  # once per file
                    self._error(None, None, unreadable_reason(piece.path, exc))
                count = 0
            self.out.lines.append((piece.file_id, piece.index, count))
        return self.out

    def _whole_file(self) -> bool:
        piece = self.piece
        return piece.kind == GZIP or (piece.start == 0 and piece.end == os.path.getsize(piece.path))

    def _line_source(self) -> Iterator[list[bytes | BadLine]]:
        piece = self.piece
        size = piece.size if piece.size >= 0 else None
        if piece.kind == GZIP:
            return gzip_lines(piece.path, self.ctx.max_line, size)
        return plain_lines(piece.path, piece.start, piece.end, self.ctx.max_line, size)

    def _lines(self, held: Iterable[list[bytes]] | None = None) -> int:
        """Read every line of the current piece, or the ``held`` lines of a document read whole that turned
        out to be NDJSON (held to the line limit too); returns the number of lines (for line numbering).

        In a file of one resource type a batch of lines is decoded at once (:meth:`_typed`); any other
        batch, and any batch with something unusual in it, line by line (:meth:`_batch`)."""
        ftype = self.piece.file_type
        typed = (ftype is not None and ftype in _FAST_TYPES and ftype not in _SPECIAL_TYPES
                 and typed_decoder(ftype, False, False) is not None)
        rel = 0
        source = self._line_source() if held is None else (bounded(lines, self.ctx.max_line) for lines in held)
        for batch in source:
            if batch and not (typed and self._typed(batch, rel)):  # type: ignore[arg-type]
                self._batch(batch, rel)
            rel += len(batch)
        return rel

    def _typed(self, lines: list[bytes], base: int) -> bool:
        """The lines of a batch in a file of one resource type, decoded by one ``map`` and counted per
        patient at once, keeping the relevant lines. False (nothing changed) when the batch must be read
        line by line: an unreadable or blank line, one that is not an object of the file's type, bad JSON
        or UTF-8, a reference that needs looking at, a deleted resource."""
        rt = self.piece.file_type
        assert rt is not None
        try:
            if not all(map(bytes.isascii, lines)):
                for line in lines:
                    if not line.isascii():
                        line.decode()
            deleted = self.ctx.deleted
            heads = list(map(typed_decoder(rt, rt in UNDERSTOOD_TYPES, bool(deleted)), lines))
            if deleted and any(h.id.__class__ is str and f"{rt}/{h.id}" in deleted for h in heads):
                return False  # a deleted resource: counted, and left out, line by line
            none = NO_REFERENCE
            refs = [(h.subject or h.patient or none).reference for h in heads]
            counts = Counter(refs)
        except _HEAD_OR_TYPE_ERRORS:  # TypeError: a BadLine, or a reference that is not hashable
            return False
        keys = {}
        for reference in counts:
            key = self._key(reference) if reference.__class__ is str else None
            if key is None:
                return False
            keys[reference] = key
        partials = self.out.partials
        for reference, n in counts.items():
            key = keys[reference]
            partial = partials.get(key)
            if partial is None:
                partial = partials[key] = Partial()
            partial.resources += n
        self.out.resources += len(lines)
        if rt in UNDERSTOOD_TYPES:
            fid, pidx = self.piece.file_id, self.piece.index
            for i in relevant_indices(rt, heads, self.ctx.matcher):
                partials[keys[refs[i]]].lines.append((lines[i], (fid, pidx, base + i + 1, None)))
        return True

    def _batch(self, batch: list[bytes | BadLine], rel: int) -> None:
        """Read a batch of lines, the first numbered ``rel + 1``. The common case (one resource per line)
        is inlined here: it runs once per resource."""
        piece = self.piece
        fid, pidx, ftype = piece.file_id, piece.index, piece.file_type
        out, ctx = self.out, self.ctx
        errors, partials, key_cache, deleted = out.errors, out.partials, ctx.key_cache, ctx.deleted
        decode, head_errors, fast_types = decode_head, HEAD_ERRORS, _FAST_TYPES
        understood, scoped, relevant = UNDERSTOOD_TYPES, PATIENT_SCOPED_TYPES, is_relevant
        matches = ctx.matcher
        resources = 0
        special = _SPECIAL_TYPES
        for rel, line in enumerate(batch, rel + 1):  # noqa: B020 - numbering goes on across batches
            if line.__class__ is not bytes:
                errors.append(((fid, pidx, rel, None), line.reason))  # type: ignore[union-attr]
                continue
            if not line:
                continue
            if decode is None:  # pragma: no cover - without msgspec
                self._slow_line(line, rel)
                continue
            try:
                head = decode(line)
                if not line.isascii():
                    line.decode()
            except head_errors:
                self._slow_line(line, rel)
                continue
            rt = head.resourceType
            if rt.__class__ is not str or rt not in fast_types:
                self._slow_line(line, rel)
                continue
            if ftype is not None and rt != ftype:
                errors.append(((fid, pidx, rel, None), misfiled(rt, ftype)))
                continue
            resources += 1
            if deleted and head.id.__class__ is str and f"{rt}/{head.id}" in deleted:
                continue
            if rt in special:
                value = self._loads(line, rel)
                if value is not _MISSING:
                    self._resource(value, rt, rel, None, None, None, line)
                continue
            holder = head.subject
            reference = holder.reference if holder is not None else None
            if reference.__class__ is not str:
                holder = head.patient
                reference = holder.reference if holder is not None else None
            key = None
            if reference.__class__ is str:
                key = key_cache.get(reference, _MISSING)
                if key is _MISSING:
                    key = self._key(reference)
            if key is None:
                if rt in scoped:
                    errors.append(((fid, pidx, rel, None), f"{rt} has no usable reference to a Patient"))
                continue
            partial = partials.get(key)
            if partial is None:
                partial = partials[key] = Partial()
            partial.resources += 1
            if rt not in understood:
                continue
            if relevant(rt, head, matches):
                partial.lines.append((line, (fid, pidx, rel, None)))
        out.resources += resources

    # -- one NDJSON line ---------------------------------------------------------------------

    def _loads(self, line: bytes, rel: int) -> Any:
        """The line's JSON value (``null`` too), or ``_MISSING`` once its error is recorded."""
        try:
            return limits.loads(line)
        except limits.JSONProblem as exc:
            self._error(rel, None, str(exc))
            return _MISSING

    def _slow_line(self, line: bytes, rel: int) -> None:
        """The general path: any JSON value, with ``screen``'s semantics."""
        if line.isspace():
            return
        value = self._loads(line, rel)
        if value is _MISSING:
            return
        ftype = self.piece.file_type
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            if ftype is not None and ftype != "Bundle":
                self._error(rel, None, misfiled("Bundle", ftype))
                return
            self._entries(read_value(value, self.piece.path, checked=True), rel)
            return
        if isinstance(value, list):
            self._entries(read_value(value, self.piece.path, checked=True), rel)
            return
        try:
            rt = check_resource_type(value)
        except ResourceProblem as exc:
            self._error(rel, None, str(exc))
            return
        if ftype is not None and rt != ftype:
            self._error(rel, None, misfiled(rt, ftype))
            return
        self.out.resources += 1
        if self.ctx.deleted and resource_ref(value, None) in self.ctx.deleted:
            return
        self._resource(value, rt, rel, None, None, None, line)

    # -- one parsed resource -----------------------------------------------------------------

    def _resource(self, resource: dict[str, Any], rt: str, rel: int | None, location: str | None,
                  full_url: str | None, bundle: BundleIndex | None, raw: bytes | None) -> None:
        """File a parsed resource under its patient. ``bundle`` indexes the entries of a Bundle; None for
        a resource on its own NDJSON line."""
        if rt == "Medication":  # only for resources outside Bundles: they join the global pool
            ref = resource_ref(resource, None)
            if ref:
                self.out.medications.append((ref, resource))
            return
        if rt == "Patient":
            key = patient_resource_key(resource, full_url)
            if key is None:
                self._error(rel, location, "Patient has neither id nor fullUrl")
                return
        else:
            reference = patient_reference(resource)
            key = None
            if reference:
                key = self._key(reference)
                if key is not None and bundle is not None:
                    key = bundle.full_urls.get(reference) or key
            if key is None:
                if rt in PATIENT_SCOPED_TYPES:
                    self._error(rel, location, f"{rt} has no usable reference to a Patient")
                return
        partial = self._partial(key)
        partial.resources += 1
        if rt in UNDERSTOOD_TYPES:
            self._extract(resource, rt, key, partial, rel, location, full_url, raw,
                          bundle.medications if bundle is not None else None)

    def _extract(self, resource: dict[str, Any], rt: str, key: str, partial: Partial, rel: int | None,
                 location: str | None, full_url: str | None, raw: bytes | None,
                 local_pool: Mapping[str, Mapping[str, Any]] | None) -> None:
        ref = resource_ref(resource, full_url)
        if ref is None:
            where = location or ""
            if rel is not None:
                where = f"{LINE_MARK} {where}".rstrip()
            ref = f"{rt} at {where}"
        pos: Pos = (self.piece.file_id, self.piece.index, rel, location)
        pool = self.ctx.pool if local_pool is None else local_pool
        if local_pool is None and rt != "Patient":
            partial.lines.append((raw if raw is not None else orjson.dumps(resource), pos))
            return
        if rt in MEDICATION_TYPES and names_other_medication(resource, pool):  # held in another file, perhaps
            partial.pending.append((raw if raw is not None else orjson.dumps(resource), ref, pos))
            return
        try:
            fact = self.ctx.extractor.extract(resource, ref, pool)
        except ResourceProblem as exc:
            self._error(rel, location, str(exc))
            return
        if fact is None:
            return
        if isinstance(fact, PatientFact):
            partial.patients.append(fact)
        else:
            partial.facts.append((fact, raw if raw is not None else orjson.dumps(resource), pos))


def stream_unit(ctx: StreamContext, unit: Unit) -> UnitOutput:
    """Stream one unit."""
    return UnitReader(ctx, unit).run()
