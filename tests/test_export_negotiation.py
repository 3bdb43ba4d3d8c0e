"""Export negotiation against the strict loopback Bulk Data server: the CapabilityStatement and SMART
``scopes_supported`` narrow the types asked for, a refused type is dropped and asked once more, ``--type``,
and OAuth errors that say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses
from bulkserver import BulkServer, Scenario, record_waits
from click.testing import CliRunner
from conftest import AS_OF
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from b12screen.cli import cli
from b12screen.cli.export import export_types
from b12screen.sources.fhirclient import FhirClient, FhirError, SmartBackendAuth
from b12screen.sources.negotiate import plan_types, refused_type, scopes_for

ENV = {"B12SCREEN_FHIR_TOKEN": "test-access-token"}
ALL = tuple(sorted(set(export_types())))
NO_FAMILY = tuple(t for t in ALL if t != "FamilyMemberHistory")
FAMILY_LINE = ("FamilyMemberHistory not exported by this server (not in its CapabilityStatement): "
               "ACID-2, COMBO, MET-2 and SYM-1 will not see family history")


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    record_waits(monkeypatch)  # in-process exports: the client's pauses are recorded, not slept


def quiet(**changes: Any) -> Scenario:
    return Scenario(**{"error_file": False, "inject_429": False, "inject_500": False, "redirect": None,
                       "polls_before_ready": 0, **changes})  # ready at the first poll: no wait


def export(out: Path, scenario: Scenario, *extra: str, env: dict[str, str] | None = None
           ) -> tuple[BulkServer, int, str]:
    with BulkServer(scenario) as server:
        result = CliRunner().invoke(cli, ["export", "--fhir-server", server.base, "--out", str(out), *extra],
                                    env=ENV if env is None else env)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return server, result.exit_code, result.output


def asked(server: BulkServer) -> list[list[str]]:
    return [k["params"]["_type"].split(",") for k in server.log.kickoffs]


def test_only_the_types_the_capability_statement_lists_are_asked_for(tmp_path: Path) -> None:
    server, code, output = export(tmp_path, quiet(types=NO_FAMILY))
    assert code == 0, output
    assert asked(server) == [list(NO_FAMILY)]  # one kick-off, without the missing type
    assert f"warning: {FAMILY_LINE}\n" in output
    assert server.log.metadata == [None]  # read without credentials


def test_batch_names_the_missing_type_and_the_rules_in_summary_json(tmp_path: Path) -> None:
    with BulkServer(quiet(types=NO_FAMILY)) as server:
        result = CliRunner().invoke(cli, ["batch", "--fhir-server", server.base, "--out", str(tmp_path),
                                          "--as-of", AS_OF.isoformat(), "--workers", "1", "--no-progress"], env=ENV)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["export"]["missing_types"] == [{
        "type": "FamilyMemberHistory", "reason": "not exported by this server (not in its CapabilityStatement)",
        "rules": ["ACID-2", "COMBO", "MET-2", "SYM-1"], "loses": "family history"}]
    assert result.output.count("FamilyMemberHistory") == 1


#: What the SMART reference server's CapabilityStatement lists: the export operations, not the data.
OPERATIONS_ONLY = ("Patient", "Group", "OperationDefinition")


@pytest.mark.parametrize("capability", ["none", "wrong", "operations only"])
def test_a_type_refused_at_kick_off_is_dropped_and_asked_once_more(tmp_path: Path, capability: str) -> None:
    listed = {"none": None, "wrong": ALL, "operations only": OPERATIONS_ONLY}[capability]
    scenario = quiet(types=NO_FAMILY, no_capability=capability == "none", capability_types=listed)
    server, code, output = export(tmp_path, scenario)
    assert code == 0, output
    assert asked(server) == [list(ALL), list(NO_FAMILY)]
    assert ('warning: export kick-off: HTTP 400: processing: The requested resource type "FamilyMemberHistory" is '
            "not available on this server; asking again without FamilyMemberHistory") in output
    assert ("warning: FamilyMemberHistory refused by this server at kick-off: ACID-2, COMBO, MET-2 and SYM-1 will "
            "not see family history") in output
    assert (tmp_path / "export" / "Patient.000.ndjson").is_file()


def test_a_rerun_resumes_the_job_that_left_a_refused_type_out(tmp_path: Path) -> None:
    scenario = quiet(types=NO_FAMILY, no_capability=True, never_ready=True)
    args = ["export", "--fhir-server", "", "--out", str(tmp_path)]
    with BulkServer(scenario) as server:
        args[2] = server.base
        first = CliRunner().invoke(cli, [*args, "--max-wait", "1"], env=ENV)
        assert first.exit_code == 2 and "did not finish within the time allowed" in first.output
        scenario.never_ready = False
        again = CliRunner().invoke(cli, args, env=ENV)
    assert again.exit_code == 0, again.output
    assert asked(server) == [list(ALL), list(NO_FAMILY)]  # no third kick-off: the job was resumed
    assert "warning: resuming the export that left out FamilyMemberHistory (refused by this server at kick-off)" \
        in again.output


def test_the_retry_after_a_refused_type_happens_once(tmp_path: Path) -> None:
    types = tuple(t for t in NO_FAMILY if t != "Encounter")
    server, code, output = export(tmp_path, quiet(types=types, no_capability=True))
    assert code == 2 and "Traceback" not in output
    assert asked(server) == [list(ALL), [t for t in ALL if t != "Encounter"]]  # the server names Encounter first
    assert output.endswith('error: export kick-off: HTTP 400: processing: The requested resource type '
                           '"FamilyMemberHistory" is not available on this server\n')


def test_type_narrows_the_list_by_hand(tmp_path: Path) -> None:
    server, code, output = export(tmp_path, quiet(), "--type", "Patient,Observation,Patient")
    assert code == 0, output
    assert asked(server) == [["Patient", "Observation"]]
    assert "warning: Encounter not asked for (--type): DIET-V and DIET-VG will not see diet preferences" in output
    assert "warning: Observation" not in output
    assert "warning: MedicationRequest not asked for (--type): the rules will not see medicines" in output


def test_types_the_server_lacks_entirely_end_the_export(tmp_path: Path) -> None:
    server, code, output = export(tmp_path, quiet(types=("Patient", "Observation")), "--type",
                                  "Encounter,AllergyIntolerance")
    assert code == 2 and server.log.kickoffs == []
    assert "warning: AllergyIntolerance not exported by this server (not in its CapabilityStatement) (no rule in " \
           "force reads it)" in output
    assert output.endswith("error: the server exports none of the resource types asked for\n")


@pytest.mark.parametrize(("value", "message"), [
    ("Patient,Observaton", "'Observaton' is not a FHIR R4 resource type (did you mean Observation?)"),
    ("patient", "'patient' is not a FHIR R4 resource type (did you mean Patient?)"),
    (",", "expected resource type names such as Patient,Observation"),
])
def test_an_unknown_type_is_a_usage_error_with_a_suggestion(tmp_path: Path, value: str, message: str) -> None:
    server, code, output = export(tmp_path, quiet(), "--type", value)
    assert code == 2 and message in output and "Traceback" not in output
    assert server.log.kickoffs == [] and server.log.metadata == []


def rsa_key(tmp_path: Path) -> tuple[Any, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return key, pem


def smart_export(tmp_path: Path, **changes: Any) -> tuple[BulkServer, int, str]:
    key, pem = rsa_key(tmp_path)
    scenario = quiet(smart_public_key=key.public_key(), **changes)
    return export(tmp_path / "o", scenario, "--client-id", "b12-client", "--private-key", str(pem), env={})


def test_smart_scopes_follow_scopes_supported(tmp_path: Path) -> None:
    supported = [f"system/{t}.rs" for t in NO_FAMILY] + ["launch", "system/Flag.cruds"]
    server, code, output = smart_export(tmp_path, types=NO_FAMILY, capability_types=ALL,
                                        scopes_supported=supported)
    assert code == 0, output
    assert server.log.scopes and set(server.log.scopes) == {" ".join(f"system/{t}.rs" for t in NO_FAMILY)}
    assert asked(server) == [list(NO_FAMILY)]
    assert ("warning: FamilyMemberHistory not exported by this server (no system scope for it in "
            "scopes_supported): ACID-2, COMBO, MET-2 and SYM-1 will not see family history") in output


def test_smart_scopes_follow_the_capability_statement(tmp_path: Path) -> None:
    server, code, output = smart_export(tmp_path, types=NO_FAMILY)
    assert code == 0, output
    assert set(server.log.scopes) == {" ".join(f"system/{t}.read" for t in NO_FAMILY)}


def test_a_refused_scope_shows_the_oauth_error_and_exits_2(tmp_path: Path) -> None:
    server, code, output = smart_export(tmp_path, types=NO_FAMILY, no_capability=True)
    assert code == 2 and "Traceback" not in output
    scope = " ".join(f"system/{t}.read" for t in ALL)
    assert output.endswith(f'error: token response: HTTP 400: invalid_scope: Invalid scope: "{scope}". '
                           "(--type TYPE[,TYPE] leaves out types the server does not know)\n")
    assert server.log.kickoffs == [] or all(k["authorization"] is None for k in server.log.kickoffs)


@responses.activate
def test_an_oauth_error_never_shows_the_assertion() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token_url = "https://auth.example.org/token"

    def echo(request: Any) -> tuple[int, dict[str, str], str]:
        assertion = parse_qs(request.body)["client_assertion"][0]
        body = {"error": "invalid_client", "error_description": f"cannot verify {assertion} (payload "
                f"{assertion.split('.')[1]})\nsecond line"}
        return 401, {"Content-Type": "application/json"}, json.dumps(body)

    responses.add_callback(responses.POST, token_url, callback=echo)
    auth = SmartBackendAuth("c", key, token_url=token_url)
    client = FhirClient("https://fhir.example.org/r4", auth=auth, retries=0)
    with pytest.raises(FhirError) as caught:
        auth.header(client)
    assert str(caught.value) == "token response: HTTP 401: invalid_client: cannot verify *** (payload ***) second line"
    assert caught.value.status == 401


@responses.activate
def test_a_token_error_without_an_oauth_body_names_the_status() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    responses.add(responses.POST, "https://auth.example.org/token", status=400, body="<html>no</html>")
    auth = SmartBackendAuth("c", key, token_url="https://auth.example.org/token")
    with pytest.raises(FhirError, match=r"^token response: HTTP 400$"):
        auth.header(FhirClient("https://fhir.example.org/r4", auth=auth, retries=0))


def test_plan_and_refusal_parsing() -> None:
    capability = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
        {"type": "Patient"}, {"type": "Observation"}]}, {"mode": "client", "resource": [{"type": "Condition"}]}]}
    plan = plan_types(("Patient", "Condition", "Observation"), capability)
    assert plan.types == ("Patient", "Observation") and list(plan.missing) == ["Condition"]
    assert plan.scopes == ("system/Patient.read", "system/Observation.read")
    assert plan_types(("Patient",), {"resourceType": "CapabilityStatement", "rest": []}).types == ("Patient",)
    assert plan_types(("Patient",), {"resourceType": "Bundle"}).types == ("Patient",)
    for hostile in (7, "x", [1], [{"resource": 3}], [{"resource": [{"type": 5}, "Patient"]}]):  # malformed
        assert plan_types(("Patient",), {"resourceType": "CapabilityStatement", "rest": hostile}).types == (
            "Patient",)
    operations_only = {"resourceType": "CapabilityStatement", "rest": [{"resource": [{"type": "Patient"},
                                                                                     {"type": "Group"}]}]}
    assert plan_types(("Patient", "Condition"), operations_only).types == ("Patient", "Condition")
    assert scopes_for(("Patient", "Flag"), ["system/*.read"]) == (("system/Patient.read", "system/Flag.read"), [])
    assert scopes_for(("Patient", "Flag"), ["system/Patient.write"]) == ((), ["Patient", "Flag"])
    types = ("Patient", "Encounter", "Observation")
    assert refused_type('HTTP 400: processing: resource type "Encounter" is not supported', types) == "Encounter"
    assert refused_type("HTTP 400: Encounter export is not enabled", types) == "Encounter"
    assert refused_type("HTTP 400: Encounter and Observation are not enabled", types) is None
    assert refused_type("HTTP 400: Group export is not enabled", types) is None


def test_the_type_table_names_only_rules_that_exist() -> None:
    from b12screen import Screener
    from b12screen.sources.negotiate import TYPE_USE

    named = {rule for _, rules in TYPE_USE.values() for rule in rules} - {"*"}
    assert named <= {rule.id for rule in Screener().rules}
    assert set(export_types()) <= set(TYPE_USE)


@pytest.mark.slow
def test_batch_with_smart_against_a_server_without_a_type_in_a_real_process(tmp_path: Path) -> None:
    """The first failure users met, as they meet it: a process, SMART Backend Services, a server that holds no
    FamilyMemberHistory. Kept to one run (about 3 s: the process starts and imports the batch engine)."""
    key, pem = rsa_key(tmp_path)
    scenario = quiet(types=NO_FAMILY, smart_public_key=key.public_key())
    with BulkServer(scenario) as server:
        proc = subprocess.run([sys.executable, "-m", "b12screen", "batch", "--fhir-server", server.base, "--out",
                               str(tmp_path / "out"), "--client-id", "b12-client", "--private-key", str(pem),
                               "--as-of", AS_OF.isoformat(), "--workers", "1", "--no-progress"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr
    assert f"b12screen: warning: {FAMILY_LINE}\n" in proc.stderr
    assert asked(server) == [list(NO_FAMILY)] and "system/FamilyMemberHistory" not in server.log.scopes[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["type"] for row in summary["export"]["missing_types"]] == ["FamilyMemberHistory"]
