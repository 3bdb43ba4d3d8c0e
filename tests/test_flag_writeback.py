"""``fetch --write-back`` keeps one active b12screen Flag per patient, against the loopback FHIR server:
supersede across ruleset versions, set inactive when no longer warranted, a 412 on a stale version,
``--dry-run``, and Flags written by anything else left alone."""

from __future__ import annotations

from datetime import date
from typing import Any

from cdshooks_helpers import metformin_request
from click.testing import CliRunner, Result
from fhirserver import FhirServer, Store, bump

from b12screen.cli import cli
from b12screen.sinks.flag import IDENTIFIER_SYSTEM
from b12screen.sinks.flagsync import FlagAction, plan_flags, retired

AS_OF = "2026-11-24"
TOKEN = "loopback-token"


def flag(fid: str, value: str, patient: str = "p1", system: str = IDENTIFIER_SYSTEM, status: str = "active",
         start: str = "2026-01-05") -> dict[str, Any]:
    return {"resourceType": "Flag", "id": fid, "status": status, "identifier": [{"system": system, "value": value}],
            "code": {"text": "earlier"}, "subject": {"reference": f"Patient/{patient}"}, "period": {"start": start}}


def b12_result(value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "b12", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2132-9"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-01",
            "valueQuantity": {"value": value, "unit": "pg/mL", "system": "http://unitsofmeasure.org", "code": "pg/mL"}}


