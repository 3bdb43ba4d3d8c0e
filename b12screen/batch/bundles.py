"""Read a JSON document of a batch (a per-patient Bundle, an array, a resource).

A plain Bundle is split into its entries without parsing them: one msgspec decode gives each entry's
``fullUrl`` and the raw bytes of its resource, from which each resource's small header
(:mod:`b12screen.sources.relevance`) is decoded: the batch reads a per-patient Bundle the way it reads
NDJSON lines, parsing in full only the Patients, Medications and the resources a rule can use.

Nesting is bounded as for NDJSON lines: each entry parsed is measured (:func:`~b12screen.sources.limits.loads`;
one nested beyond :data:`~b12screen.sources.limits.MAX_DEPTH` is an error for that entry only), the others
are never measured, and the document as a whole is bounded by msgspec's own recursion guard, which raises a
clean ``RecursionError`` (Python's recursion limit, 1,000 by default: within orjson's
:data:`~b12screen.sources.limits.HARD_DEPTH`). Where that guard may let a decoder nest further (Python 3.11
with a raised recursion limit) the document is measured first, and split only when within ``MAX_DEPTH``.

Anything unusual (not a Bundle, an entry that is not an object or has no resource, a fullUrl that is not
text, a nested Bundle, a resource of no known type, a header of unexpected shape, bad UTF-8, nesting past
the guard, an entry to parse that is not JSON orjson accepts) gives None or False: the caller reads the
document the general way, with ``screen``'s semantics and errors.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import filterfalse, groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal

from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..errors import InputError
from ..sources import limits, read_value, relevance
from ..sources.extract import (
    PATIENT_SCOPED_TYPES,
    UNDERSTOOD_TYPES,
    ResourceProblem,
    check_resource_type,
    resource_ref,
)
from ..sources.grouping import BundleIndex
from ..sources.reader import EMPTY_FILE, Entry, unwrap
from ..sources.relevance import HEAD_ERRORS, NO_REFERENCE, relevant_indices

try:
    import msgspec
except ImportError:  # pragma: no cover - without msgspec every document takes the general path
    msgspec = None  # type: ignore[assignment]

_PLAIN_TYPES = R4_RESOURCE_TYPES - {"Bundle"}
_PARSED_TYPES = frozenset({"Patient", "Medication"})  # parsed whole: the Bundle's index needs them
_RESOURCE, _URL, _TYPE = attrgetter("resource"), attrgetter("fullUrl"), attrgetter("resourceType")
_SUBJECT, _REFERENCE = attrgetter("subject"), attrgetter("reference")

if msgspec is not None:
    _EMPTY = msgspec.Raw(b"")

    class _Entry(msgspec.Struct, gc=False):
        fullUrl: str | None = None  # anything else: the general path
        resource: msgspec.Raw = _EMPTY
        request: msgspec.Raw = _EMPTY
        response: msgspec.Raw = _EMPTY

    class _Bundle(msgspec.Struct, gc=False):
        resourceType: Literal["Bundle"]
        entry: list[_Entry] | None = None

    _decode_entries: Any = msgspec.json.Decoder(_Bundle).decode
    #: :class:`~b12screen.sources.relevance.Head` without ``id`` (deleted resources take the general path)
    #: and with ``resourceType`` text (else the general path): a little less work on every entry
    _decode_head: Any = msgspec.json.Decoder(msgspec.defstruct("BundleHead", [("resourceType", str), *(
        (f.name, f.type, f.default) for f in msgspec.structs.fields(relevance.Head)
        if f.name not in ("resourceType", "id"))], gc=False)).decode
    _ERRORS: tuple[type[Exception], ...] = (*HEAD_ERRORS, msgspec.ValidationError, UnicodeDecodeError)
else:  # pragma: no cover
    _decode_entries = _decode_head = None
    _ERRORS = ()


def guarded() -> bool:
    """Whether msgspec's recursion guard stops a decode within orjson's :data:`~limits.HARD_DEPTH`
    (3.12 and later guard the C stack whatever the recursion limit)."""
    return sys.version_info >= (3, 12) or sys.getrecursionlimit() <= limits.HARD_DEPTH


@dataclass
class SplitBundle:
    """A plain Bundle's entries with a resource: their positions in ``Bundle.entry``, fullUrls, headers,
    resource types and raw resource JSON."""

    positions: Sequence[int]
    urls: list[str | None]
    heads: list[Any]
    types: list[str]
    raws: list[Any]

    def raw(self, n: int) -> bytes:
        return bytes(self.raws[n])


def split_bundle(data: bytes) -> SplitBundle | None:
    """The entries of a plain Bundle (entries without a resource but with a request or response, which
    carry no data, left out), or None when the document must be read the general way."""
    if _decode_entries is None:  # pragma: no cover
        return None
    try:
        if not data.isascii():
            data.decode()
        entries = _decode_entries(data).entry or []
        raws = list(map(_RESOURCE, entries))
        positions: Sequence[int] = range(len(entries))
        if not all(raws):
            if not all(e.request or e.response for e in entries if not e.resource):
                return None  # "bundle entry has no resource": the general path names it
            positions = [i for i, raw in enumerate(raws) if raw]
            entries, raws = [entries[i] for i in positions], [raws[i] for i in positions]
        heads = list(map(_decode_head, raws))
        types = list(map(_TYPE, heads))
        if not _PLAIN_TYPES.issuperset(types):
            return None
    except _ERRORS:  # RecursionError among them: nested past msgspec's guard
        return None
    return SplitBundle(positions, list(map(_URL, entries)), heads, types, raws)


class BundleReading:
    """The document reading of :class:`b12screen.batch.stream.UnitReader` (a mixin: it uses the reader's
    ``piece``, ``ctx``, ``out`` and its ``_error``, ``_lines``, ``_resource``, ``_key`` and ``_partial``)."""

    piece: Any
    ctx: Any
    out: Any

    if TYPE_CHECKING:  # what the mixin uses of the reader (b12screen.batch.stream.UnitReader)
        def _error(self, line: int | None, location: str | None, reason: str) -> None: ...
        def _partial(self, key: str) -> Any: ...  # a b12screen.batch.stream.Partial
        def _key(self, reference: str) -> str | None: ...
        def _lines(self, held: Iterable[list[bytes]] | None = None) -> int: ...
        def _resource(self, resource: dict[str, Any], rt: str, rel: int | None, location: str | None,
                      full_url: str | None, bundle: BundleIndex | None, raw: bytes | None) -> None: ...

    def _document(self) -> None:
        path = self.piece.path
        with open(path, "rb") as f:
            data = f.read()
        try:
            data = unwrap(data, path)
        except InputError as error:
            self._error(None, None, error.reason)
            return
        if not data or data.isspace():
            self._error(None, None, EMPTY_FILE)
            return
        checked = None if guarded() else limits.depth(data, limits.MAX_DEPTH) <= limits.MAX_DEPTH
        if checked is not False and not self.ctx.deleted:
            split = split_bundle(data)
            if split is not None and self._bundle(split):
                return
        if checked is None:  # the general path: measured whole, else each entry is measured
            checked = limits.depth(data, limits.MAX_DEPTH) <= limits.MAX_DEPTH
        try:
            value = limits.loads_document(data)
        except limits.JSONProblem as exc:
            if data.strip().count(b"\n") >= 1:
                self._lines([data.split(b"\n")])
            else:
                self._error(None, None, str(exc))
            return
        self._entries(read_value(value, path, checked=checked), None)

    def _entries(self, items: Iterable[Entry | InputError], rel: int | None) -> None:
        """A Bundle's (or array's) entries, grouped like :func:`b12screen.sources.group_entries`: a local
        Medication pool (its Medications join the whole input's pool too) and ``urn:uuid:`` fullUrls
        resolved through the bundle's Patients."""
        entries: list[tuple[Entry, str]] = []
        index = BundleIndex()
        deleted = self.ctx.deleted
        for item in items:
            if isinstance(item, InputError):
                self._error(rel, item.location, item.reason)
                continue
            try:
                rt = check_resource_type(item.resource)
                self.out.resources += 1
                if deleted and resource_ref(item.resource, None) in deleted:
                    continue
                if index.add(item.resource, rt, item.full_url):
                    entries.append((item, rt))
            except ResourceProblem as exc:
                self._error(rel, item.location, str(exc))
        self.out.medications.extend(index.medications.items())
        for item, rt in entries:
            self._resource(item.resource, rt, rel, item.location, item.full_url, index, None)

    def _bundle(self, split: SplitBundle) -> bool:
        """A plain Bundle's entries, split unparsed, read as :meth:`_entries` reads parsed ones (the same
        two passes, the same errors), parsing only Patients, Medications and the resources a rule can use:
        the others are counted per patient at once. False (nothing recorded) when an entry to parse is
        not JSON orjson accepts: the general path reports the document as ``screen`` does."""
        heads, urls, where, types = split.heads, split.urls, split.positions, split.types
        matches = self.ctx.matcher
        chosen: list[int] = []
        for rt, group in groupby(sorted(range(len(types)), key=types.__getitem__), types.__getitem__):
            if rt in _PARSED_TYPES:
                chosen += group
            elif rt in UNDERSTOOD_TYPES:
                members = list(group)
                chosen += map(members.__getitem__, relevant_indices(rt, list(map(heads.__getitem__, members)), matches))
        values: dict[int, Any] = {}
        deep: dict[int, str] = {}
        for n in chosen:
            try:
                values[n] = limits.loads(split.raw(n))
            except limits.TooDeep as exc:
                deep[n] = str(exc)
            except limits.JSONProblem:
                return False
        self.out.resources += len(heads) - len(deep)
        index = BundleIndex()
        for n in sorted([*deep, *(n for n in values if heads[n].resourceType in _PARSED_TYPES)]):
            if n in deep:
                self._error(None, f"entry[{where[n]}]", deep[n])
                continue
            try:
                if not index.add(values[n], heads[n].resourceType, urls[n]):
                    del values[n]
            except ResourceProblem as exc:
                del values[n]
                self._error(None, f"entry[{where[n]}]", str(exc))
        self.out.medications.extend(index.medications.items())  # the whole input's pool: another file may name them
        counted = list(filterfalse(set(chosen).__contains__, range(len(heads))))
        owners = list(map(heads.__getitem__, counted))
        subjects = list(map(_SUBJECT, owners))
        try:
            refs = Counter(map(_REFERENCE, subjects) if all(subjects)
                           else [(h.subject or h.patient or NO_REFERENCE).reference for h in owners])
        except TypeError:  # a reference that is not text (an object, a list): entry by entry
            refs = Counter([None])
        keys = {ref: self._key(ref) if ref.__class__ is str and ref else None for ref in refs}
        if None in keys.values():  # a resource without a usable reference: entry by entry, in order
            self._in_order(split, sorted([*counted, *values]), values, index)
            return True
        for ref, count in refs.items():
            key = keys[ref]
            assert key is not None  # every reference resolved (checked above)
            self._partial(index.full_urls.get(ref) or key).resources += count
        self._in_order(split, sorted(values), values, index)
        return True

    def _in_order(self, split: SplitBundle, entries: list[int], values: dict[int, Any], index: BundleIndex) -> None:
        """File ``entries`` in Bundle order: those in ``values`` parsed, the others counted under their
        patient, or an error when they have no usable reference."""
        for n in entries:
            head, where = split.heads[n], f"entry[{split.positions[n]}]"
            if n in values:
                self._resource(values[n], head.resourceType, None, where, split.urls[n], index, None)
                continue
            holder = head.subject if head.subject is not None and head.subject.reference.__class__ is str \
                else head.patient
            reference = holder.reference if holder is not None else None
            key = self._key(reference) if reference.__class__ is str and reference else None
            if key is not None:
                self._partial(index.full_urls.get(str(reference)) or key).resources += 1
            elif head.resourceType in PATIENT_SCOPED_TYPES:
                self._error(None, where, f"{head.resourceType} has no usable reference to a Patient")
