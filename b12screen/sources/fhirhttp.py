"""The plain parts of talking to a FHIR server: its error, search and create results, URL rules and
``Retry-After`` (shared by the REST client and the Bulk Data export client)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import B12ScreenError
from .urls import UNSAFE_URL, is_safe_url, origin


class FhirError(B12ScreenError):
    """A FHIR server request that failed (after retries). The message carries no patient data."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SearchResult:
    """Resources of a search across its pages; ``complete`` is False when paging stopped early."""

    resources: list[dict[str, Any]]
    complete: bool = True
    reason: str | None = None
    pages: int = 0


@dataclass(frozen=True)
class CreateResult:
    status: int
    created: bool
    location: str | None


def check_url(url: str, allow_http_loopback: bool = True) -> None:
    """https, or http on a loopback address when allowed; anything else raises :class:`FhirError`."""
    if not is_safe_url(url, allow_http_loopback):
        raise FhirError(UNSAFE_URL)


def within(url: str, bases: Iterable[str]) -> bool:
    """Whether ``url`` is one of ``bases`` or under one (path-segment aware, same origin)."""
    for base in bases:
        base = base.rstrip("/")
        if origin(url) != origin(base):
            continue
        path, base_path = urlsplit(url).path.rstrip("/"), urlsplit(base).path.rstrip("/")
        if path == base_path or path.startswith(base_path + "/"):
            return True
    return False


def retry_after_seconds(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def oauth_error_text(body: bytes, secrets: Iterable[str] = ()) -> str:
    """``error: error_description`` of an OAuth 2.0 error response (RFC 6749 5.2), shortened and with any of
    ``secrets`` (the client assertion) blanked; ``""`` when the body is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(value, dict) or not isinstance(value.get("error"), str):
        return ""
    parts = [value["error"], value.get("error_description")]
    text = ": ".join(p for p in parts if isinstance(p, str) and p)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return "".join(c if c.isprintable() else " " for c in text)[:1000]


def refuse_token(response: Any, secrets: Iterable[str]) -> None:
    """Raise :class:`FhirError` with the OAuth ``error`` and ``error_description`` of a token endpoint that
    said no (never the assertion or another of ``secrets``)."""
    if response.status_code == 200:
        return
    why = oauth_error_text(response.content, secrets)
    raise FhirError(f"token response: HTTP {response.status_code}" + (f": {why}" if why else ""),
                    response.status_code)
