"""Build the FHIR R4 Flag of a screening result (docs/reference/interfaces.md, "The Flag")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..core.display import number
from ..core.model import Priority
from ..core.outcome import OUTCOME_DISPLAY, TESTS

if TYPE_CHECKING:
    from fhir.resources.R4B.flag import Flag

    from ..core.outcome import ScreeningResult

BASE = "https://b12screen.org/fhir"
OUTCOME_SYSTEM = f"{BASE}/CodeSystem/outcome"
RULE_SYSTEM = f"{BASE}/CodeSystem/rule"
IDENTIFIER_SYSTEM = f"{BASE}/Flag/identifier"
REASON_EXTENSION = f"{BASE}/StructureDefinition/flag-reason"
TEST_EXTENSION = f"{BASE}/StructureDefinition/recommended-test"
RULESET_EXTENSION = f"{BASE}/StructureDefinition/ruleset-version"
PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
DETAIL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-detail"
PRIORITY_SYSTEM = "http://hl7.org/fhir/flag-priority-code"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"


def flag_identifier(result: ScreeningResult) -> str:
    """Stable identifier: the same patient, outcome, reasons and ruleset version give the same value."""
    blob = "|".join([result.patient, result.outcome, ",".join(result.rules), ",".join(result.modifiers),
                     result.ruleset_version])
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _subject(patient: str) -> dict[str, str]:
    return {"reference": patient}


def _evidence_reference(ref: str) -> dict[str, str]:
    if ("/" in ref and " " not in ref) or ref.startswith("urn:"):
        return {"reference": ref}
    return {"display": ref}


#: Plain names of the recommended tests, as a clinician says them (docs/reference/clinical-rules.md section 6 point 7).
TEST_NAMES = {"2132-9": "serum vitamin B12", "72160-5": "active B12 (holotranscobalamin)",
              "13964-2": "methylmalonic acid (MMA)", "13965-9": "homocysteine (or MMA)"}
_SAME = 20  # a shared stretch this long (characters) is one reason stated twice
_CLAUSE = re.compile(r"([;,] )")


def test_name(test: dict[str, str]) -> str:
    """The plain name of a recommended test ("serum vitamin B12")."""
    return TEST_NAMES.get(test.get("code", ""), test.get("display", "vitamin B12"))


def with_article(name: str) -> str:
    """``name`` with "a" or "an" ("an active B12", "an MMA", "a serum vitamin B12")."""
    vowel = name[:1].lower() in "aeio" or name.startswith(("MMA", "MCV", "HbA"))
    return f"{'an' if vowel else 'a'} {name}"


#: The head of ``unactioned-low-b12`` when the result is a raised MMA or homocysteine
#: (docs/reference/clinical-rules.md 7.1, 7.2).
RAISED_METABOLITE = "Raised MMA or homocysteine (functional B12 deficiency) with no recorded treatment: please review"


def unactioned_head(result: ScreeningResult, b12_head: str) -> str:
    """``b12_head`` when the unactioned result is a B12 result (its note starts "Latest B12"), else the raised
    MMA or homocysteine wording."""
    return b12_head if any(n.startswith("Latest B12") for n in result.notes) else RAISED_METABOLITE


def latest_b12_text(result: ScreeningResult) -> str:
    """The latest B12 result on file ("latest vitamin B12 result 142 pg/mL on 2026-08-20 (deficient)")."""
    latest = result.latest_b12
    if not latest:
        return "No vitamin B12 result on file"
    value = latest.get("value")
    shown = f"{number(value, 'b12-total')} {latest.get('unit') or ''}".strip() if value is not None else "recorded"
    return f"Latest vitamin B12 result {shown} on {latest['date']} ({latest['band']})"


def results_text(result: ScreeningResult) -> str:
    """The B12, MMA and homocysteine results that shaped the outcome ("Results considered: MMA 0.52 umol/L
    on 2026-03-01; ...")."""
    return "Results considered: " + "; ".join(result.results)


def longest_shared(text: str, said: str, least: int = _SAME) -> tuple[int, int]:
    """(start in ``text``, length) of the longest stretch of ``text`` that also stands in ``said`` (the
    earliest in ``text`` of the longest), when at least ``least`` characters long; else ``(-1, 0)``.
    What ``difflib.SequenceMatcher.find_longest_match`` gives for such a stretch, without its quadratic
    search: each run of ``least`` characters of ``text`` is looked up in ``said`` (``str.find``) and
    extended only where it starts a shared stretch."""
    best, size = -1, 0
    n, m = len(text), len(said)
    block = least // 2  # a shared stretch of ``least`` or more holds a whole block of text[::block] in said
    if block and not any(text[i:i + block] in said for i in range(0, n - block + 1, block)):
        return best, size
    for i in range(n - least + 1):
        if n - i <= size:
            break  # nothing starting here can be longer
        seed = text[i:i + least]
        j = said.find(seed)
        while j >= 0:
            if not (i and j and text[i - 1] == said[j - 1]):  # else inside a stretch that starts earlier
                k = least
                while i + k < n and j + k < m and text[i + k] == said[j + k]:
                    k += 1
                if k > size:
                    best, size = i, k
            j = said.find(seed, j + 1)
    return best, size


def distinct_reasons(result: ScreeningResult) -> dict[str, str]:
    """Each decisive rule's reason without what an earlier rule already said: a long shared stretch
    becomes "as above", a repeated clause ("age 65") is dropped."""
    out: dict[str, str] = {}
    clauses: set[str] = set()
    for rid in result.rules:
        text = result.reasons.get(rid)
        if not text:
            continue
        pieces = _CLAUSE.split(text)  # clause, separator, clause, ...
        if len(pieces) > 1:  # a repeated clause first, so "as above" never stands for a whole clause
            kept = "".join(piece for i, piece in enumerate(pieces) if i % 2 or piece.strip() not in clauses)
            text = re.sub(r"([;,] )+(?=[;,] |$)", "", kept.strip(" ;,")) or text
        for said in out.values():
            start, size = longest_shared(text, said)
            if size:
                lead = len(text[start:start + size]) - len(text[start:start + size].lstrip())
                text = (text[:start + lead] + "as above" + text[start + size:]).strip()
        clauses.update(c.strip() for c in _CLAUSE.split(result.reasons[rid])[::2])
        out[rid] = text
    return out


def flag_text(result: ScreeningResult, distinct: Mapping[str, str] | None = None) -> str:
    """The sentence a clinician reads: what to do, why, the latest B12 result on file, and which test.
    ``distinct``: :func:`distinct_reasons` of ``result`` when the caller already has them."""
    test = result.recommended_test
    distinct = distinct_reasons(result) if distinct is None else distinct
    reasons = "; ".join(distinct.values())  # rule ids stay in the extensions (section 7 point 10)
    head = {
        "suggest-b12-test": "Consider checking vitamin B12",
        "suggest-mma": "Consider a methylmalonic acid (MMA) test: the last B12 result was indeterminate",
        "unactioned-low-b12": "Low vitamin B12 result with no recorded diagnosis or treatment: please review",
        "deficiency-without-treatment": "Vitamin B12 deficiency recorded without B12 treatment: please review",
    }[result.outcome]
    if test and test.get("code") == TESTS["homocysteine"]["code"]:
        head = "Consider a homocysteine or MMA test: serum B12 may be normal after nitrous oxide"
    elif result.outcome == "unactioned-low-b12":
        head = unactioned_head(result, head)
    parts = [head]
    if reasons:
        parts.append(f"Reasons: {reasons}")
    if not any(n.startswith("Latest B12 ") for n in result.notes):
        parts.append(latest_b12_text(result))
    if result.results:
        parts.append(results_text(result))
    if test:
        parts.append(f"Suggested test: {test_name(test)} (LOINC {test['code']})")
    parts.extend(result.notes)
    parts.append(f"Screened as of {result.as_of.isoformat()} by b12screen {__version__}; not a diagnosis")
    return ". ".join(p.rstrip(".") for p in parts) + "."


def flag_dict(result: ScreeningResult, distinct: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Flag of a flagged result as FHIR JSON (plain dicts: no model is built); ``distinct`` as for
    :func:`flag_text`."""
    assert result.priority is not None
    ident = flag_identifier(result)
    priority = Priority(result.priority)
    extensions: list[dict[str, Any]] = [{
        "url": PRIORITY_EXTENSION,
        "valueCodeableConcept": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority.flag_code,
                                            "display": priority.flag_display}]},
    }]
    for ref in result.evidence:
        extensions.append({"url": DETAIL_EXTENSION, "valueReference": _evidence_reference(ref)})
    for rule_id in result.rules:
        coding = {"system": RULE_SYSTEM, "code": rule_id}
        title = result.rule_titles.get(rule_id)
        if title:
            coding["display"] = title
        extensions.append({"url": REASON_EXTENSION, "valueCoding": coding})
    for modifier in result.modifiers:
        extensions.append({"url": REASON_EXTENSION, "valueCoding": {"system": RULE_SYSTEM, "code": modifier}})
    if result.recommended_test:
        extensions.append({"url": TEST_EXTENSION, "valueCoding": dict(result.recommended_test)})
    extensions.append({"url": RULESET_EXTENSION, "valueString": result.ruleset_version})
    return {
        "resourceType": "Flag",
        "id": f"b12-{ident[:32]}",
        "contained": [{
            "resourceType": "Device",
            "id": "b12screen",
            "deviceName": [{"name": "b12screen", "type": "user-friendly-name"}],
            "version": [{"value": __version__}],
        }],
        "extension": extensions,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": ident}],
        "status": "active",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "clinical", "display": "Clinical"}]}],
        "code": {
            "coding": [{"system": OUTCOME_SYSTEM, "code": result.outcome,
                        "display": OUTCOME_DISPLAY[result.outcome]}],
            "text": flag_text(result, distinct),
        },
        "subject": _subject(result.patient),
        "period": {"start": result.as_of.isoformat()},
        "author": {"reference": "#b12screen", "display": f"b12screen {__version__}"},
    }


def flag_json(result: ScreeningResult) -> dict[str, Any] | None:
    """The Flag of a result as FHIR JSON, or None when the outcome is not flagged."""
    return flag_dict(result) if result.flagged else None


def flag_model(result: ScreeningResult) -> Flag | None:
    """The Flag as a validated fhir.resources R4B model (built on demand: it costs far more than the JSON)."""
    from fhir.resources.R4B.flag import Flag  # imported here: the model classes take a while to load

    data = flag_json(result)
    return None if data is None else Flag.model_validate(data)
