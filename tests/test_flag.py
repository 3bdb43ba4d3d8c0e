"""The Flag: shape of interfaces.md, R4B and official-schema validity, stable identity."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
from conftest import AS_OF, FIXTURES, SHARED_DATA
from fhir.resources.R4B.flag import Flag

from b12screen.sinks.flag import flag_json

#: The keys of a report entry, in order (docs/reference/interfaces.md).
REPORT_KEYS = ("patient", "outcome", "priority", "rules", "risk_factors", "modifiers", "recommended_test",
               "latest_b12", "evidence", "as_of", "profile", "ruleset_version")
SCHEMA = SHARED_DATA / "fhir-r4-json-schema" / "fhir.schema.json"
DEMO = FIXTURES / "examples" / "demo-bundle.json"


def _demo_results(screener):
    return {r.patient: r for r in screener.screen(json.loads(DEMO.read_text()), AS_OF)}


def test_report_entry_has_exactly_the_specified_keys(screener) -> None:
    for result in _demo_results(screener).values():
        assert tuple(result.report()) == REPORT_KEYS


def test_flag_shape(screener) -> None:
    result = _demo_results(screener)["Patient/demo-metformin"]
    flag = flag_json(result)
    assert flag["status"] == "active"
    assert flag["subject"] == {"reference": "Patient/demo-metformin"}
    assert flag["period"] == {"start": "2026-11-24"}
    assert flag["category"][0]["coding"][0]["code"] == "clinical"
    assert flag["code"]["coding"][0]["code"] == "suggest-b12-test"
    assert "2132-9" in flag["code"]["text"] and "MET-2" not in flag["code"]["text"]
    by_url: dict[str, list] = {}
    for ext in flag["extension"]:
        by_url.setdefault(ext["url"], []).append(ext)
    [priority] = by_url["http://hl7.org/fhir/StructureDefinition/flag-priority"]
    assert priority["valueCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/flag-priority-code", "code": "PM", "display": "Medium priority"}
    details = [e["valueReference"]["reference"] for e in by_url["http://hl7.org/fhir/StructureDefinition/flag-detail"]]
    assert details == result.evidence and "MedicationRequest/demo-met-2" in details
    reasons = [e["valueCoding"]["code"] for e in by_url["https://b12screen.org/fhir/StructureDefinition/flag-reason"]]
    assert "MET-2" in reasons
    [test] = by_url["https://b12screen.org/fhir/StructureDefinition/recommended-test"]
    assert test["valueCoding"]["code"] == "2132-9"
    assert flag["author"]["reference"] == "#b12screen"


def test_no_flag_without_a_suggestion(screener) -> None:
    results = _demo_results(screener)
    assert flag_json(results["Patient/demo-child"]) is None
    assert flag_json(results["Patient/demo-stopped"]) is None


def test_same_input_gives_same_flag_id_and_identifier(screener, make_screener) -> None:
    first = flag_json(_demo_results(screener)["Patient/demo-ppi"])
    again = flag_json(_demo_results(make_screener())["Patient/demo-ppi"])
    assert first == again
    later = make_screener().screen(json.loads(DEMO.read_text()), AS_OF.replace(day=25))
    later_flag = flag_json({r.patient: r for r in later}["Patient/demo-ppi"])
    assert later_flag["identifier"] == first["identifier"]  # re-screening later keeps the identity


def test_every_flag_validates_with_r4b(screener) -> None:
    flags = [flag_json(r) for r in _demo_results(screener).values() if r.flagged]
    assert flags
    for flag in flags:
        Flag.model_validate(flag)


@lru_cache(maxsize=1)
def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft6Validator(schema)


@pytest.mark.skipif(not SCHEMA.exists(), reason="official FHIR R4 JSON schema not present (../shared/data)")
@pytest.mark.slow
def test_every_flag_and_bundle_validates_against_the_official_r4_schema(screener) -> None:
    from click.testing import CliRunner

    from b12screen.cli import cli

    validator = _validator()
    flags = [flag_json(r) for r in _demo_results(screener).values() if r.flagged]
    for flag in flags:
        errors = sorted(validator.iter_errors(flag), key=lambda e: e.path)
        assert not errors, [e.message for e in errors[:3]]
    out = CliRunner().invoke(cli, ["screen", "--as-of", "2026-11-24", str(DEMO)])
    bundle = json.loads(out.stdout)
    assert not list(validator.iter_errors(bundle))


@pytest.mark.skipif(not SCHEMA.exists(), reason="official FHIR R4 JSON schema not present (../shared/data)")
@pytest.mark.slow
def test_flags_of_every_outcome_validate_against_the_official_schema(screener) -> None:
    from b12screen.screening import group, screen_grouped
    from b12screen.sources import read_path
    from b12screen.sources.validation import ALL

    validator = _validator()
    seen: set[tuple[str, str | None]] = set()
    for folder in ("medication", "clinical"):
        grouped = group(screener, read_path(FIXTURES / folder), ALL)
        for result in screen_grouped(screener, grouped, AS_OF):
            if not result.flagged or (result.outcome, result.priority) in seen:
                continue
            seen.add((result.outcome, result.priority))
            flag = flag_json(result)
            Flag.model_validate(flag)
            errors = [e.message for e in validator.iter_errors(flag)]
            assert not errors, (result.patient, errors[:3])
    assert {o for o, _ in seen} == {"suggest-b12-test", "suggest-mma", "unactioned-low-b12",
                                     "deficiency-without-treatment"}


def test_prune_drops_every_empty_value_at_every_depth_and_keeps_falsy_scalars() -> None:
    from b12screen.sinks.cards import prune

    value = {"a": None, "b": "", "c": [], "d": {}, "e": [None, "", {"x": []}, 0, False, "y"],
             "f": {"g": {"h": None}}, "i": 0, "j": 0.0, "k": {"l": [{"m": "n", "o": {}}]}}
    assert prune(value) == {"e": [0, False, "y"], "i": 0, "j": 0.0, "k": {"l": [{"m": "n"}]}}


def test_prune_walks_any_mapping_and_leaves_other_values_untouched() -> None:
    from types import MappingProxyType

    from b12screen.sinks.cards import prune

    value = [MappingProxyType({"a": None, "b": {"c": ""}, "d": (None,)}), MappingProxyType({}), [[None]], "", 7]
    assert prune(value) == [{"d": (None,)}, 7]
    assert type(prune(value)[0]) is dict
