"""Authentication for the FHIR client: a fixed bearer token, or SMART Backend Services (client credentials
with a signed ``private_key_jwt`` assertion). Tokens never appear in ``repr`` or log records."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
import requests

from .fhirhttp import FhirError, check_url, refuse_token

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenClient(Protocol):
    """What an auth needs of the client: its loopback rule, discovery, and sending a request."""

    allow_http_loopback: bool

    def discover_token_endpoint(self) -> str: ...

    def send(self, method: str, url: str, *, data: Any = None, headers: Mapping[str, str] | None = None,
             use_auth: bool = True, idempotent: bool | None = None) -> requests.Response: ...

    def json_field(self, response: requests.Response, what: str, name: str) -> tuple[Mapping[str, Any], str]: ...


class BearerToken:
    """A fixed access token; with ``expires_in`` it stops being sent after that many seconds."""

    def __init__(self, token: str, expires_in: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._token = token
        self._clock = clock
        self._expires_at = clock() + expires_in if expires_in is not None else None

    def header(self, client: TokenClient) -> str | None:
        if self._expires_at is not None and self._clock() >= self._expires_at:
            return None
        return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        """A fixed token cannot be renewed: False."""
        return False

    def __repr__(self) -> str:  # never show the token
        return "BearerToken(***)"


class SmartBackendAuth:
    """SMART Backend Services: ``client_credentials`` with a signed ``private_key_jwt`` assertion.

    The token endpoint comes from ``token_url`` or the server's ``.well-known/smart-configuration``.
    The assertion is ``iss`` = ``sub`` = client id, ``aud`` = token URL, ``exp`` = now + 5 min, a fresh
    ``jti``; the token is cached until ``refresh_margin`` seconds before it expires.
    """

    def __init__(self, client_id: str, private_key: Any, *, algorithm: str = "RS384", kid: str | None = None,
                 token_url: str | None = None, scope: str = "system/*.read", jku: str | None = None,
                 refresh_margin: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        if algorithm not in ("RS384", "ES384", "RS256", "ES256", "RS512", "ES512"):
            raise FhirError(f"unsupported assertion algorithm {algorithm}")
        self.client_id = client_id
        self.algorithm = algorithm
        self.kid = kid
        self.token_url = token_url
        self.scope = scope
        self.jku = jku
        self.refresh_margin = refresh_margin
        self._key = private_key
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    def assertion(self, token_url: str) -> str:
        now = int(self._clock())
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid
        if self.jku:
            headers["jku"] = self.jku
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url, "iat": now, "exp": now + 300,
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def header(self, client: TokenClient) -> str | None:
        if self._token is None or self._clock() >= self._expires_at - self.refresh_margin:
            self._authenticate(client)
        return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        self._token = None
        return True

    def _authenticate(self, client: TokenClient) -> None:
        token_url = self.token_url or client.discover_token_endpoint()
        check_url(token_url, client.allow_http_loopback)
        self.token_url = token_url
        assertion = self.assertion(token_url)
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        response = client.send("POST", token_url, data=form, use_auth=False, idempotent=True,
                               headers={"Accept": "application/json"})
        refuse_token(response, (assertion, *assertion.split(".")))
        body, token = client.json_field(response, "token response", "access_token")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        self._token = token
        self._expires_at = self._clock() + lifetime
        log.info("obtained a backend-services access token (expires in %.0f s)", lifetime)

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, ***)"


Auth = BearerToken | SmartBackendAuth
