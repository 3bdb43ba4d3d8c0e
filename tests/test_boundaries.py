"""Boundaries that a plausible slip would move: unit factors, dose timings, the Flag identifier, key type
checks, batch counts and rule age limits. Each test fails when its boundary moves."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import jwt
import pytest
from batch_helpers import batch, rows, write_ndjson
from cdshooks_helpers import MockEhr
from conftest import AS_OF, bundle, metformin_request, patient

from b12screen import Config, Screener
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.security import AuthError, JwtVerifier
from b12screen.core.facts import per_day_of
from b12screen.core.labs import total_b12_ng_l
from b12screen.sinks.flag import flag_identifier

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def b12_result(pid: str, value: float, unit: str, when: str = "2026-06-01") -> dict:
    return {"resourceType": "Observation", "id": f"b12-{pid}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit}}


def test_ng_per_ml_is_a_thousand_ng_per_l(screener: Screener) -> None:
    assert total_b12_ng_l(0.5, "ng/mL") == 500.0
    assert total_b12_ng_l(150, "pg/mL") == 150.0
    # 0.15 ng/mL = 150 ng/L is deficient; 0.5 ng/mL = 500 ng/L is normal (not 0.5 ng/L)
    low = screener.screen(bundle(patient("a"), b12_result("a", 0.15, "ng/mL")), AS_OF)[0]
    normal = screener.screen(bundle(patient("b"), b12_result("b", 0.5, "ng/mL")), AS_OF)[0]
    assert (low.outcome, low.modifiers) == ("unactioned-low-b12", ["MOD-LOW"])
    assert normal.outcome == "no-suggestion"


@pytest.mark.parametrize(("code", "per_day"), [("QD", 1.0), ("BID", 2.0), ("TID", 3.0), ("QID", 4.0),
                                                ("QOD", 0.5), ("Q8H", 3.0), ("bid", 2.0)])
def test_timing_codes_give_doses_per_day(code: str, per_day: float) -> None:
    assert per_day_of({"code": {"coding": [{"code": code}]}}) == per_day


def test_metformin_1000_mg_bid_meets_the_met2_dose(screener: Screener) -> None:
    dosage = [{"timing": {"code": {"coding": [{"code": "BID"}]}},
               "doseAndRate": [{"doseQuantity": {"value": 1000, "unit": "mg"}}]}]
    data = bundle(patient("p", birth="1980-01-01"),
                  metformin_request("m", "p", "2025-06-01", dosageInstruction=dosage))
    result = screener.screen(data, AS_OF)[0]
    assert result.rules == ["MET-2"]
    assert "2000 mg/day" in result.reasons["MET-2"]


def test_flag_identifier_depends_on_the_rules(screener: Screener) -> None:
    data = bundle(patient("p", birth="1980-01-01"), metformin_request("m", "p", "2025-06-01"))
    result = screener.screen(data, AS_OF)[0]
    assert result.rules == ["MET-1"]
    other = replace(result, rules=["MET-2"])
    assert flag_identifier(other) != flag_identifier(result)
    assert flag_identifier(replace(result, modifiers=["MOD-PREG"])) != flag_identifier(result)
    assert flag_identifier(replace(result)) == flag_identifier(result)


def test_a_key_of_another_type_is_refused_with_the_reason() -> None:
    """An EC key without an ``alg`` member must not be used for an RS384 token with its kid."""
    ehr = MockEhr()
    keys = ehr.jwks()["keys"]
    ec_key = {k: v for k, v in keys[0].items() if k != "alg"}
    ec_key["kid"] = "shared"
    verifier = JwtVerifier(ServiceConfig(issuers=(ehr.issuer(jwks={"keys": [ec_key]}),)).checked())
    aud = "https://cds.example.org/cds-services/b12screen-patient-view"
    token = ehr.token(aud, alg="RS384", kid="shared")
    assert jwt.get_unverified_header(token)["kid"] == "shared"
    with pytest.raises(AuthError, match="no key with this kid fits the algorithm"):
        verifier.verify(f"Bearer {token}", aud)


def test_batch_summary_counts_every_reported_patient(screener: Screener, tmp_path: Path) -> None:
    resources = [
        patient("adult", birth="1950-01-01"), metformin_request("m", "adult", "2020-01-01"),
        patient("child", birth="2015-01-01"),
        patient("dead", birth="1940-01-01", deceasedDateTime="2025-01-01"),
    ]
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [r for r in resources if r["resourceType"] == "Patient"])
    write_ndjson(tmp_path / "in" / "MedicationRequest.ndjson", [resources[1]])
    batch(screener, [tmp_path / "in"], tmp_path / "out")
    report = rows(tmp_path / "out" / "report.ndjson")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["outcome"] for r in report] == ["suggest-b12-test", "not-evaluated", "not-evaluated"]
    assert summary["patients"] == len(report) == 3
    assert {k: n for k, n in summary["by_outcome"].items() if n} == {"not-evaluated": 2, "suggest-b12-test": 1}


def _acid_screener(make_screener) -> Screener:  # type: ignore[no-untyped-def]
    # age as a general risk factor only from 90, so ACID-2 fires on its own age limit (75)
    return make_screener(config=Config.from_dict({"settings": {"risk_factor_age": 90}}))


def ppi_request(pid: str, authored: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": f"ppi-{pid}", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": "7646", "display": "omeprazole"}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": authored}


@pytest.mark.parametrize(("birth", "fires"), [("1951-11-24", True), ("1951-11-25", False)])
def test_acid2_starts_at_exactly_75(make_screener, birth: str, fires: bool) -> None:  # type: ignore[no-untyped-def]
    screener = _acid_screener(make_screener)
    assert date(2026, 11, 24) == AS_OF  # 1951-11-24 is the 75th birthday
    result = screener.screen(bundle(patient("p", birth=birth), ppi_request("p", "2025-06-01")), AS_OF)[0]
    assert ("ACID-2" in result.triggered) is fires
    if fires:
        assert result.rules == ["ACID-2"] and "age 75" in result.reasons["ACID-2"]


def test_a_tablet_dose_coded_only_by_product_code_takes_its_strength_from_the_value_set(screener: Screener) -> None:
    """metformin 861007 without a display: 2 tablets twice a day of the 500 MG tablet are 2000 mg/day (MET-2)."""
    dosage = [{"timing": {"code": {"coding": [{"code": "BID"}]}},
               "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}]}]
    request = metformin_request("m", "p", "2025-06-01", dosageInstruction=dosage)
    request["medicationCodeableConcept"] = {"coding": [{"system": RX, "code": "861007"}]}
    result = screener.screen(bundle(patient("p", birth="1980-01-01"), request), AS_OF)[0]
    assert result.rules == ["MET-2"]
    assert "2000 mg/day" in result.reasons["MET-2"]
    one = dict(request, dosageInstruction=[{**dosage[0], "doseAndRate": [{"doseQuantity": {"value": 1,
                                                                                           "unit": "tablet"}}]}])
    assert screener.screen(bundle(patient("p", birth="1980-01-01"), one), AS_OF)[0].rules == ["MET-1"]
