"""Value sets (shipped as FHIR R4 ValueSet JSON) and code/text matching.

A CodeableConcept matches a value set when one of its codings does: exactly for most systems,
hierarchically for ICD-10(-CM) and ATC (``K50`` matches ``K50.90``). When no coding matches any value
set, the ``text`` and the codings' ``display`` are searched for the sets' text terms (ingredient and
brand names, whole words, case-insensitive).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import PluginError
from .display import without_semantic_tag

TEXT_EXTENSION = "https://b12screen.org/fhir/StructureDefinition/valueset-match-text"
SOURCE_EXTENSION = "https://b12screen.org/fhir/StructureDefinition/concept-source"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
CPT = "http://www.ama-assn.org/go/cpt"
#: NHS dm+d: its identifiers are SNOMED CT (UK drug extension) concept ids, so both spellings match one set.
DMD = "https://dmd.nhs.uk"

#: Other spellings of the same code systems seen in real data (OIDs, http/https variants).
SYSTEM_ALIASES: dict[str, str] = {
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "https://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "https://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    "https://www.whocc.no/atc": ATC,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "https://www.ama-assn.org/go/cpt": CPT,
    DMD: SNOMED,
    "http://dmd.nhs.uk": SNOMED,
}

#: Systems whose codes are matched by prefix (the code hierarchy is spelled out in the code itself).
HIERARCHICAL_SYSTEMS = frozenset({ICD10CM, ICD10, ATC})


def normalize_system(system: str | None) -> str:
    """The canonical URI of a code system (aliases folded, trailing slash dropped)."""
    if not system:
        return ""
    system = system.strip().rstrip("/")
    return SYSTEM_ALIASES.get(system, system)


def _hier_key(code: str) -> str:
    return code.replace(".", "").upper()


@dataclass
class ValueSetInfo:
    """What is known about one value set after merging every contribution."""

    id: str
    url: str
    title: str
    version: str
    codes: dict[str, set[str]] = field(default_factory=dict)
    terms: set[str] = field(default_factory=set)
    contributors: list[str] = field(default_factory=list)

    def concept_count(self) -> int:
        return sum(len(c) for c in self.codes.values())


def builtin_value_sets() -> list[dict[str, Any]]:
    """The ValueSet resources shipped in ``b12screen/valuesets``."""
    folder = resources.files("b12screen") / "valuesets"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            out.append(json.loads(entry.read_text(encoding="utf-8")))
    return out


def _check_value_set(vs: Any, origin: str) -> str:
    if not isinstance(vs, Mapping) or vs.get("resourceType") != "ValueSet":
        raise PluginError(f"{origin}: a value set must be a FHIR ValueSet resource (a JSON object)")
    vs_id = vs.get("id")
    if not isinstance(vs_id, str) or not vs_id:
        raise PluginError(f"{origin}: ValueSet without an id")
    compose = vs.get("compose")
    includes = (compose or {}).get("include", []) if compose is not None else []
    if not isinstance(includes, list):
        raise PluginError(f"{origin}: ValueSet {vs_id} has no compose.include list")
    for include in includes:
        if not isinstance(include, Mapping) or not include.get("system"):
            raise PluginError(f"{origin}: ValueSet {vs_id} has an include without a system")
        for concept in include.get("concept") or []:
            if not isinstance(concept, Mapping) or not isinstance(concept.get("code"), str):
                raise PluginError(f"{origin}: ValueSet {vs_id} has a concept without a code")
    return vs_id


class Terminology:
    """Every value set in force, merged from the package and from plugins, with fast matching."""

    def __init__(self, value_sets: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """``value_sets`` holds (origin, ValueSet) pairs; the same id from two origins is merged."""
        self.sets: dict[str, ValueSetInfo] = {}
        #: (system, code) -> the display a value set gives the concept (the first one wins)
        self._displays: dict[tuple[str, str], str] = {}
        for origin, vs in value_sets:
            self._add(origin, vs)
        self._build_index()

    def _add(self, origin: str, vs: Mapping[str, Any]) -> None:
        vs_id = _check_value_set(vs, origin)
        info = self.sets.get(vs_id)
        if info is None:
            info = ValueSetInfo(
                id=vs_id,
                url=vs.get("url") or f"https://b12screen.org/fhir/ValueSet/{vs_id}",
                title=vs.get("title") or vs.get("name") or vs_id,
                version=vs.get("version") or "",
            )
            self.sets[vs_id] = info
        info.contributors.append(origin)
        for include in (vs.get("compose") or {}).get("include") or []:
            system = normalize_system(include["system"])
            codes = info.codes.setdefault(system, set())
            for concept in include.get("concept") or []:
                code = concept["code"].strip()
                key = _hier_key(code) if system in HIERARCHICAL_SYSTEMS else code
                codes.add(key)
                if isinstance(concept.get("display"), str) and concept["display"].strip():
                    self._displays.setdefault((system, key), concept["display"].strip())
        for ext in vs.get("extension") or []:
            if isinstance(ext, Mapping) and ext.get("url") == TEXT_EXTENSION and ext.get("valueString"):
                info.terms.add(ext["valueString"].strip().lower())

    def _build_index(self) -> None:
        self._exact: dict[tuple[str, str], frozenset[str]] = {}
        self._prefix: dict[tuple[str, str], frozenset[str]] = {}
        exact: dict[tuple[str, str], set[str]] = {}
        prefix: dict[tuple[str, str], set[str]] = {}
        term_sets: dict[str, set[str]] = {}
        for info in self.sets.values():
            for system, codes in info.codes.items():
                target = prefix if system in HIERARCHICAL_SYSTEMS else exact
                for code in codes:
                    target.setdefault((system, code), set()).add(info.id)
            for term in info.terms:
                term_sets.setdefault(term, set()).add(info.id)
        self._exact = {k: frozenset(v) for k, v in exact.items()}
        self._prefix = {k: frozenset(v) for k, v in prefix.items()}
        # The longest term wins where terms overlap: "family history of pernicious anaemia" is family
        # history, not pernicious anaemia; "hydroxocobalamin injection" is the parenteral form.
        self._term_sets = {k: frozenset(v) for k, v in term_sets.items()}
        self._prefix_lengths = sorted({len(code) for _, code in self._prefix})
        if term_sets:
            alternatives = "|".join(re.escape(t) for t in sorted(term_sets, key=len, reverse=True))
            self._term_re: re.Pattern[str] | None = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w])")
        else:
            self._term_re = None
        self._text_cache: dict[str, frozenset[str]] = {}

    # -- matching -------------------------------------------------------------------------------

    def match_code(self, system: str | None, code: str | None) -> frozenset[str]:
        """Value set ids containing ``system|code``."""
        if not code or not isinstance(code, str):
            return frozenset()
        system = normalize_system(system)
        if system in HIERARCHICAL_SYSTEMS:
            key = _hier_key(code)
            found: set[str] = set()
            for length in self._prefix_lengths:
                if length > len(key):
                    break
                hit = self._prefix.get((system, key[:length]))
                if hit:
                    found |= hit
            return frozenset(found)
        return self._exact.get((system, code.strip()), frozenset())

    def match_text(self, text: str | None) -> frozenset[str]:
        """Value set ids whose text terms occur in ``text`` (whole words, case-insensitive)."""
        if not text or self._term_re is None or not isinstance(text, str):
            return frozenset()
        cached = self._text_cache.get(text)
        if cached is not None:
            return cached
        found: set[str] = set()
        for m in self._term_re.finditer(text.lower()):
            found |= self._term_sets[m.group(0)]
        result = frozenset(found)
        if len(self._text_cache) < 50_000:
            self._text_cache[text] = result
        return result

    def match_concept(self, concept: Any) -> frozenset[str]:
        """Value set ids matched by a raw CodeableConcept dict (codes first, then text)."""
        if not isinstance(concept, Mapping):
            return frozenset()
        found: set[str] = set()
        codings = concept.get("coding") or []
        for coding in codings:
            if isinstance(coding, Mapping):
                found |= self.match_code(coding.get("system"), coding.get("code"))
        if found:
            return frozenset(found)
        texts = [concept.get("text")] + [c.get("display") for c in codings if isinstance(c, Mapping)]
        for text in texts:
            found |= self.match_text(text)
        return frozenset(found)

    def label(self, concept: Any) -> str:
        """:meth:`raw_label` without a SNOMED CT semantic tag ("Crohn's disease (disorder)" reads "Crohn's
        disease"; docs/reference/clinical-rules.md section 7 point 10)."""
        return without_semantic_tag(self.raw_label(concept))

    def raw_label(self, concept: Any) -> str:
        """A human label of a raw CodeableConcept dict: its text, else a coding's display, else the display a
        value set gives one of its codes (a prescription coded only "RxNorm 858069" reads "colchicine 0.6 MG
        [Colcrys]"), else the first code."""
        if not isinstance(concept, Mapping):
            return ""
        text = concept.get("text")
        if isinstance(text, str) and text:
            return text
        codings = [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]
        for coding in codings:
            if coding.get("display"):
                return str(coding["display"])
        for coding in codings:
            code = coding.get("code")
            if isinstance(code, str) and code.strip():
                system = normalize_system(coding.get("system"))
                key = _hier_key(code.strip()) if system in HIERARCHICAL_SYSTEMS else code.strip()
                known = self._displays.get((system, key))
                if known:
                    return known
        return next((str(c["code"]) for c in codings if c.get("code")), "")

    def title(self, vs_id: str) -> str:
        info = self.sets.get(vs_id)
        return info.title if info else vs_id