def patient_store(*extra: dict[str, Any]) -> Store:
    """Patient p1 (born 1950) on metformin since 2019: MET-2 suggests a B12 test."""
    store = Store()
    for resource in ({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
                     metformin_request("m1", "p1"), *extra):
        store.add(resource)
    return store


def fetch(server: FhirServer, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["fetch", "--fhir-server", server.base, "--patient", "p1", "--as-of", AS_OF,
                                    "--format", "ndjson", *extra], env={"B12SCREEN_FHIR_TOKEN": TOKEN})


def active_ours(store: Store, patient: str = "p1") -> list[dict[str, Any]]:
    return [f for f in store.flags(patient) if f["status"] == "active"
            and f["identifier"][0]["system"] == IDENTIFIER_SYSTEM]


def writes(store: Store) -> list[tuple[str, str, str | None]]:
    return [entry for entry in store.log if entry[0] in ("POST", "PUT")]


def test_a_new_ruleset_version_supersedes_the_earlier_flag_and_leaves_others_alone() -> None:
    store = patient_store(flag("old", "from-an-earlier-ruleset"), flag("theirs", "x", system="https://other.example"),
                          flag("p2s", "from-an-earlier-ruleset", patient="p2"))
    with FhirServer(store) as server:
        first = fetch(server, "--write-back")
        assert first.exit_code == 0, first.output
        searches = [p for m, p, _ in store.log if m == "GET" and p == "/fhir/Flag"]
        again = fetch(server, "--write-back")
    assert again.exit_code == 0, again.output
    assert len(searches) == 1
    [current] = active_ours(store)
    assert current["id"] != "old" and current["code"]["coding"][0]["code"] == "suggest-b12-test"
    old = store.resources[("Flag", "old")]
    assert old["status"] == "inactive" and old["period"] == {"start": "2026-01-05", "end": AS_OF}
    assert old["meta"]["versionId"] == "2" and old["code"] == {"text": "earlier"}  # only status and end change
    assert ("PUT", "/fhir/Flag/old", 'W/"1"') in store.log  # the version it read
    assert store.resources[("Flag", "theirs")]["status"] == "active"  # written by something else
    assert store.resources[("Flag", "p2s")]["status"] == "active"  # another patient's
    assert "write-back: Flag/old set inactive (superseded by the new Flag)" in first.stderr
    assert len(writes(store)) == 2  # the second run writes nothing
    assert f"write-back: Flag/{current['id']} already says this; not written again" in again.stderr
    assert TOKEN not in first.output + again.output


def test_a_flag_no_longer_warranted_is_set_inactive() -> None:
    store = patient_store()
    with FhirServer(store) as server:
        assert fetch(server, "--write-back").exit_code == 0
        [earlier] = active_ours(store)
        store.add(b12_result(450.0))  # a normal B12 result arrived
        result = fetch(server, "--write-back")
    assert result.exit_code == 0, result.output
    assert active_ours(store) == []
    stored = store.resources[("Flag", earlier["id"])]
    assert stored["status"] == "inactive" and stored["period"]["end"] == AS_OF
    assert f"write-back: Flag/{earlier['id']} set inactive (no longer warranted)" in result.stderr


def test_a_stale_version_is_read_again_and_updated_once_more() -> None:
    store = patient_store(flag("old", "earlier"))
    store.changes_before_put = lambda f: bump(f, code={"text": "edited by someone"})
    with FhirServer(store) as server:
        result = fetch(server, "--write-back")
    assert result.exit_code == 0, result.output
    puts = [(path, match) for method, path, match in store.log if method == "PUT"]
    assert puts == [("/fhir/Flag/old", 'W/"1"'), ("/fhir/Flag/old", 'W/"2"')]  # 412, read again, retried
    old = store.resources[("Flag", "old")]
    assert old["status"] == "inactive" and old["code"] == {"text": "edited by someone"}  # their change kept
    assert len(active_ours(store)) == 1


def test_a_flag_another_writer_retired_meanwhile_is_left_alone() -> None:
    store = patient_store(flag("old", "earlier"))
    store.changes_before_put = lambda f: bump(f, status="entered-in-error")
    with FhirServer(store) as server:
        result = fetch(server, "--write-back")
    assert result.exit_code == 0, result.output
    assert store.resources[("Flag", "old")]["status"] == "entered-in-error"
    assert "Flag/old changed on the server meanwhile and is no longer active; left as it is" in result.stderr


def test_a_second_412_is_an_error_that_says_why() -> None:
    store = patient_store(flag("old", "earlier"))
    with FhirServer(store) as server:
        server.store.changed.clear()
        store.changes_before_put = lambda f: (bump(f), store.changed.discard("old"))  # changes before every PUT
        result = fetch(server, "--write-back")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: write-back failed: PUT Flag: changed on the server since it was read (HTTP 412)" in result.stderr


def test_dry_run_prints_the_plan_and_writes_nothing() -> None:
    store = patient_store(flag("old", "earlier"))
    with FhirServer(store) as server:
        result = fetch(server, "--write-back", "--dry-run")
        alone = fetch(server, "--dry-run")
    assert result.exit_code == 0, result.output
    assert writes(store) == []
    assert "write-back (dry run): would create the new Flag\n" in result.stderr
    assert "write-back (dry run): would set Flag/old inactive (superseded by the new Flag)\n" in result.stderr
    assert alone.exit_code == 2 and "--dry-run goes with --write-back" in alone.output


def test_plan_flags_touches_only_active_b12screen_flags_of_the_patient() -> None:
    new = flag("new", "v2")
    existing = [flag("a", "v1"), flag("b", "v2"), flag("c", "v0", status="inactive"), flag("d", "v1", patient="p2"),
                flag("e", "v1", system="https://other.example"), {**flag("f", "v1"), "subject": None}]
    assert plan_flags(existing, new, "p1") == [FlagAction("keep", "b"),
                                               FlagAction("retire", "a", "superseded by the new Flag")]
    assert plan_flags(existing, None, "p1") == [FlagAction("retire", "a", "no longer warranted"),
                                                FlagAction("retire", "b", "no longer warranted")]
    assert plan_flags([], new, "p1") == [FlagAction("create")]
    assert plan_flags([flag("p10", "v1", patient="p10")], None, "p1") == []  # Patient/p10 is not Patient/p1


def test_retired_ends_the_period_not_before_it_starts() -> None:
    assert retired(flag("a", "v", start="2026-12-01"), date(2026, 11, 24))["period"] == {
        "start": "2026-12-01", "end": "2026-12-01"}
    assert retired({"resourceType": "Flag"}, date(2026, 11, 24))["period"] == {"end": "2026-11-24"}
    assert retired({"resourceType": "Flag", "period": "garbage"}, date(2026, 11, 24))["period"] == {
        "end": "2026-11-24"}  # a malformed period from the server is replaced, not a crash


def test_the_default_smart_scope_of_a_write_back_can_search_and_write_flags() -> None:
    from b12screen.cli.fetch import _default_scope

    assert {"system/Flag.read", "system/Flag.write"} <= set(_default_scope(True).split())
    assert "system/Flag.write" not in _default_scope(False)
