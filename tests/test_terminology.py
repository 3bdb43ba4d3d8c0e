"""Value sets: shipped files are valid FHIR, codes and text match as documented."""

from __future__ import annotations

import re

from fhir.resources.R4B.valueset import ValueSet

from b12screen.core.terminology import SOURCE_EXTENSION, Terminology, builtin_value_sets


def _terminology() -> Terminology:
    return Terminology(("b12screen", vs) for vs in builtin_value_sets())


def test_shipped_value_sets_are_valid_r4_valuesets_with_sources() -> None:
    sets = builtin_value_sets()
    assert {"metformin", "ppi", "h2ra"} <= {vs["id"] for vs in sets}
    for vs in sets:
        ValueSet.model_validate(vs)
        assert vs["url"].endswith("/" + vs["id"])
        for include in vs.get("compose", {}).get("include", []):
            codes = [c["code"] for c in include["concept"]]
            assert len(codes) == len(set(codes)), (vs["id"], include["system"])
            for concept in include["concept"]:
                sources = [e for e in concept.get("extension", []) if e["url"] == SOURCE_EXTENSION]
                assert sources and sources[0]["valueString"], (vs["id"], concept["code"])


#: Notes about how a code was looked up (a search index, a hit id) are not provenance.
_LOOKUP_NOTES = re.compile(r"find_string|read_file|search index|search tool|\bhit id", re.IGNORECASE)


def test_concept_sources_name_documents_not_how_they_were_found() -> None:
    noted = [
        (vs["id"], concept["code"])
        for vs in builtin_value_sets()
        for include in vs.get("compose", {}).get("include", [])
        for concept in include["concept"]
        for ext in concept.get("extension", [])
        if ext["url"] == SOURCE_EXTENSION and _LOOKUP_NOTES.search(ext["valueString"])
    ]
    assert noted == []


def test_rxnorm_atc_and_aliases() -> None:
    t = _terminology()
    assert t.match_code("http://www.nlm.nih.gov/research/umls/rxnorm", "6809") == {"metformin"}
    assert t.match_code("urn:oid:2.16.840.1.113883.6.88", "860975") == {"metformin"}
    assert t.match_code("http://www.whocc.no/atc", "A10BD07") == {"metformin"}
    assert t.match_code("http://www.whocc.no/atc", "A02BC01") == {"ppi"}
    assert t.match_code("http://www.whocc.no/atc", "A02BA03") == {"h2ra"}
    assert t.match_code("http://www.whocc.no/atc", "A02B") == frozenset()  # a parent is not a member
    assert t.match_code("http://snomed.info/sct", "6809") == frozenset()  # right code, wrong system


def test_icd10_hierarchy_matches_children() -> None:
    t = Terminology([("test", {"resourceType": "ValueSet", "id": "crohn", "compose": {"include": [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "concept": [{"code": "K50"}]}]}})])
    assert t.match_code("http://hl7.org/fhir/sid/icd-10-cm", "K50.90") == {"crohn"}
    assert t.match_code("http://hl7.org/fhir/sid/icd-10-cm", "K5090") == {"crohn"}
    assert t.match_code("http://hl7.org/fhir/sid/icd-10", "K50.1") == frozenset()
    assert t.match_code("http://hl7.org/fhir/sid/icd-10-cm", "K51.90") == frozenset()


def test_text_matches_whole_words_only_when_no_code_matches() -> None:
    t = _terminology()
    assert t.match_concept({"text": "Glucophage 500 mg tablets"}) == {"metformin"}
    assert t.match_concept({"text": "JANUMET XR 50/1000"}) == {"metformin"}
    assert t.match_concept({"coding": [{"display": "Omeprazole 20mg capsule"}]}) == {"ppi"}
    assert t.match_concept({"text": "metformins"}) == frozenset()
    coded = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "198051"}],
             "text": "with metformin"}
    assert t.match_concept(coded) == {"ppi"}  # codes win over text


def test_the_longest_text_term_wins_where_terms_overlap() -> None:
    t = _terminology()
    assert t.match_text("Hydroxocobalamin injection 1 mg/mL") == {"b12-parenteral"}
    assert t.match_text("Family history of pernicious anaemia") == {"family-history-b12"}
    assert "b12-deficiency-dx" in t.match_text("pernicious anaemia")


