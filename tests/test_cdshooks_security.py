"""JWT verification against a mock EHR whose ES384 / RS384 keys are generated at test time."""

from __future__ import annotations

import base64
import json
import time
from functools import cache
from typing import Any

import jwt
import pytest
import responses
from cdshooks_helpers import ISS, MockEhr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.security import AuthError, JwksCache, JwtVerifier, ReplayCache
from b12screen.cdshooks.tokens import TokenError, check_claims, parse
from b12screen.errors import ConfigError

AUD = "https://cds.example.org/cds-services/b12screen-patient-view"
JKU = "https://ehr.example.org/.well-known/jwks.json"


@cache
def ehr() -> MockEhr:
    return MockEhr()


@cache
def other_ehr() -> MockEhr:
    return MockEhr(iss="https://other.example.org")


def verifier(**changes: Any) -> JwtVerifier:
    issuer_changes = changes.pop("issuer", {})
    settings: dict[str, Any] = {"issuers": (ehr().issuer(**issuer_changes),)}
    settings.update(changes)
    return JwtVerifier(ServiceConfig(**settings).checked())


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_tokens_pass(alg: str) -> None:
    caller = verifier().verify(bearer(ehr().token(AUD, alg=alg, tenant="org-1", sub="client", extra="x")), AUD)
    assert caller.iss == ISS and caller.tenant == "org-1" and caller.jti


def test_aud_may_be_an_array_containing_the_endpoint() -> None:
    verifier().verify(bearer(ehr().token([AUD, "https://other"])), AUD)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _none_token() -> str:
    now = int(time.time())
    header = _b64({"alg": "none", "typ": "JWT", "kid": "ehr-ec-1"})
    claims = _b64({"iss": ISS, "aud": AUD, "exp": now + 300, "iat": now, "jti": "n-1"})
    return f"{header}.{claims}."


