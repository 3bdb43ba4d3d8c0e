"""``fetch`` and the FHIR client against a hostile loopback server: headers dripped one line at a time are
cut at ``--timeout``; a redirect to another host is refused as ``serve`` refuses it; a ``Retry-After``
past the overall deadline fails at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from hostileserver import HostileServer

from b12screen.cli import cli
from b12screen.sources.fhirclient import FhirClient, FhirError

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}
#: A bounded wait: each hostile call must end well within it (the server would hold it for a minute).
HANG = 10.0


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer({"Patient/p1": PATIENT}) as server:
        yield server


def fetch(base: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["fetch", "--fhir-server", base, "--patient", "p1", "--as-of", "2026-11-24",
                                    *args])


def test_headers_dripped_a_line_at_a_time_are_cut_at_the_timeout(hostile: HostileServer) -> None:
    client = FhirClient(hostile.base("drip-headers"), retries=0, timeout=(1.0, 1.0))
    started = time.monotonic()
    with pytest.raises(FhirError, match=r"^GET Patient: timed out$"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < HANG  # each header line comes well within the 1 s read timeout


def test_fetch_timeout_covers_the_response_headers(hostile: HostileServer) -> None:
    started = time.monotonic()
    result = fetch(hostile.base("drip-headers"), "--timeout", "1", "--retries", "0")
    assert result.exit_code == 2, result.output
    assert "error: GET Patient: timed out" in result.stderr
    assert time.monotonic() - started < HANG


def test_a_healthy_server_still_answers_within_the_deadline(hostile: HostileServer) -> None:
    assert FhirClient(hostile.base("ok"), retries=0, timeout=(1.0, 1.0)).read("Patient", "p1") == PATIENT
    result = fetch(hostile.base("ok"), "--timeout", "2")
    assert result.exit_code == 0, result.stderr


def test_fetch_refuses_a_redirect_to_another_host_as_serve_does(hostile: HostileServer) -> None:
    before = len(hostile.elsewhere_seen)
    result = fetch(hostile.base("redirect-away"), "--retries", "0")
    assert result.exit_code == 2, result.output
    assert "error: redirected to a URL outside the FHIR server's base (not followed)" in result.stderr
    assert len(hostile.elsewhere_seen) == before  # the patient id never went there
    with pytest.raises(FhirError, match="outside the FHIR server's base"):
        FhirClient(hostile.base("redirect-away"), retries=0).read("Patient", "p1")
    # the caller may allow the other server: then it is followed (without the token)
    allowed = FhirClient(hostile.base("redirect-away"), retries=0,
                         allowed_bases=(hostile.base("redirect-away"), hostile.elsewhere))
    assert allowed.search("Condition", {"patient": "p1"}).complete
    assert hostile.elsewhere_seen[before:] == ["/redirect-away/Condition"]


def test_a_retry_after_beyond_the_deadline_fails_at_once(hostile: HostileServer) -> None:
    started = time.monotonic()
    result = fetch(hostile.base("retry-later"), "--deadline", "30")
    assert result.exit_code == 2, result.output
    assert ("error: GET Patient: HTTP 429; the server asks to retry in 86400 s, more than the 30 s left before "
            "the deadline") in result.stderr
    assert time.monotonic() - started < HANG  # it does not sleep, not even the 60 s clamp
    assert hostile.seen.count("/retry-later/Patient/p1") == 1
