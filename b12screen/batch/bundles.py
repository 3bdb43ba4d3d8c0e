"""Read a JSON document of a batch (a per-patient Bundle, an array, a resource).

A plain Bundle is split into its entries without parsing them: msgspec decodes the Bundle down to each
entry's ``fullUrl`` and the raw bytes of its resource, then each resource's small header
(:mod:`b12screen.sources.relevance`): the batch reads a per-patient Bundle the way it reads NDJSON lines,
parsing in full only the Patients, Medications and the resources a rule can use.

Only a document already measured within :data:`~b12screen.sources.limits.MAX_DEPTH` comes here (so no
entry is too deep and no decoder nests far). Anything unusual (not a Bundle, an entry that is not an object
or has no resource, a nested Bundle, a resource of no known type, a header of unexpected shape, bad UTF-8)
gives None: the caller reads the document the general way, with ``screen``'s semantics and errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..errors import InputError
from ..sources import limits, read_value, relevance
from ..sources.extract import PATIENT_SCOPED_TYPES, UNDERSTOOD_TYPES, ResourceProblem
from ..sources.grouping import BundleIndex
from ..sources.reader import EMPTY_FILE, unwrap
from ..sources.relevance import HEAD_ERRORS, NO_REFERENCE, relevant_indices

try:
    import msgspec
except ImportError:  # pragma: no cover - without msgspec every document takes the general path
    msgspec = None  # type: ignore[assignment]

_PLAIN_TYPES = R4_RESOURCE_TYPES - {"Bundle"}
_PARSED_TYPES = frozenset({"Patient", "Medication"})  # parsed whole: the Bundle's index needs them

if msgspec is not None:
    _EMPTY = msgspec.Raw(b"")

    class _HeadEntry(msgspec.Struct, gc=False):
        fullUrl: Any = None
        resource: relevance.Head | None = None
        request: msgspec.Raw = _EMPTY
        response: msgspec.Raw = _EMPTY

    class _HeadBundle(msgspec.Struct, gc=False):
        resourceType: Literal["Bundle"]
        entry: list[_HeadEntry] | None = None

    class _RawEntry(msgspec.Struct, gc=False):
        resource: msgspec.Raw = _EMPTY

    class _RawBundle(msgspec.Struct, gc=False):
        entry: list[_RawEntry]

    _decode_heads: Any = msgspec.json.Decoder(_HeadBundle).decode
    _decode_raws: Any = msgspec.json.Decoder(_RawBundle).decode
    _ERRORS: tuple[type[Exception], ...] = (*HEAD_ERRORS, msgspec.ValidationError, UnicodeDecodeError)
else:  # pragma: no cover
    _decode_heads = _decode_raws = None
    _ERRORS = ()


@dataclass
class SplitBundle:
    """A plain Bundle's entries with a resource: their positions in ``Bundle.entry``, fullUrls (None when
    not a string) and headers; :meth:`raw` gives an entry's resource JSON."""

    data: bytes
    positions: list[int]
    urls: list[str | None]
    heads: list[Any]
    _raws: list[Any] | None = None

    def raw(self, n: int) -> bytes:
        if self._raws is None:  # a second, skipping decode: only Patients and relevant resources need it
            self._raws = [e.resource for e in _decode_raws(self.data).entry]
        return bytes(self._raws[self.positions[n]])


def split_bundle(data: bytes) -> SplitBundle | None:
    """The entries of a plain Bundle (entries without a resource but with a request or response, which
    carry no data, left out), or None when the document must be read the general way."""
    if _decode_heads is None:  # pragma: no cover
        return None
    try:
        if not data.isascii():
            data.decode()
        entries = _decode_heads(data).entry or ()
    except _ERRORS:
        return None
    positions = [i for i, e in enumerate(entries) if e.resource is not None]
    if len(positions) != len(entries) and not all(e.request or e.response for e in entries if e.resource is None):
        return None  # "bundle entry has no resource": the general path names it
    heads = [entries[i].resource for i in positions]
    if not all(h.resourceType.__class__ is str and h.resourceType in _PLAIN_TYPES for h in heads):
        return None
    urls = [u if (u := entries[i].fullUrl).__class__ is str else None for i in positions]
    return SplitBundle(data, positions, urls, heads)


