"""Relevance: the cheap decode of an NDJSON line and the value-set match that say whether a rule can use
a resource, without building Python objects for the rest of it.

A line is decoded with msgspec into a small header (type, id, patient reference and the raw bytes of the
few coded fields that decide relevance). :class:`ConceptMatcher` answers "does this coded field match a
value set?" once per distinct field text. Only relevant resources are parsed fully and reduced to facts
(:class:`b12screen.sources.extract.Extractor`, which applies the same value sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import orjson

from ..core.facts import MEDICATION_TYPES
from ..core.terminology import Terminology

try:  # msgspec makes skipping irrelevant resources cheap; without it every line is parsed fully
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None  # type: ignore[assignment]

CACHE_LIMIT = 200_000
_MEDICATION_TYPES = frozenset(MEDICATION_TYPES)

if msgspec is not None:
    _Raw = msgspec.Raw
    _EMPTY = msgspec.Raw(b"")

    class _Ref(msgspec.Struct, gc=False):
        """A Reference, decoded only as far as its ``reference`` (a Struct decodes about twice as fast as
        a dict; a subject that is not an object falls back to the general path). Headers hold no cycles,
        so the garbage collector need not track them (``gc=False``)."""

        reference: Any = None

    class Head(msgspec.Struct, gc=False):
        """The fields that say whose a resource is and whether a rule can use it."""

        resourceType: Any = None
        id: Any = None
        subject: _Ref | None = None
        patient: _Ref | None = None
        code: _Raw = _EMPTY
        valueCodeableConcept: _Raw = _EMPTY
        medicationCodeableConcept: _Raw = _EMPTY
        medicationReference: _Raw = _EMPTY
        hospitalization: _Raw = _EMPTY

    decode_head: Any = msgspec.json.Decoder(Head).decode
    HEAD_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
    NO_REFERENCE = _Ref()

    @cache
    def typed_decoder(resource_type: str, relevance: bool, ids: bool) -> Any:
        """A decoder of the header of a line that must be a ``resource_type`` resource, with
        ``resourceType`` required to be exactly that type (else a ValidationError, one of
        :data:`HEAD_ERRORS`), so a whole batch of lines is checked and decoded by one ``map``. It reads
        the patient reference, the fields :func:`relevant_indices` reads for the type when ``relevance``,
        and ``id`` when ``ids``: each field fewer is a little less work on every line."""
        wanted = {"subject", "patient", *(("id",) if ids else ()),
                  *(_relevance_fields(resource_type) if relevance else ())}
        fields: list[Any] = [("resourceType", Literal[resource_type]),
                  *((f.name, f.type, f.default) for f in msgspec.structs.fields(Head)[1:] if f.name in wanted)]
        return msgspec.json.Decoder(msgspec.defstruct(f"Head{resource_type}", fields, gc=False)).decode

else:  # pragma: no cover
    decode_head = None
    HEAD_ERRORS = ()
    NO_REFERENCE = None

    def typed_decoder(resource_type: str, relevance: bool, ids: bool) -> Any:
        return None


class _MatchCache(dict[bytes, bool]):
    """Coded field text -> whether it matches a value set; a miss is computed by ``__missing__``, so a hit
    costs one dict lookup and no Python call."""

    def __init__(self, terminology: Terminology) -> None:
        super().__init__({b"": False})  # an absent field: a hit, not a call
        self.terminology = terminology

    def __missing__(self, key: bytes) -> bool:
        try:
            hit = bool(self.terminology.match_concept(orjson.loads(key)))
        except orjson.JSONDecodeError:
            hit = True  # let the full parse report it
        if len(self) > CACHE_LIMIT:
            self.clear()
            self[b""] = False
        self[key] = hit
        return hit


class ConceptMatcher:
    """Whether a coded field (raw JSON) matches a value set, cached by its text (bounded)."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self.cache = _MatchCache(terminology)

    def __call__(self, raw: Any) -> bool:
        return self.cache[bytes(raw)] if raw else False


def _relevance_fields(resource_type: str) -> tuple[str, ...]:
    """The header fields :func:`relevant_indices` reads for a type (keep the two in step)."""
    if resource_type in _MEDICATION_TYPES:
        return ("medicationCodeableConcept", "medicationReference")
    if resource_type == "Observation":
        return ("code", "valueCodeableConcept")
    if resource_type == "Encounter":
        return ("hospitalization",)
    return ("code",)


def relevant_indices(resource_type: str, heads: Sequence[Any], matches: ConceptMatcher) -> list[int]:
    """The positions in ``heads`` (headers of resources of one understood type) of the resources a rule
    can use."""
    known = matches.cache  # inlined ``matches(raw)``: this runs once per resource
    if resource_type in _MEDICATION_TYPES:
        return [i for i, h in enumerate(heads) if h.medicationReference or known[bytes(h.medicationCodeableConcept)]]
    if resource_type == "Observation":
        return [i for i, h in enumerate(heads) if known[bytes(h.code)] or known[bytes(h.valueCodeableConcept)]]
    if resource_type == "Encounter":
        return [i for i, h in enumerate(heads) if h.hospitalization and b"dietPreference" in bytes(h.hospitalization)]
    if resource_type == "FamilyMemberHistory":  # its codes are in condition[].code, not in the header: all read
        return list(range(len(heads)))
    return [i for i, h in enumerate(heads) if known[bytes(h.code)]]


def is_relevant(resource_type: str, head: Any, matches: ConceptMatcher) -> bool:
    """Whether a rule can use a resource of an understood type, from its header."""
    return bool(relevant_indices(resource_type, (head,), matches))
