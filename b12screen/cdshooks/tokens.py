"""A compact JWS parsed once, its signature checked with PyJWT's algorithm, its time claims checked.

:func:`parse` splits and decodes the token a single time (header, claims, signing input, signature);
:func:`check_signature` is only the signature check of the algorithm (PyJWT's, over ``cryptography``);
:func:`check_claims` checks ``aud`` (exactly the endpoint URL), ``exp``, ``iat`` and ``nbf``. Errors are
:class:`TokenError`, whose text names the defect and never holds the token.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
import orjson

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


class TokenError(Exception):
    """The token is malformed, badly signed or outside its validity."""


@dataclass(frozen=True)
class Token:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(segment: str, name: str) -> bytes:
    """A base64url segment (no padding, canonical: no stray bits) decoded."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise TokenError(f"unreadable JWT (the {name} is not base64url)")
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"unreadable JWT (the {name} is not base64url)") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise TokenError(f"unreadable JWT (the {name} is not canonical base64url)")
    return decoded


def _object(segment: str, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_segment(segment, name))
    except orjson.JSONDecodeError:
        raise TokenError(f"unreadable JWT (the {name} is not JSON)") from None
    if not isinstance(value, dict):
        raise TokenError(f"unreadable JWT (the {name} is not a JSON object)")
    return value


def parse(token: str) -> Token:
    """The parts of a compact JWS (three segments), decoded once; nothing is verified yet."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("unreadable JWT (not three segments)")
    header = _object(parts[0], "header")
    claims = _object(parts[1], "claims")
    return Token(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _segment(parts[2], "signature"))


@cache
def _algorithm(alg: str) -> Any:
    return jwt.get_algorithm_by_name(alg)


def check_signature(token: Token, alg: str, key: Any) -> None:
    """The signature of ``token`` under ``alg`` with ``key`` (a ``cryptography`` public key)."""
    try:
        valid = _algorithm(alg).verify(token.signing_input, key, token.signature)
    except (jwt.PyJWTError, ValueError, TypeError):
        valid = False
    if not valid:
        raise TokenError("JWT rejected (bad signature)")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"JWT rejected ({name} is not a number)")
    return float(value)


def check_claims(claims: Mapping[str, Any], audience: str, now: float, leeway: float) -> None:
    """Required claims present; ``aud`` (a string or an array of strings) holds ``audience`` exactly;
    ``exp`` not passed, ``iat`` and ``nbf`` not in the future, each within ``leeway`` seconds."""
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise TokenError(f"JWT rejected (no {missing[0]} claim)")
    aud = claims["aud"]
    if isinstance(aud, str):
        aud = [aud]
    if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
        raise TokenError("JWT rejected (aud is not a string or an array of strings)")
    if audience not in aud:
        raise TokenError("JWT rejected (aud is not this endpoint)")
    if _number(claims, "exp") <= now - leeway:
        raise TokenError("JWT rejected (expired)")
    if _number(claims, "iat") > now + leeway:
        raise TokenError("JWT rejected (iat in the future)")
    if "nbf" in claims and _number(claims, "nbf") > now + leeway:
        raise TokenError("JWT rejected (not yet valid: nbf)")
