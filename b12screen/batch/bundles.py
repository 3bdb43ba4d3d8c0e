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

from typing import Any, Literal

import orjson

from ..core.fhirtypes import R4_RESOURCE_TYPES
from ..errors import InputError
from ..sources import limits, read_value
from ..sources.extract import PATIENT_SCOPED_TYPES, UNDERSTOOD_TYPES, ResourceProblem
from ..sources.grouping import BundleIndex
from ..sources.reader import EMPTY_FILE, unwrap
from ..sources.relevance import HEAD_ERRORS, decode_head, is_relevant

try:
    import msgspec
except ImportError:  # pragma: no cover - without msgspec every document takes the general path
    msgspec = None  # type: ignore[assignment]

#: One entry: (index in ``Bundle.entry``, fullUrl or None, raw resource JSON, its header).
BundleEntry = tuple[int, "str | None", bytes, Any]
_PLAIN_TYPES = R4_RESOURCE_TYPES - {"Bundle"}
_NO_BODY = (b"", b"null")
_PARSED_TYPES = frozenset({"Patient", "Medication"})  # parsed whole: the Bundle's index needs them

if msgspec is not None:
    _EMPTY = msgspec.Raw(b"")

    class _Entry(msgspec.Struct, gc=False):
        fullUrl: Any = None
        resource: msgspec.Raw = _EMPTY
        request: msgspec.Raw = _EMPTY
        response: msgspec.Raw = _EMPTY

    class _Bundle(msgspec.Struct, gc=False):
        resourceType: Literal["Bundle"]
        entry: list[_Entry] | None = None

    _decode_bundle: Any = msgspec.json.Decoder(_Bundle).decode
    _ERRORS: tuple[type[Exception], ...] = (*HEAD_ERRORS, msgspec.ValidationError, TypeError)
else:  # pragma: no cover
    _decode_bundle = None
    _ERRORS = ()


def split_bundle(data: bytes) -> list[BundleEntry] | None:
    """The entries of a plain Bundle (entries without a resource but with a request or response, which
    carry no data, left out), or None when the document must be read the general way."""
    if _decode_bundle is None or decode_head is None:  # pragma: no cover
        return None
    try:
        if not data.isascii():
            data.decode()
        bundle = _decode_bundle(data)
        entries = bundle.entry or ()
        kept = [(i, e) for i, e in enumerate(entries) if bytes(e.resource) not in _NO_BODY]
        if len(kept) != len(entries) and any(not (e.request or e.response) for e in entries
                                             if bytes(e.resource) in _NO_BODY):
            return None  # "bundle entry has no resource": the general path names it
        raws = [bytes(e.resource) for _, e in kept]
        heads = list(map(decode_head, raws))
    except (*_ERRORS, UnicodeDecodeError):
        return None
    out: list[BundleEntry] = []
    for (i, entry), raw, head in zip(kept, raws, heads, strict=True):
        if head.resourceType.__class__ is not str or head.resourceType not in _PLAIN_TYPES:
            return None
        url = entry.fullUrl
        out.append((i, url if url.__class__ is str else None, raw, head))
    return out


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
        if not data.strip():
            self._error(None, None, EMPTY_FILE)
            return
        checked = limits.depth(data, limits.MAX_DEPTH) <= limits.MAX_DEPTH  # else each entry is measured
        entries = split_bundle(data) if checked else None
        if entries is not None:
            self._bundle(entries)
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

    def _bundle(self, entries: list[BundleEntry]) -> None:
        """A plain Bundle's entries, split unparsed, read as :meth:`_entries` reads parsed ones (the same
        two passes, the same errors), parsing only Patients, Medications and the resources a rule can use."""
        index = BundleIndex()
        deleted, kept = self.ctx.deleted, []
        self.out.resources += len(entries)
        for i, full_url, raw, head in entries:
            rt = head.resourceType
            if deleted and head.id.__class__ is str and head.id and f"{rt}/{head.id}" in deleted:
                continue
            value = None
            if rt in _PARSED_TYPES:
                value = orjson.loads(raw)
                try:
                    if not index.add(value, rt, full_url):
                        continue
                except ResourceProblem as exc:
                    self._error(None, f"entry[{i}]", str(exc))
                    continue
            kept.append((i, full_url, raw, head, value))
        matches, understood = self.ctx.matcher, UNDERSTOOD_TYPES
        for i, full_url, raw, head, value in kept:
            rt = head.resourceType
            if value is not None or (rt in understood and is_relevant(rt, head, matches)):
                self._resource(value or orjson.loads(raw), rt, None, f"entry[{i}]", full_url, index, None)
                continue
            holder = head.subject if head.subject is not None and head.subject.reference.__class__ is str \
                else head.patient
            reference = holder.reference if holder is not None else None
            key = self._key(reference) if reference.__class__ is str and reference else None
            if key is None:
                if rt in PATIENT_SCOPED_TYPES:
                    self._error(None, f"entry[{i}]", f"{rt} has no usable reference to a Patient")
                continue
            self._partial(index.full_urls.get(reference) or key).resources += 1
