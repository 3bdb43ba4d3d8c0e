"""``fetch`` and the FHIR client against a hostile loopback server: headers dripped one line at a time are
cut at ``--timeout``; a redirect to another host is refused as ``serve`` refuses it; a ``Retry-After``
past the overall deadline fails at once."""

from __future__ import annotations

import ipaddress
import re
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hostileserver import HostileServer

from b12screen.cli import cli
from b12screen.sources.deadline import guarded_session
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


@pytest.mark.slow
def test_headers_dripped_a_line_at_a_time_are_cut_at_the_timeout(hostile: HostileServer) -> None:
    client = FhirClient(hostile.base("drip-headers"), retries=0, timeout=(1.0, 1.0))
    started = time.monotonic()
    with pytest.raises(FhirError, match=r"^GET Patient: timed out$"):
        client.read("Patient", "p1")
    assert time.monotonic() - started < HANG  # each header line comes well within the 1 s read timeout


@pytest.mark.slow
def test_a_kept_alive_connection_is_cut_too(hostile: HostileServer) -> None:
    """The second request reuses the first one's connection (no new socket): it is watched all the same."""
    session = guarded_session()
    ok = FhirClient(hostile.base("ok"), session=session, retries=0, timeout=(1.0, 1.0))
    dripping = FhirClient(hostile.base("drip-headers"), session=session, retries=0, timeout=(1.0, 1.0))
    before = hostile.connections
    assert ok.read("Patient", "p1") == PATIENT
    started = time.monotonic()
    with pytest.raises(FhirError, match=r"^GET Patient: timed out$"):
        dripping.read("Patient", "p1")
    assert time.monotonic() - started < HANG
    assert hostile.connections == before + 1  # one connection for both requests: the second reused it


@pytest.mark.slow
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
    found = re.search(r"error: GET Patient: HTTP 429; the server asks to retry in 86400 s, more than the (\d+) s "
                      r"left before the deadline", result.stderr)
    assert found and 20 <= int(found[1]) <= 30, result.stderr
    assert time.monotonic() - started < HANG  # it does not sleep, not even the 60 s clamp
    assert hostile.seen.count("/retry-later/Patient/p1") == 1


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.slow
def test_headers_dripped_over_tls_are_cut_too(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    with HostileServer() as server:
        server.main.socket = context.wrap_socket(server.main.socket, server_side=True)
        session = guarded_session()
        session.verify, session.trust_env = str(cert_file), False  # not a CA bundle from the environment
        base = server.base("drip-headers").replace("http://", "https://")
        client = FhirClient(base, session=session, retries=0, timeout=(1.0, 1.0))
        started = time.monotonic()
        with pytest.raises(FhirError, match=r"^GET Patient: timed out$"):
            client.read("Patient", "p1")
        assert time.monotonic() - started < HANG
        ok = FhirClient(server.base("ok").replace("http://", "https://"), session=session, retries=0)
        assert ok.search("Condition", {"patient": "p1"}).complete  # the same TLS server, answering at once
