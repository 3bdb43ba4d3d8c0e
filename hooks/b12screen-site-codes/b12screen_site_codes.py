"""b12screen-site-codes: a site's local formulary and laboratory codes added to built-in value sets.

Example Hospital codes its prescriptions with its own formulary and its results with its own laboratory
catalogue, so the RxNorm, ATC and LOINC codes b12screen ships never match them. This plugin adds no rule:
it contributes ValueSets whose ``id`` is that of a built-in set (``metformin``, ``b12-total``), which adds
the local codes to it. MET-1/MET-2 then see metformin, and MOD-RECENT sees a B12 result, coded only with
local codes. The code systems are the site's own (local codes are by definition), so their source is the
site's catalogue.
"""

from __future__ import annotations

from typing import Any

from b12screen import hookimpl

__version__ = "0.1.0"

FORMULARY = "https://hospital.example.org/fhir/CodeSystem/formulary"
LAB = "https://hospital.example.org/fhir/CodeSystem/lab"
SOURCE_EXTENSION = "https://b12screen.org/fhir/StructureDefinition/concept-source"
SOURCE = "Example Hospital {catalogue} export 2026-10 (local code system: the codes are the site's own)"

#: Local formulary codes of metformin products (code, display).
METFORMIN = [
    ("F-10234", "Metformin hydrochloride 500 mg tablet"),
    ("F-10235", "Metformin hydrochloride 850 mg tablet"),
    ("F-10236", "Metformin hydrochloride 1 g tablet"),
    ("F-10240", "Metformin hydrochloride 500 mg modified-release tablet"),
]
#: Local laboratory codes of total (serum) vitamin B12.
B12_TOTAL = [
    ("L-B12", "Vitamin B12, serum (chemistry analyser)"),
    ("L-B12-REF", "Vitamin B12, serum (referred to reference laboratory)"),
]


def _value_set(vs_id: str, system: str, catalogue: str, codes: list[tuple[str, str]]) -> dict[str, Any]:
    source = [{"url": SOURCE_EXTENSION, "valueString": SOURCE.format(catalogue=catalogue)}]
    return {
        "resourceType": "ValueSet",
        "id": vs_id,  # the id of a built-in value set: these codes are added to it
        "url": f"https://hospital.example.org/fhir/ValueSet/b12screen-{vs_id}",
        "version": "2026.10",
        "status": "active",
        "publisher": "Example Hospital",
        "compose": {"include": [{
            "system": system,
            "concept": [{"code": code, "display": display, "extension": source} for code, display in codes],
        }]},
    }


@hookimpl
def b12screen_value_sets() -> list[dict[str, Any]]:
    return [
        _value_set("metformin", FORMULARY, "formulary", METFORMIN),
        _value_set("b12-total", LAB, "laboratory catalogue", B12_TOTAL),
    ]
