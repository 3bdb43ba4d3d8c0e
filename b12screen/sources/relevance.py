"""Relevance: the cheap decode of an NDJSON line and the value-set match that say whether a rule can use
a resource, without building Python objects for the rest of it.

A line is decoded with msgspec into a small header (type, id, patient reference and the raw bytes of the
few coded fields that decide relevance). :class:`ConceptMatcher` answers "does this coded field match a
value set?" once per distinct field text. Only relevant resources are parsed fully and reduced to facts
(:class:`b12screen.sources.extract.Extractor`, which applies the same value sets).
"""

from __future__ import annotations

from typing import Any

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

    class _Ref(msgspec.Struct):
        """A Reference, decoded only as far as its ``reference`` (a Struct decodes about twice as fast as
        a dict; a subject that is not an object falls back to the general path)."""

        reference: Any = None

    class Head(msgspec.Struct):
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
else:  # pragma: no cover
    decode_head = None
    HEAD_ERRORS = ()


class ConceptMatcher:
    """Whether a coded field (raw JSON) matches a value set, cached by its text (bounded)."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self.cache: dict[bytes, bool] = {}

    def __call__(self, raw: Any) -> bool:
        if not raw:
            return False
        key = bytes(raw)
        cache = self.cache
        hit = cache.get(key)
        if hit is None:
            try:
                hit = bool(self.terminology.match_concept(orjson.loads(key)))
            except orjson.JSONDecodeError:
                hit = True  # let the full parse report it
            if len(cache) > CACHE_LIMIT:
                cache.clear()
            cache[key] = hit
        return hit


def is_relevant(resource_type: str, head: Any, matches: ConceptMatcher) -> bool:
    """Whether a rule can use a resource of an understood type, from its header."""
    if resource_type in _MEDICATION_TYPES:
        return bool(head.medicationReference) or matches(head.medicationCodeableConcept)
    if resource_type == "Observation":
        return matches(head.code) or matches(head.valueCodeableConcept)
    if resource_type == "Encounter":
        return bool(head.hospitalization) and b"dietPreference" in bytes(head.hospitalization)
    return matches(head.code)
