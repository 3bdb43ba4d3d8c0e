"""The thresholds and wording of docs/reference/clinical-rules.md section 7 (points 1, 2, 3, 5, 7, 8, 9): each boundary
sits between two patients, each threshold is a setting or parameter that moves it, and `rules` and `explain`
show it. The fixtures under fixtures/clinical/review-*.json cover the clinical cases themselves."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import AS_OF, bundle, patient

from b12screen import Config, Screener
from b12screen.cli import cli
from b12screen.core.outcome import HOMOCYSTEINE_OR_MMA, outcome_display
from b12screen.sinks.cards import detail, summary
from b12screen.sinks.flag import flag_text

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def lab(pid: str, code: str, when: str, value: float, unit: str, suffix: str = "lab") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"{pid}-{suffix}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": unit}}


def condition(pid: str, system: str, code: str, onset: str, suffix: str = "cond") -> dict[str, Any]:
    return {"resourceType": "Condition", "id": f"{pid}-{suffix}",
            "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "onsetDateTime": onset}


def one(screener: Screener, *resources: dict[str, Any]):
    return screener.screen(bundle(*resources), AS_OF)[0]


def days_ago(n: int) -> str:
    return (AS_OF - timedelta(days=n)).isoformat()


# -- 7.1 MOD-LOW: raised MMA, look-back and priority -------------------------------------------------------


@pytest.mark.parametrize(("value", "unit", "setting", "low"), [
    (0.45, "umol/L", None, False), (0.46, "umol/L", None, True), (0.46, "umol/L", 0.5, False),
    (460, "nmol/L", None, True), (460, "", None, False)])
def test_raised_mma_is_above_the_setting(make_screener, value: float, unit: str, setting: float | None,
                                         low: bool) -> None:
    config = Config().with_changes(settings={"mma_raised_umol_l": setting}) if setting is not None else None
    result = one(make_screener(config=config), patient("p"), lab("p", "13964-2", days_ago(30), value, unit))
    assert (result.outcome == "unactioned-low-b12") is low
    if low:
        assert result.priority == "high" and result.modifiers == ["MOD-LOW"]
        assert "0.46 µmol/L" in result.notes[0] and "no treatment or repeat test is recorded since" in result.notes[0]


@pytest.mark.parametrize(("age_days", "months", "priority"), [(365, 12, "high"), (366, 12, "medium"),
                                                             (366, 13, "high"), (3000, 12, "medium")])
def test_an_old_deficient_b12_is_medium_and_a_recent_one_high(make_screener, age_days: int, months: int,
                                                               priority: str) -> None:
    config = Config().with_changes(settings={"latest_b12_months": months})
    result = one(make_screener(config=config), patient("p"), lab("p", "2132-9", days_ago(age_days), 120, "pg/mL"))
    assert (result.outcome, result.priority) == ("unactioned-low-b12", priority)


def test_a_repeat_test_after_a_low_result_ends_mod_low_and_the_low_one_never_satisfies_a_rule(screener) -> None:
    met = {"resourceType": "MedicationStatement", "id": "m", "status": "active",
           "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                     "code": "860975"}]},
           "subject": {"reference": "Patient/p"}, "effectivePeriod": {"start": "2020-01-01"}}
    low_then_mma = one(screener, patient("p"), met, lab("p", "2132-9", days_ago(60), 150, "pg/mL"),
                       lab("p", "13964-2", days_ago(30), 0.2, "umol/L", "mma"))
    assert (low_then_mma.outcome, low_then_mma.modifiers) == ("suppressed", ["MOD-RECENT"])
    treated = one(screener, patient("p"), met, lab("p", "2132-9", days_ago(300), 150, "pg/mL"),
                   {"resourceType": "MedicationAdministration", "id": "inj", "status": "completed",
                    "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                              "code": "317106"}]},
                    "subject": {"reference": "Patient/p"}, "effectiveDateTime": days_ago(200)})
    assert (treated.outcome, treated.rules) == ("suggest-b12-test", ["MET-2"]), "a deficient B12 is no recent test"


# -- 7.2 nitrous oxide ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "setting", "low"), [(15, None, False), (15.1, None, True), (15.1, 16, False)])
def test_raised_homocysteine_after_nitrous_oxide(make_screener, value: float, setting: float | None,
                                                 low: bool) -> None:
    config = Config().with_changes(settings={"homocysteine_raised_umol_l": setting}) if setting is not None else None
    result = one(make_screener(config=config), patient("p"), condition("p", ICD, "F18.10", days_ago(200)),
                 lab("p", "13965-9", days_ago(30), value, "umol/L"))
    assert (result.outcome == "unactioned-low-b12") is low
    if low:
        assert "after nitrous oxide use" in result.notes[0] and "Homocysteine 15.10 µmol/L" in result.notes[0]


def test_a_homocysteine_suggestion_is_never_called_a_b12_test(screener) -> None:
    result = one(screener, patient("p", "1998-01-01"), condition("p", ICD, "F18.10", days_ago(200), "n2o"),
                 condition("p", SCT, "20262006", days_ago(100), "ataxia"),
                 lab("p", "2132-9", days_ago(50), 420, "pg/mL"))
    assert result.rules == ["N2O-1"] and result.recommended_test["code"] == "13965-9"
    assert outcome_display(result.outcome, result.recommended_test) == HOMOCYSTEINE_OR_MMA
    rules = screener.rules_by_id
    for text in (flag_text(result), summary(result, rules), detail(result, rules, None, [], [])):
        assert "homocysteine" in text.lower() and "B12 test suggested" not in text
    assert flag_text(result).startswith("Consider a homocysteine or MMA test")


# -- 7.3 DEM-1 and 7.8 SYM-1 priority -----------------------------------------------------------------------


@pytest.mark.parametrize(("before_onset_days", "satisfied"), [(175, True), (190, False)])
def test_dem1_counts_a_b12_test_from_six_months_before_the_diagnosis(screener, before_onset_days: int,
                                                                    satisfied: bool) -> None:
    onset = AS_OF - timedelta(days=700)
    result = one(screener, patient("p", "1950-01-01"), condition("p", ICD, "G30.1", onset.isoformat()),
                 lab("p", "2132-9", (onset - timedelta(days=before_onset_days)).isoformat(), 420, "pg/mL"))
    assert "DEM-1" in result.triggered and "AGE-75" in result.triggered
    assert result.outcome == ("suppressed" if satisfied else "suggest-b12-test")
    if not satisfied:
        assert (result.rules, result.priority) == (["DEM-1"], "medium")


@pytest.mark.parametrize(("hb", "margin", "priority"), [(10.0, None, "medium"), (9.9, None, "high"),
                                                        (10.0, 1.5, "high"), (9.9, 2.5, "medium")])
def test_sym1_is_high_only_when_haemoglobin_is_more_than_the_margin_below_its_limit(
        make_screener, hb: float, margin: float | None, priority: str) -> None:
    config = Config().with_changes(params={"SYM-1": {"hb_margin_g_dl": margin}}) if margin is not None else None
    result = one(make_screener(config=config), patient("p", "1980-01-01", gender="female"),
                 condition("p", ICD, "E06.3", "2015-01-01"), lab("p", "718-7", days_ago(30), hb, "g/dL"))
    assert (result.rules, result.priority) == (["SYM-1"], priority)


# -- 7.7 right hemicolectomy -----------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "fires"), [(19, False), (20, True)])
def test_a_right_hemicolectomy_needs_20_cm_of_ileum_recorded(screener, length: int, fires: bool) -> None:
    procedure = {"resourceType": "Procedure", "id": "hemi", "status": "completed",
                 "code": {"coding": [{"system": SCT, "code": "315321001"}]}, "subject": {"reference": "Patient/p"},
                 "performedDateTime": "2023-01-01", "note": [{"text": f"{length} cm of terminal ileum resected"}]}
    result = one(screener, patient("p", "1980-01-01"), procedure)
    assert ("MAL-CRO-R" in result.rules) is fires
    # short of 20 cm it is still a risk factor: with a symptom, SYM-1 names it
    symptomatic = one(screener, patient("p", "1980-01-01"), procedure,
                      condition("p", SCT, "91019004", days_ago(30)))
    assert "SYM-1" in symptomatic.rules
    assert ("right hemicolectomy" in symptomatic.reasons["SYM-1"]) is not fires


# -- 7.9 age by profile ------------------------------------------------------------------------------------


def test_nice_evaluates_from_16_unless_the_site_sets_min_age(make_screener) -> None:
    sixteen = [patient("p", (AS_OF.replace(year=AS_OF.year - 16)).isoformat()),
               condition("p", ICD, "F18.10", days_ago(200), "n2o"), condition("p", SCT, "20262006", days_ago(100))]
    assert one(make_screener("nice"), *sixteen).outcome == "suggest-b12-test"
    assert one(make_screener("default"), *sixteen).modifiers == ["MOD-AGE-MIN"]
    site = Config().with_changes(settings={"min_age": 18})
    assert one(make_screener("nice", site), *sixteen).modifiers == ["MOD-AGE-MIN"]


# -- the settings are declared, listed, checked and explained ---------------------------------------------


def test_rules_lists_the_new_thresholds_with_the_profile_age() -> None:
    text = CliRunner().invoke(cli, ["rules", "--profile", "nice"]).stdout
    assert "mma_raised_umol_l = 0.45 µmol/L" in text and "homocysteine_raised_umol_l = 15 µmol/L" in text
    assert "min_age = 16 years" in text and "hb_margin_g_dl = 2.0 g/dL" in text
    listed = {r["id"]: r for r in json.loads(CliRunner().invoke(cli, ["rules", "--json", "--set",
                                                                         "SYM-1.hb_margin_g_dl=1.5"]).stdout)}
    assert listed["SYM-1"]["params"]["hb_margin_g_dl"]["value"] == 1.5
    assert listed["DEM-1"]["priority"] == "medium" and listed["DEM-1"]["window_months"] == "since onset"


@pytest.mark.parametrize("option", ["mma_raised_umol_l=-1", "homocysteine_raised_umol_l=high",
                                    "SYM-1.hb_margin_g_dl=25"])
def test_a_bad_threshold_is_refused_with_its_name(option: str) -> None:
    out = CliRunner().invoke(cli, ["rules", "--set", option])
    assert out.exit_code == 2
    assert option.split("=")[0].split(".")[-1] in out.output and "Traceback" not in out.output


def test_explain_shows_the_result_mod_low_judged_against_its_limits(tmp_path) -> None:
    data = bundle(patient("p"), lab("p", "13964-2", "2025-03-20", 0.62, "umol/L"))
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    out = CliRunner().invoke(cli, ["explain", "--patient", "p", "--as-of", AS_OF.isoformat(), str(path)])
    assert out.exit_code == 0
    assert "MMA 0.62 µmol/L on 2025-03-20: raised (raised above 0.45 µmol/L)" in out.stdout
    assert "HIGH when the result is on or after 2025-11-24 (12 months), MEDIUM when older" in out.stdout
    assert "unactioned-low-b12, medium priority" in out.stdout