def _hs256_with_public_key() -> str:
    """The RS/HS confusion attack: HMAC-signed with the issuer's public key as the secret."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "ehr-rsa-1"}
    public = ehr().rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac

    signing_input = f"{_b64(header)}.{_b64({'iss': ISS, 'aud': AUD, 'exp': now + 300, 'iat': now, 'jti': 'h'})}"
    signature = base64.urlsafe_b64encode(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature.rstrip(b'=').decode()}"


def _crit_token() -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": AUD, "exp": now + 60, "iat": now, "jti": "c", "x": 1}, ehr().ec_key,
                      algorithm="ES384", headers={"kid": "ehr-ec-1", "crit": ["x"]})


#: each bad token, and the reason the verifier must give (so that each check is proven on its own)
NEGATIVE = {
    "expired": (lambda: ehr().token(AUD, iat_offset=-400, lifetime=300), "expired"),
    "future nbf": (lambda: ehr().token(AUD, nbf=int(time.time()) + 600), "nbf"),
    "future iat": (lambda: ehr().token(AUD, iat_offset=600), "iat in the future"),
    "wrong aud": (lambda: ehr().token("https://cds.example.org/cds-services"), "aud is not this endpoint"),
    "aud with a trailing slash": (lambda: ehr().token(AUD + "/"), "aud is not this endpoint"),
    "aud array holding a number": (lambda: ehr().token([AUD, 5]), "array of strings"),
    "wrong iss": (lambda: ehr().token(AUD, iss="https://attacker.example"), "untrusted issuer"),
    "untrusted issuer's own key": (lambda: other_ehr().token(AUD), "untrusted issuer"),
    "unknown kid": (lambda: ehr().token(AUD, kid="rotated-away"), "no key with this kid"),
    "alg none": (_none_token, "algorithm"),
    "HS256 with the public key": (_hs256_with_public_key, "algorithm"),
    "alg not matching the key": (lambda: ehr().token(AUD, alg="RS384", kid="ehr-ec-1"), "no key with this kid"),
    "ES256 not allow-listed": (lambda: jwt.encode(
        {"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "x"},
        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "ehr-ec-1"}), "algorithm"),
    "signed by another key": (lambda: ehr().token(AUD, key=other_ehr().ec_key), "bad signature"),
    "signature of another token": (lambda: ehr().token(AUD).rsplit(".", 1)[0] + "."
                                   + ehr().token(AUD).rsplit(".", 1)[1], "bad signature"),
    "lifetime over an hour": (lambda: ehr().token(AUD, lifetime=7200), "lifetime"),
    "no jti": (lambda: ehr().token(AUD, jti=""), "jti"),
    "no exp": (lambda: jwt.encode({"iss": ISS, "aud": AUD, "iat": int(time.time()), "jti": "e"}, ehr().ec_key,
                                  algorithm="ES384", headers={"kid": "ehr-ec-1"}), "no exp claim"),
    "exp a boolean": (lambda: ehr().token(AUD, exp=True), "exp is not a number"),
    "typ not JWT": (lambda: jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60,
                                        "iat": int(time.time()), "jti": "t"}, ehr().ec_key, algorithm="ES384",
                                       headers={"kid": "ehr-ec-1", "typ": "at+jwt"}), "typ"),
    "crit header": (_crit_token, "crit"),
    "non-allow-listed jku": (lambda: ehr().token(AUD, jku="https://attacker.example/jwks.json"), "jku"),
    "garbage": (lambda: "not.a.jwt", "unreadable"),
    "two segments": (lambda: ehr().token(AUD).rsplit(".", 1)[0], "not three segments"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_bad_tokens_are_rejected(case: str) -> None:
    make, reason = NEGATIVE[case]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        with pytest.raises(AuthError, match=reason):
            verifier().verify(bearer(make()), AUD)
        assert not rs.calls  # nothing is fetched: keys are inline, and a bad jku is never dereferenced


def test_segments_must_be_canonical_base64url() -> None:
    with pytest.raises(TokenError, match="canonical"):
        parse("QR.e30.AA")  # "QR" has stray low bits ("QQ" is the canonical "A")
    with pytest.raises(TokenError, match="not base64url"):
        parse("e30=.e30.AA")
    assert parse("e30.e30.AA").header == {}


def test_time_claims_honour_the_clock_skew_exactly() -> None:
    claims = {"iss": ISS, "aud": AUD, "exp": 1000, "iat": 900, "nbf": 900, "jti": "j"}
    check_claims(claims, AUD, now=1059.0, leeway=60)  # 59 s past exp: within the skew
    with pytest.raises(TokenError, match="expired"):
        check_claims(claims, AUD, now=1060.0, leeway=60)
    check_claims(claims, AUD, now=840.0, leeway=60)  # iat and nbf 60 s ahead: within the skew
    with pytest.raises(TokenError, match="iat in the future"):
        check_claims(claims, AUD, now=839.0, leeway=60)
    with pytest.raises(TokenError, match="nbf"):
        check_claims({**claims, "nbf": 950}, AUD, now=880.0, leeway=60)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer " + "x" * 20_000])
def test_missing_or_malformed_authorization(header: str | None) -> None:
    with pytest.raises(AuthError):
        verifier().verify(header, AUD)


def test_replayed_jti_is_refused() -> None:
    v = verifier()
    token = ehr().token(AUD)
    v.verify(bearer(token), AUD)
    with pytest.raises(AuthError, match="replayed"):
        v.verify(bearer(token), AUD)


def test_small_clock_skew_is_tolerated() -> None:
    verifier().verify(bearer(ehr().token(AUD, iat_offset=-330, lifetime=300)), AUD)  # expired 30 s ago
    verifier().verify(bearer(ehr().token(AUD, iat_offset=30)), AUD)
    with pytest.raises(AuthError):
        verifier(clock_skew_seconds=0).verify(bearer(ehr().token(AUD, iat_offset=-330, lifetime=300)), AUD)


def test_tenant_allow_list() -> None:
    v = verifier(issuer={"tenants": ("org-1",)})
    v.verify(bearer(ehr().token(AUD, tenant="org-1")), AUD)
    with pytest.raises(AuthError, match="tenant"):
        v.verify(bearer(ehr().token(AUD, tenant="org-2")), AUD)
    with pytest.raises(AuthError, match="tenant"):
        v.verify(bearer(ehr().token(AUD)), AUD)


def test_allow_listed_jku_is_fetched_and_cached() -> None:
    v = verifier(issuer={"jwks": None, "jku": (JKU,)})
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, JKU, json=ehr().jwks())
        for alg in ("ES384", "RS384", "ES384"):
            v.verify(bearer(ehr().token(AUD, alg=alg, jku=JKU)), AUD)
        assert len(rs.calls) == 1


def test_key_rotation_refetches_once_and_is_rate_limited() -> None:
    clock = [1000.0]
    cache_ = JwksCache(ttl=300, min_refetch=30, clock=lambda: clock[0])
    v = JwtVerifier(ServiceConfig(issuers=(ehr().issuer(jwks=None, jwks_url=JKU),)), jwks=cache_)
    old = ehr().jwks()
    new_key = MockEhr()
    rotated = {"keys": [*old["keys"], *({**k, "kid": "ehr-ec-2"} for k in new_key.jwks()["keys"][:1])]}
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, JKU, json=old)
        rs.add(responses.GET, JKU, json=rotated)
        v.verify(bearer(ehr().token(AUD)), AUD)
        with pytest.raises(AuthError):  # unknown kid: one refetch allowed only after min_refetch
            v.verify(bearer(new_key.token(AUD, kid="ehr-ec-2")), AUD)
        assert len(rs.calls) == 1
        clock[0] += 31
        v.verify(bearer(new_key.token(AUD, kid="ehr-ec-2")), AUD)
        assert len(rs.calls) == 2


def test_jwks_outage_does_not_crash_and_keeps_cached_keys() -> None:
    clock = [0.0]
    cache_ = JwksCache(ttl=10, min_refetch=0, clock=lambda: clock[0])
    v = JwtVerifier(ServiceConfig(issuers=(ehr().issuer(jwks=None, jwks_url=JKU),)), jwks=cache_)
    with responses.RequestsMock() as rs:
        rs.add(responses.GET, JKU, status=500)
        with pytest.raises(AuthError):
            v.verify(bearer(ehr().token(AUD)), AUD)
        rs.replace(responses.GET, JKU, json=ehr().jwks())
        v.verify(bearer(ehr().token(AUD)), AUD)
        rs.replace(responses.GET, JKU, body=b"{not json")
        clock[0] += 20  # stale: the refetch fails, the cached keys still work
        v.verify(bearer(ehr().token(AUD)), AUD)


def test_jwks_over_plain_http_is_refused_outside_test_mode() -> None:
    url = "http://ehr.example.org/jwks.json"
    v = verifier(issuer={"jwks": None, "jwks_url": url})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs, pytest.raises(AuthError):
        rs.add(responses.GET, url, json=ehr().jwks())
        v.verify(bearer(ehr().token(AUD)), AUD)
    assert not rs.calls


def test_replay_cache_is_bounded() -> None:
    now = [100.0]
    cache_ = ReplayCache(size=3, clock=lambda: now[0])
    for n in range(10):
        assert cache_.check_and_store("iss", f"j{n}", 1000.0 + n)
    assert len(cache_) <= 3
    assert not cache_.check_and_store("iss", "j9", 2000.0)
    now[0] = 5000.0  # expired entries are forgotten
    assert cache_.check_and_store("iss", "j9", 6000.0)


def test_configuration_refuses_unsafe_settings() -> None:
    with pytest.raises(ConfigError, match="forbidden"):
        ServiceConfig(algorithms=("HS256",)).checked()
    with pytest.raises(ConfigError, match="forbidden"):
        ServiceConfig(algorithms=("none",)).checked()
    with pytest.raises(ConfigError, match="non-loopback"):
        ServiceConfig(host="0.0.0.0", insecure_no_auth=True).check_bind()
    with pytest.raises(ConfigError, match="non-loopback"):
        ServiceConfig(host="10.1.2.3", test_mode=True, issuers=(ehr().issuer(),)).check_bind()
    with pytest.raises(ConfigError, match="no issuers"):
        ServiceConfig(host="0.0.0.0").check_bind()
    ServiceConfig(host="::1", insecure_no_auth=True).check_bind()
    with pytest.raises(ConfigError, match="public_base_url is not set"):
        ServiceConfig(host="0.0.0.0", issuers=(ehr().issuer(),)).check_bind()
    ServiceConfig(host="0.0.0.0", issuers=(ehr().issuer(),), public_base_url="https://cds.example.org").check_bind()


def test_sandbox_issuer_only_in_dev_mode() -> None:
    assert "https://sandbox.cds-hooks.org" not in ServiceConfig().trusted_issuers()
    dev = ServiceConfig(dev=True)
    assert "https://sandbox.cds-hooks.org" in dev.trusted_issuers()
    assert "https://sandbox.cds-hooks.org" in dev.allowed_origins()


def test_the_token_is_parsed_once_and_pyjwt_only_checks_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    from b12screen.cdshooks import tokens

    calls: list[str] = []
    real_parse = tokens.parse

    def counting_parse(token: str) -> tokens.Token:
        calls.append(token)
        return real_parse(token)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("PyJWT decoded the token again")

    monkeypatch.setattr(tokens, "parse", counting_parse)
    for name in ("decode", "decode_complete", "get_unverified_header"):
        monkeypatch.setattr(jwt, name, refuse)
        monkeypatch.setattr(jwt.api_jwt, name, refuse, raising=False)
    monkeypatch.setattr(jwt.api_jws.PyJWS, "_load", refuse)
    v = verifier()
    for alg in ("ES384", "RS384"):
        token = ehr().token(AUD, alg=alg)
        assert v.verify(bearer(token), AUD).iss == ISS
    assert len(calls) == 2
