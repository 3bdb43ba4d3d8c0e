"""Verifying the CDS client's JWT (CDS Hooks 2.0 "Trusting CDS Clients"), with PyJWT's algorithms.

The token is parsed once (:mod:`.tokens`); key objects are built once per key set, ``kid`` and ``alg``.
Checks, in order: a Bearer token; an allow-listed asymmetric ``alg`` (never ``none`` or HMAC); no
``crit``/``b64`` header; a ``kid``; a trusted ``iss``; a ``jku`` only if allow-listed for that issuer (an
arbitrary ``jku`` is never fetched); exactly one key with that ``kid`` whose ``kty`` fits ``alg``; the
signature; ``aud`` = the endpoint URL; ``exp`` / ``iat`` (/ ``nbf``) within the clock skew; a bounded
lifetime; the ``tenant`` allow-list; ``jti`` not seen before. JWK Sets are cached with a TTL; an unknown
``kid`` triggers one rate-limited refetch (key rotation); a failed fetch keeps the last good keys and never crashes.

Failures raise :class:`AuthError` whose ``reason`` is for the local log only (never the response).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import requests

from ..sources.urls import UNSAFE_URL, is_safe_url
from . import tokens
from .config import FORBIDDEN_ALGORITHMS, IssuerConfig, ServiceConfig
from .prefetch import NeedsIo
from .replay import MemoryReplayStore, ReplayStore, make_store

log = logging.getLogger(__name__)

ReplayCache = MemoryReplayStore  # the in-process store's earlier name

MAX_JWKS_BYTES = 256 * 1024
_KTY_FOR_ALG = {"ES": "EC", "RS": "RSA", "PS": "RSA"}
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class AuthError(Exception):
    """The request is not authenticated. ``reason`` goes to the log, never to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    """Who called, once verified (safe to log: no token)."""

    iss: str | None
    jti: str | None = None
    tenant: str | None = None
    sub: str | None = None
    fhir_servers: tuple[str, ...] = ()


ANONYMOUS = Caller(iss=None)


@dataclass
class _KeySet:
    keys: list[dict[str, Any]]
    fetched_at: float
    parsed: dict[tuple[str, str], Any] = field(default_factory=dict)


