"""URL safety checks shared by the FHIR client and the CDS Hooks key fetcher (no network, no I/O)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

#: What a refused URL is told (no patient data, no URL: it may carry an identifier).
UNSAFE_URL = "the URL must use https (plain http only on a loopback address)"


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default port filled in), lower-cased: equal origins share credentials."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_safe_url(url: str, allow_http_loopback: bool = True) -> bool:
    """https with a host, or plain http on a loopback address when ``allow_http_loopback``."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and allow_http_loopback and is_loopback_url(url)