class BundleReading:
    """The document reading of :class:`b12screen.batch.stream.UnitReader` (a mixin: it uses the reader's
    ``piece``, ``ctx``, ``out`` and its ``_error``, ``_lines``, ``_entries``, ``_resource``, ``_key`` and
    ``_partial``)."""

    piece: Any
    ctx: Any
    out: Any

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
        checked = limits.depth(data, limits.MAX_DEPTH) <= limits.MAX_DEPTH  # else each entry is measured
        split = split_bundle(data) if checked and not self.ctx.deleted else None
        if split is not None:
            self._bundle(split)
            return
        try:
            value = limits.loads_document(data)
        except limits.JSONProblem as exc:
            if data.strip().count(b"\n") >= 1:
                self._lines([data.split(b"\n")])
            else:
                self._error(None, None, str(exc))
            return
        self._entries(read_value(value, path, checked=checked), None)

    def _bundle(self, split: SplitBundle) -> None:
        """A plain Bundle's entries, split unparsed, read as :meth:`_entries` reads parsed ones (the same
        two passes, the same errors), parsing only Patients, Medications and the resources a rule can use:
        the others are counted per patient at once."""
        heads, urls, where = split.heads, split.urls, split.positions
        self.out.resources += len(heads)
        index, values = BundleIndex(), {}
        for n in [n for n, h in enumerate(heads) if h.resourceType in _PARSED_TYPES]:
            value = orjson.loads(split.raw(n))
            try:
                if index.add(value, heads[n].resourceType, urls[n]):
                    values[n] = value
            except ResourceProblem as exc:
                self._error(None, f"entry[{where[n]}]", str(exc))
        by_type: dict[str, list[int]] = {}
        for n, h in enumerate(heads):
            by_type.setdefault(h.resourceType, []).append(n)
        matches = self.ctx.matcher
        for rt, members in by_type.items():
            if rt in UNDERSTOOD_TYPES and rt not in _PARSED_TYPES:
                values.update((members[i], None) for i in relevant_indices(rt, [heads[n] for n in members], matches))
        counted = [n for n, h in enumerate(heads) if n not in values and h.resourceType not in _PARSED_TYPES]
        none = NO_REFERENCE
        refs = Counter((heads[n].subject or heads[n].patient or none).reference for n in counted)
        keys = {ref: self._key(ref) if ref.__class__ is str and ref else None for ref in refs}
        if None in keys.values():  # a resource without a usable reference: entry by entry, in order
            self._in_order(split, sorted([*counted, *values]), values, index)
            return
        for ref, count in refs.items():
            self._partial(index.full_urls.get(ref) or keys[ref]).resources += count
        self._in_order(split, sorted(values), values, index)

    def _in_order(self, split: SplitBundle, entries: list[int], values: dict[int, Any], index: BundleIndex) -> None:
        """File ``entries`` in Bundle order: those in ``values`` parsed (the value, or None: parse the raw
        JSON), the others counted under their patient, or an error when they have no usable reference."""
        for n in entries:
            head, where = split.heads[n], f"entry[{split.positions[n]}]"
            if n in values:
                value = values[n] if values[n] is not None else orjson.loads(split.raw(n))
                self._resource(value, head.resourceType, None, where, split.urls[n], index, None)
                continue
            holder = head.subject if head.subject is not None and head.subject.reference.__class__ is str \
                else head.patient
            reference = holder.reference if holder is not None else None
            key = self._key(reference) if reference.__class__ is str and reference else None
            if key is not None:
                self._partial(index.full_urls.get(reference) or key).resources += 1
            elif head.resourceType in PATIENT_SCOPED_TYPES:
                self._error(None, where, f"{head.resourceType} has no usable reference to a Patient")