class JwksCache:
    """JWK Sets by URL, cached for ``ttl`` seconds; refetched at most every ``min_refetch`` seconds."""

    def __init__(self, ttl: float = 300, min_refetch: float = 30, allow_http_loopback: bool = False,
                 fetch: Callable[[str], Mapping[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.allow_http_loopback = allow_http_loopback
        self._fetch_impl = fetch or self._fetch
        self._clock = clock
        self._sets: dict[str, _KeySet] = {}
        self._attempts: dict[str, float] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.auth = lambda request: request  # never ~/.netrc credentials

    def _fetch(self, url: str) -> Mapping[str, Any]:
        if not is_safe_url(url, self.allow_http_loopback):
            raise ValueError(UNSAFE_URL)
        response = self._session.get(url, timeout=(2.0, 3.0), allow_redirects=False, stream=True,
                                     headers={"Accept": "application/json"})
        try:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            content = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
            if len(content) > MAX_JWKS_BYTES:
                raise ValueError("JWK Set too large")
        finally:
            response.close()
        data = orjson.loads(content)
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise ValueError("not a JWK Set")
        return data

    def keys(self, url: str, refresh: bool = False, allow_fetch: bool = True) -> _KeySet | None:
        """The cached set for ``url``, fetched when missing, stale, or ``refresh`` (rate-limited).
        With ``allow_fetch`` False, a needed fetch raises :class:`NeedsIo` instead."""
        with self._lock:
            now = self._clock()
            cached = self._sets.get(url)
            stale = cached is None or now - cached.fetched_at >= self.ttl or refresh
            last_try = self._attempts.get(url)
            if not stale or (last_try is not None and now - last_try < self.min_refetch):
                return cached
            if not allow_fetch:
                raise NeedsIo
            self._attempts[url] = now
            try:
                data = self._fetch_impl(url)
            except Exception as exc:  # a JWKS outage must not take the service down
                log.warning("JWK Set fetch failed (%s); keeping %s", type(exc).__name__,
                            "the cached keys" if cached else "no keys")
                return cached
            keys = [k for k in data.get("keys", []) if isinstance(k, Mapping)]
            fresh = _KeySet([dict(k) for k in keys], now)
            self._sets[url] = fresh
            log.info("JWK Set fetched: %d key(s)", len(keys))
            return fresh


def _alg_family(alg: str) -> str | None:
    return _KTY_FOR_ALG.get(alg[:2])


class JwtVerifier:
    """Verifies the EHR's JWT for one endpoint URL (``aud``)."""

    def __init__(self, config: ServiceConfig, jwks: JwksCache | None = None, replay: ReplayStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.issuers: dict[str, IssuerConfig] = config.trusted_issuers()
        self.algorithms = tuple(a for a in config.algorithms if a not in FORBIDDEN_ALGORITHMS)
        self.jwks = jwks or JwksCache(config.jwks_cache_seconds, config.jwks_refetch_min_seconds,
                                      allow_http_loopback=config.test_mode)
        self.replay = replay or make_store(config.replay_store, config.replay_cache_size)
        self._clock = clock
        self._inline = {i.iss: _KeySet([dict(k) for k in i.jwks["keys"]], float("inf"))
                        for i in self.issuers.values() if i.jwks is not None}

    def unready_issuers(self) -> list[str]:
        """Issuers (``iss``) with no usable keys: inline, cached, or fetched now (may do I/O)."""
        out = []
        for issuer in self.issuers.values():
            if issuer.iss in self._inline:
                continue
            urls = ([issuer.jwks_url] if issuer.jwks_url else []) + list(issuer.jku)
            if not any(self.jwks.keys(url) is not None for url in urls):
                out.append(issuer.iss)
        return out

    def verify(self, authorization: str | None, audience: str, allow_io: bool = True) -> Caller:
        """The verified caller; :class:`AuthError` otherwise. With ``allow_io`` False, a JWK Set fetch
        raises :class:`NeedsIo` (nothing is recorded: call again from a worker thread)."""
        try:
            token = tokens.parse(_bearer(authorization))  # parsed once: header, claims, signature
        except tokens.TokenError as exc:
            raise AuthError(str(exc)) from None
        header, claims = token.header, token.claims
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms or alg.startswith("HS") or alg.lower() == "none":
            raise AuthError(f"algorithm {str(alg)[:10]!r} not allowed")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise AuthError("typ is not JWT")
        if "crit" in header or "b64" in header:  # no JWS extension is understood (RFC 7515 4.1.11)
            raise AuthError("crit or b64 header not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid in the JWT header")
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("untrusted issuer")
        key = self._key(issuer, header, kid, alg, allow_io)
        skew = self.config.clock_skew_seconds
        try:
            tokens.check_signature(token, alg, key)
            tokens.check_claims(claims, audience, self._clock(), skew)
        except tokens.TokenError as exc:
            raise AuthError(str(exc)) from None
        exp, iat = claims["exp"], claims["iat"]
        if exp - iat > self.config.max_token_lifetime_seconds:
            raise AuthError("token lifetime too long")
        tenant = claims.get("tenant")
        if issuer.tenants and tenant not in issuer.tenants:
            raise AuthError("tenant not allowed")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti is not a string")
        if not self.replay.check_and_store(issuer.iss, jti, float(exp) + skew):  # may raise StoreUnavailable
            raise AuthError("replayed jti")
        sub = claims.get("sub")
        return Caller(iss=iss, jti=jti, tenant=tenant if isinstance(tenant, str) else None,
                      sub=sub if isinstance(sub, str) else None, fhir_servers=issuer.fhir_servers)

    # -- keys -----------------------------------------------------------------------------------

    def _key(self, issuer: IssuerConfig, header: Mapping[str, Any], kid: str, alg: str, allow_io: bool) -> Any:
        jku = header.get("jku")
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku:
                raise AuthError("jku not allow-listed for this issuer")
            url: str | None = jku
        else:
            url = issuer.jwks_url
        if url is None:
            keyset = self._inline.get(issuer.iss)
            if keyset is None:
                raise AuthError("no keys configured for this issuer")
            return self._select(keyset, kid, alg)
        keyset = self.jwks.keys(url, allow_fetch=allow_io)
        if keyset is not None:
            try:
                return self._select(keyset, kid, alg)
            except _NoKey:
                pass
        keyset = self.jwks.keys(url, refresh=True, allow_fetch=allow_io)  # key rotation: one rate-limited refetch
        if keyset is None:
            raise AuthError("JWK Set unavailable")
        return self._select(keyset, kid, alg)

    @staticmethod
    def _select(keyset: _KeySet, kid: str, alg: str) -> Any:
        family = _alg_family(alg)
        matches = [
            k for k in keyset.keys
            if k.get("kid") == kid and k.get("kty") == family
            and k.get("use", "sig") == "sig" and k.get("alg", alg) == alg
            and (family != "EC" or k.get("crv") == _CURVE_FOR_ALG.get(alg))
        ]
        if not matches:
            raise _NoKey("no key with this kid fits the algorithm")
        if len(matches) > 1:
            raise AuthError("several keys share this kid")
        cached = keyset.parsed.get((kid, alg))
        if cached is None:
            try:
                cached = jwt.PyJWK(matches[0], algorithm=alg).key
            except jwt.PyJWTError as exc:
                raise AuthError(f"unusable key ({type(exc).__name__})") from None
            keyset.parsed[(kid, alg)] = cached
        return cached


class _NoKey(AuthError):
    pass


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization is not a Bearer token")
    token = token.strip()
    if len(token) > 16_384:
        raise AuthError("token too long")
    return token
