"""Value sets: shipped files are valid FHIR, codes and text match as documented."""

from __future__ import annotations

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


def test_value_set_readme_lists_every_shipped_set() -> None:
    from conftest import ROOT

    readme = (ROOT / "b12screen" / "valuesets" / "README.md").read_text()
    for vs in builtin_value_sets():
        assert f"| `{vs['id']}` |" in readme, vs["id"]
