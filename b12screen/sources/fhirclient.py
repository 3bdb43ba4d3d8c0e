"""A small FHIR R4 REST client on a requests Session, for ``b12screen fetch`` and the CDS Hooks fallback.

- a connect and a read timeout on every request, an overall time limit per request (the body included,
  so a server dripping its body cannot hold a call open), and an optional deadline for a whole call;
- response bodies are streamed with a size cap (``max_body_bytes``);
- retries with exponential backoff on 429 / 5xx / connection errors, honouring ``Retry-After``
  (seconds or HTTP-date, clamped);
- searches follow ``link[relation=next]`` with a loop guard and page / resource limits;
- a bearer token, or SMART Backend Services (client credentials with a ``private_key_jwt`` assertion,
  re-authenticating before the token expires);
- redirects are followed by hand: ``Authorization`` goes only to the FHIR server's own origin, never to
  another host, on redirects or ``next`` links alike; every redirect target must be https (http only on
  loopback when allowed) and, when the caller gives ``allowed_bases``, under one of them;
- conditional create (``If-None-Exist``), so writing the same Flag twice creates one.

Log records name the method, resource type and status only: no URLs (they carry patient ids), no tokens.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import jwt
import orjson
import requests

from .._version import __version__
from . import limits
from .fhirhttp import CreateResult, FhirError, SearchResult, check_url, refuse_token, retry_after_seconds, within
from .httpbody import MAX_BODY_BYTES, BodyTimeout, BodyTooLarge, read_capped
from .urls import origin

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FHIR_JSON = "application/fhir+json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _resource_type_of(url: str, base: str) -> str:
    """The first path segment after the base (``MedicationRequest``), for log lines and messages."""
    path = urlsplit(url).path
    base_path = urlsplit(base).path.rstrip("/")
    if path.startswith(base_path):
        path = path[len(base_path):]
    segment = path.strip("/").split("/", 1)[0]
    return segment if segment.isidentifier() or segment.startswith(".") else "resource"


# -- authentication -------------------------------------------------------------------------------


class BearerToken:
    """A fixed access token; with ``expires_in`` it stops being sent after that many seconds."""

    def __init__(self, token: str, expires_in: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._token = token
        self._clock = clock
        self._expires_at = clock() + expires_in if expires_in is not None else None

    def header(self, client: FhirClient) -> str | None:
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

    def header(self, client: FhirClient) -> str | None:
        if self._token is None or self._clock() >= self._expires_at - self.refresh_margin:
            self._authenticate(client)
        return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        self._token = None
        return True

    def _authenticate(self, client: FhirClient) -> None:
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


# -- the client -----------------------------------------------------------------------------------


class FhirClient:
    """FHIR REST calls against one base URL (see the module docstring)."""

    def __init__(self, base_url: str, *, auth: Auth | None = None, session: requests.Session | None = None,
                 timeout: tuple[float, float] = (3.05, 20.0), retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 30.0, max_retry_after: float = 60.0, max_redirects: int = 5,
                 max_pages: int = 100, max_resources: int = 100_000, deadline: float | None = None,
                 allow_http_loopback: bool = True, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, allowed_bases: tuple[str, ...] | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, request_timeout: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.allow_http_loopback = allow_http_loopback
        #: when set, a redirect may lead only under one of these bases (the caller's allow-list)
        self.allowed_bases = None if allowed_bases is None else tuple(b.rstrip("/") for b in allowed_bases)
        check_url(self.base_url, allow_http_loopback)
        self.auth = auth
        self.session = session or requests.Session()
        # A no-op auth stops requests adding ~/.netrc credentials behind our back (proxy settings and CA
        # bundles from the environment still apply); Authorization is set per request, per origin.
        self.session.auth = _no_auth
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_redirects = max_redirects
        self.max_pages = max_pages
        self.max_resources = max_resources
        self.deadline = deadline
        self.max_body_bytes = max_body_bytes
        self.request_timeout = timeout[1] if request_timeout is None else request_timeout
        self._sleep = sleep
        self._clock = clock
        self._origin = origin(self.base_url)

    # -- plumbing ----------------------------------------------------------------------------

    def same_origin(self, url: str) -> bool:
        return origin(url) == self._origin

    def check_redirect(self, url: str) -> None:
        """A redirect target must pass the same https and allow-list rules as the original request."""
        try:
            check_url(url, self.allow_http_loopback)
        except FhirError:
            raise FhirError("redirected to a URL that is not https") from None
        if self.allowed_bases is not None and not within(url, self.allowed_bases):
            raise FhirError("redirected to a server that is not allow-listed")

    def resolve(self, url: str) -> str:
        """An absolute URL for a server-relative one (``Patient/1``, ``Observation?x=y``)."""
        return urljoin(self.base_url + "/", url)

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self._clock()

    def _timeouts(self) -> tuple[float, float]:
        remaining = self._remaining()
        if remaining is None:
            return self.timeout
        if remaining <= 0:
            raise FhirError("time budget exhausted")
        return min(self.timeout[0], remaining), min(self.timeout[1], remaining)

    def send(self, method: str, url: str, *, params: Any = None, json_body: Any = None, data: Any = None,
             headers: Mapping[str, str] | None = None, use_auth: bool = True, idempotent: bool | None = None,
             ) -> requests.Response:
        """One request with retries, backoff and hand-followed redirects; returns the final response
        (any status that is not retried); raises :class:`FhirError` when it cannot get one."""
        what = f"{method} {_resource_type_of(url, self.base_url)}"
        retryable = idempotent if idempotent is not None else method in ("GET", "HEAD")
        renewed = False
        attempt = 0
        while True:
            try:
                response = self._send_once(method, url, params, json_body, data, headers, use_auth)
            except (requests.RequestException, BodyTimeout) as exc:
                kind = "timed out" if isinstance(exc, (requests.Timeout, BodyTimeout)) else "connection failed"
                if retryable and self._wait(attempt, None, what, kind):
                    attempt += 1
                    continue
                raise FhirError(f"{what}: {kind}") from None
            status = response.status_code
            if status == 401 and use_auth and self.auth is not None and not renewed and self.auth.invalidate():
                renewed = True
                continue
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if status in RETRY_STATUSES and (retryable or status in (429, 503)) \
                    and self._wait(attempt, retry_after, what, f"HTTP {status}"):
                response.close()
                attempt += 1
                continue
            log.debug("%s: HTTP %d", what, status)
            return response

    def _wait(self, attempt: int, retry_after: float | None, what: str, why: str) -> bool:
        """Sleep before retry ``attempt + 1``; False when retries or time are used up."""
        if attempt >= self.retries:
            log.warning("%s: %s; giving up after %d attempt(s)", what, why, attempt + 1)
            return False
        delay = min(self.backoff * (2 ** attempt), self.max_backoff)
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self.max_retry_after)
        remaining = self._remaining()
        if remaining is not None and delay >= remaining:
            log.warning("%s: %s; no time left to retry", what, why)
            return False
        log.info("%s: %s; retrying in %.2f s", what, why, delay)
        self._sleep(delay)
        return True

    def _send_once(self, method: str, url: str, params: Any, json_body: Any, data: Any,
                   headers: Mapping[str, str] | None, use_auth: bool) -> requests.Response:
        body: bytes | None = orjson.dumps(json_body) if json_body is not None else None
        for _hop in range(self.max_redirects + 1):
            send_headers = {"Accept": FHIR_JSON, "User-Agent": f"b12screen/{__version__}"}
            if body is not None:
                send_headers["Content-Type"] = FHIR_JSON
            send_headers.update(headers or {})
            if use_auth and self.auth is not None and self.same_origin(url):
                authorization = self.auth.header(self)
                if authorization:
                    send_headers["Authorization"] = authorization
            started = self._clock()
            connect, read = self._timeouts()
            response = self.session.request(method, url, params=params, data=body if body is not None else data,
                                            headers=send_headers, timeout=(connect, min(read, self.request_timeout)),
                                            allow_redirects=False, stream=True)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                self._read_body(response, started, method, url)
                return response
            url = urljoin(response.url or url, location)
            response.close()
            self.check_redirect(url)
            params = None
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, body, data = "GET", None, None
            if not self.same_origin(url):
                log.info("following a redirect to another origin without credentials")
        raise FhirError("too many redirects")

    def _read_body(self, response: requests.Response, started: float, method: str, url: str) -> None:
        """Read the body within ``max_body_bytes`` and ``request_timeout`` of the request's start (and the
        call's deadline)."""
        def left() -> float:
            remaining = self._remaining()
            budget = started + self.request_timeout - self._clock()
            return budget if remaining is None else min(budget, remaining)

        try:
            read_capped(response, self.max_body_bytes, left)
        except BodyTooLarge as exc:
            what = f"{method} {_resource_type_of(url, self.base_url)}"
            raise FhirError(f"{what}: {exc}", response.status_code) from None

    @staticmethod
    def parse_json(response: requests.Response, what: str) -> Any:
        try:
            return limits.loads(response.content)
        except limits.JSONProblem:
            raise FhirError(f"{what}: malformed JSON from the server", response.status_code) from None

    @classmethod
    def json_field(cls, response: requests.Response, what: str, name: str) -> tuple[Mapping[str, Any], str]:
        """(JSON body, its non-empty string ``name``) of a 200 response; :class:`FhirError` otherwise."""
        if response.status_code != 200:
            raise FhirError(f"{what}: HTTP {response.status_code}", response.status_code)
        body = cls.parse_json(response, what)
        value = body.get(name) if isinstance(body, Mapping) else None
        if not isinstance(value, str) or not value:
            raise FhirError(f"{what} has no {name}")
        return body, value

    # -- FHIR interactions ---------------------------------------------------------------------

    def discover_token_endpoint(self) -> str:
        url = f"{self.base_url}/.well-known/smart-configuration"
        response = self.send("GET", url, use_auth=False, headers={"Accept": "application/json"})
        return self.json_field(response, "smart-configuration", "token_endpoint")[1]

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The resource, or None when the server says 404/410."""
        response = self.send("GET", f"{self.base_url}/{resource_type}/{resource_id}")
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise FhirError(f"GET {resource_type}: HTTP {response.status_code}", response.status_code)
        resource = self.parse_json(response, f"GET {resource_type}")
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            raise FhirError(f"GET {resource_type}: the server answered with something else")
        return resource

    def search(self, resource_type: str, params: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> SearchResult:
        """Every page of ``GET [base]/[type]?params`` (``|``, ``,`` and ``:`` are sent unescaped, as FHIR
        search examples write them)."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        query = urlencode(pairs, safe=",|:/")
        return self._collect(f"{self.base_url}/{resource_type}" + (f"?{query}" if query else ""), None)

    def search_url(self, url: str, pages_done: int = 0) -> SearchResult:
        """Continue a search from a (``next``) URL on this server."""
        url = self.resolve(url)
        if not self.same_origin(url):
            return SearchResult([], False, "the next link points to another server")
        return self._collect(url, None, pages_done)

    def _collect(self, url: str, params: list[tuple[str, str]] | None, pages_done: int = 0) -> SearchResult:
        what = f"search {_resource_type_of(url, self.base_url)}"
        resources: list[dict[str, Any]] = []
        seen: set[str] = set()
        pages = 0
        next_url: str | None = url
        while next_url is not None:
            key = requests.Request("GET", next_url, params=params).prepare().url or next_url
            if key in seen:
                log.warning("%s: the server sent a paging loop; stopped", what)
                return SearchResult(resources, False, "paging loop", pages)
            if pages + pages_done >= self.max_pages:
                log.warning("%s: page limit (%d) reached", what, self.max_pages)
                return SearchResult(resources, False, "page limit reached", pages)
            seen.add(key)
            response = self.send("GET", next_url, params=params)
            pages += 1
            if response.status_code != 200:
                raise FhirError(f"{what}: HTTP {response.status_code}", response.status_code)
            bundle = self.parse_json(response, what)
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise FhirError(f"{what}: the server did not answer with a Bundle")
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                    resources.append(resource)
            if len(resources) > self.max_resources:
                log.warning("%s: resource limit (%d) reached", what, self.max_resources)
                return SearchResult(resources[: self.max_resources], False, "resource limit reached", pages)
            link = next_link(bundle)
            if link is None:
                break
            next_url, params = self.resolve(link), None
            if not self.same_origin(next_url):
                log.warning("%s: the next link points to another server; not followed", what)
                return SearchResult(resources, False, "the next link points to another server", pages)
        return SearchResult(resources, True, None, pages)

    def create(self, resource: Mapping[str, Any], if_none_exist: str | None = None) -> CreateResult:
        """POST a resource; with ``if_none_exist`` (``identifier=system|value``) a conditional create:
        201 = created, 200 = it already existed. The resource's ``id`` is not sent."""
        resource_type = resource["resourceType"]
        body = {k: v for k, v in resource.items() if k != "id"}
        headers = {"Prefer": "return=minimal"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self.send("POST", f"{self.base_url}/{resource_type}", json_body=body, headers=headers,
                             idempotent=bool(if_none_exist))
        if response.status_code in (200, 201):
            return CreateResult(response.status_code, response.status_code == 201, response.headers.get("Location"))
        if response.status_code == 412:
            raise FhirError(f"POST {resource_type}: several resources match the condition (HTTP 412)", 412)
        raise FhirError(f"POST {resource_type}: HTTP {response.status_code}", response.status_code)


def _no_auth(request: Any) -> Any:
    return request


def next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