def _value_sets_page() -> str:
    """The site's table of shipped value sets (docs/reference/value-sets.md)."""
    from conftest import ROOT

    return (ROOT / "docs" / "reference" / "value-sets.md").read_text(encoding="utf-8")


def test_value_set_page_lists_every_shipped_set() -> None:
    page = _value_sets_page()
    for vs in builtin_value_sets():
        assert f"| `{vs['id']}` |" in page, vs["id"]


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

#: Colchicine product RxCUIs as real prescriptions carry them (SBDC, SBD, SCD of each US product), with no text.
COLCHICINE_PRODUCTS = {
    "858069": "colchicine 0.6 MG [Colcrys]",
    "858071": "colchicine 0.6 MG Oral Tablet [Colcrys]",
    "197541": "colchicine 0.6 MG Oral Tablet",
    "1550940": "colchicine 0.6 MG Oral Capsule",
    "1550946": "colchicine 0.6 MG Oral Capsule [Mitigare]",
    "2118892": "colchicine 0.12 MG/ML Oral Solution",
    "2180558": "colchicine 0.12 MG/ML Oral Solution [Gloperba]",
    "197540": "colchicine 0.5 MG Oral Tablet",
    "198153": "colchicine 0.5 MG / probenecid 500 MG Oral Tablet",
}


def test_colchicine_products_match_by_code_alone() -> None:
    t = _terminology()
    for code, name in COLCHICINE_PRODUCTS.items():
        assert t.match_concept({"coding": [{"system": RXNORM, "code": code}]}) == {"b12-depleting-medicines"}, name


def test_topical_colchicine_and_unrelated_products_do_not_match() -> None:
    t = _terminology()
    # colchicine / podophyllin ointment (topical, not systemic) and prednisone 5 MG Oral Tablet
    for code in ("246063", "376488", "312617"):
        assert t.match_concept({"coding": [{"system": RXNORM, "code": code}]}) == frozenset(), code


def test_value_set_page_counts_concepts_per_system_and_text_terms() -> None:
    """The page's 'concepts per system' and 'text terms' columns are what each shipped set holds."""
    names = {"http://snomed.info/sct": "SNOMED CT", "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
             "http://loinc.org": "LOINC", RXNORM: "RxNorm", "http://www.whocc.no/atc": "ATC",
             "http://www.ama-assn.org/go/cpt": "CPT", "http://www.cms.gov/Medicare/Coding/ICD10": "ICD-10-PCS",
             "http://terminology.hl7.org/CodeSystem/diet": "FHIR diet"}
    rows = {cells[1].strip(" `"): (cells[3].strip(), cells[4].strip())
            for cells in (line.split("|") for line in _value_sets_page().splitlines() if line.startswith("| `"))}
    problems = []
    for vs in builtin_value_sets():
        counts = ", ".join(f"{names.get(i['system'], i['system'])} {len(i['concept'])}"
                           for i in vs.get("compose", {}).get("include", [])) or "—"
        terms = str(sum(e["url"].endswith("/valueset-match-text") for e in vs.get("extension", [])))
        if rows[vs["id"]] != (counts, terms):
            problems.append(f"{vs['id']}: page {rows[vs['id']]!r}, file {(counts, terms)!r}")
    assert problems == []


def test_label_falls_back_to_the_value_set_display_of_a_bare_code() -> None:
    t = _terminology()
    assert t.label({"coding": [{"system": RXNORM, "code": "858069"}]}) == "colchicine 0.6 MG [Colcrys]"
    assert t.label({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": " 858069 "}]}) == (
        "colchicine 0.6 MG [Colcrys]")
    assert t.label({"coding": [{"system": RXNORM, "code": "858069"}], "text": "Colcrys 0.6 mg"}) == "Colcrys 0.6 mg"
    assert t.label({"coding": [{"system": RXNORM, "code": "858069"},
                               {"system": "http://example.org/local", "code": "x", "display": "Local name"}]}) == (
        "Local name")
    assert t.label({"coding": [{"system": RXNORM, "code": "312617"}]}) == "312617"  # in no value set: the code
    assert t.label({"coding": [{"system": "http://snomed.info/sct", "code": "858069"}]}) == "858069"  # wrong system
    assert t.label(None) == "" and t.label({"coding": [{}]}) == ""
