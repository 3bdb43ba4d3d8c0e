"""URL safety checks shared by the FHIR client and the CDS Hooks key fetcher."""

from __future__ import annotations

import pytest

from b12screen.sources.fhirclient import FhirError, check_url
from b12screen.sources.urls import UNSAFE_URL, is_loopback_url, is_safe_url, origin


@pytest.mark.parametrize(("url", "loopback_ok", "safe"), [
    ("https://fhir.example.org/r4", False, True),
    ("https://", True, False),
    ("http://fhir.example.org/r4", True, False),
    ("http://127.0.0.1:8080/fhir", True, True),
    ("http://[::1]/fhir", True, True),
    ("http://localhost/fhir", True, True),
    ("http://127.0.0.1:8080/fhir", False, False),
    ("ftp://127.0.0.1/x", True, False),
    ("file:///etc/passwd", True, False),
])
def test_is_safe_url(url: str, loopback_ok: bool, safe: bool) -> None:
    assert is_safe_url(url, allow_http_loopback=loopback_ok) is safe


def test_loopback_and_origin() -> None:
    assert not is_loopback_url("http://10.0.0.1/")
    assert not is_loopback_url("http://localhost.example.org/")
    assert origin("HTTPS://Fhir.Example.org/r4") == ("https", "fhir.example.org", 443)
    assert origin("http://h:8080/") == ("http", "h", 8080)


def test_fhir_client_refuses_unsafe_urls_with_the_shared_reason() -> None:
    with pytest.raises(FhirError, match=r"must use https") as info:
        check_url("http://fhir.example.org/r4")
    assert str(info.value) == UNSAFE_URL
