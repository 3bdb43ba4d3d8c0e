"""Service settings: defaults, then a TOML or JSON file, then ``B12SCREEN_CDS_*`` environment variables,
then command-line options (each overriding the one before).

A file looks like::

    public_base_url = "https://cds.example.org/b12"
    fhir_servers = ["https://ehr.example.org/fhir"]
    cors_origins = ["https://ehr.example.org"]

    [[issuers]]
    iss = "https://ehr.example.org"
    jwks_url = "https://ehr.example.org/.well-known/jwks.json"
    jku = ["https://ehr.example.org/.well-known/jwks.json"]
    tenants = ["org-1"]
    fhir_servers = ["https://ehr.example.org/fhir"]
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.config import read_config_file
from ..errors import ConfigError
from ..sources.validation import POLICIES
from .replay import check_store_url

ENV_PREFIX = "B12SCREEN_CDS_"
#: Never accepted, whatever the configuration says (CDS Hooks 2.0: no ``none``, no symmetric algorithms).
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
FAILURE_MODES = ("fetch", "fail", "omit")
#: Values of ``min_card_priority``, lowest first (a site may keep LOW suggestions to batch work lists).
CARD_PRIORITIES = ("low", "medium", "high")
#: The CDS Hooks sandbox (its private key is public): trusted only with ``dev = true`` on loopback.
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"


def doc(default: Any, meaning: str) -> Any:
    """A setting's declaration: its default and what it means (the reference page shows both)."""
    return dataclasses.field(default=default, metadata={"doc": meaning})


@dataclass(frozen=True)
class IssuerConfig:
    """A trusted CDS client (EHR): where its keys are and what it may ask for."""

    iss: str = dataclasses.field(metadata={"doc": "the issuer: the JWT's `iss`"})
    jwks: Mapping[str, Any] | None = doc(None, "its JWK Set inline (public keys only)")
    jwks_url: str | None = doc(None, "its JWK Set URL, used when the JWT has no `jku`")
    jku: tuple[str, ...] = doc((), "`jku` header values accepted for this issuer")
    tenants: tuple[str, ...] = doc((), "when set, the `tenant` claim must be one of these")
    fhir_servers: tuple[str, ...] = doc((), "extra `fhirServer` bases this issuer's requests may name")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str) -> IssuerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{origin}: unknown issuer key(s) {', '.join(sorted(unknown))}")
        iss = data.get("iss")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{origin}: every issuer needs an 'iss'")
        jwks = data.get("jwks")
        if jwks is not None and not (isinstance(jwks, Mapping) and isinstance(jwks.get("keys"), list)):
            raise ConfigError(f"{origin}: issuer {iss}: 'jwks' must be a JWK Set object with a 'keys' list")
        for key in ("jku", "tenants", "fhir_servers"):
            value = data.get(key, ())
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{origin}: issuer {iss}: {key!r} must be a list of strings")
        if jwks is None and not data.get("jwks_url") and not data.get("jku"):
            raise ConfigError(f"{origin}: issuer {iss} needs 'jwks', 'jwks_url' or 'jku' to find its keys")
        return cls(
            iss=iss,
            jwks=dict(jwks) if jwks is not None else None,
            jwks_url=data.get("jwks_url") or None,
            jku=tuple(data.get("jku", ())),
            tenants=tuple(data.get("tenants", ())),
            fhir_servers=tuple(s.rstrip("/") for s in data.get("fhir_servers", ())),
        )


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``b12screen serve`` can be told (docs/integrator/service.md); each field's meaning is its
    ``metadata["doc"]``, from which docs/reference/configuration.md is generated."""

    host: str = doc("127.0.0.1", "address to bind")
    port: int = doc(8080, "port to listen on")
    workers: int = doc(1, "uvicorn worker processes")
    public_base_url: str | None = doc(None, "the URL the EHR calls (behind a proxy, the proxy's): the JWT `aud` is "
                                      "checked against it, never against request headers; required with JWT "
                                      "verification")
    insecure_no_auth: bool = doc(False, "accept calls without a JWT (loopback only)")
    test_mode: bool = doc(False, "allow `http://127.0.0.1` FHIR servers and JWKS URLs (loopback only)")
    dev: bool = doc(False, "trust the CDS Hooks sandbox issuer (its private key is public) and origin "
                    "(loopback only)")
    issuers: tuple[IssuerConfig, ...] = doc((), "trusted EHRs: `iss`, `jwks` or `jwks_url`, `jku`, `tenants`, "
                                            "`fhir_servers` (environment: a JSON list of objects)")
    algorithms: tuple[str, ...] = doc(("ES384", "RS384"), "accepted JWT algorithms (ES, RS, PS only; `none` and "
                                      "`HS*` are refused)")
    clock_skew_seconds: int = doc(60, "leeway for `exp`, `iat` and `nbf` (at most 300)")
    max_token_lifetime_seconds: int = doc(3600, "`exp` − `iat` at most")
    jwks_cache_seconds: int = doc(300, "how long a fetched JWK Set is kept")
    jwks_refetch_min_seconds: int = doc(30, "least interval between fetches of one JWK Set URL")
    replay_cache_size: int = doc(100_000, "`jti` entries kept by the `memory` replay store (until their token "
                                 "expires)")
    replay_store: str = doc("memory", "where each `jti` is remembered until its token expires: `memory` (one "
                            "process only) or `redis://HOST:PORT/DB` (shared by every worker and host); "
                            "unreachable: 503")
    public_discovery: bool = doc(False, "answer discovery without a JWT even when authentication is on")
    fhir_servers: tuple[str, ...] = doc((), "`fhirServer` bases the service may fetch from, for every issuer "
                                        "(an exact base or a prefix ending at `/`)")
    fetch_timeout_seconds: float = doc(3.0, "timeout of one FHIR request")
    time_budget_seconds: float = doc(8.0, "time for a whole call, counted from its last byte read (then 503)")
    max_request_bytes: int = doc(5_000_000, "larger request bodies get 413")
    read_timeout_seconds: float = doc(15.0, "a request's headers and body must arrive within this, else the "
                                      "connection is closed (at most 15)")
    max_connections: int = doc(200, "open connections per worker; past that the one that has waited longest "
                               "for its client is closed")
    max_pages: int = doc(10, "pages of one fallback FHIR search followed at most")
    max_resources_per_key: int = doc(5_000, "resources kept at most from one fallback search")
    max_medication_reads: int = doc(50, "referenced `Medication` resources read at most in one call")
    fetch_workers: int = doc(8, "threads for FHIR fetches (one FHIR server gets at most half of them)")
    prefetch_failure_mode: str = doc("fetch", "what an OperationOutcome in prefetch means: `fetch` (fetch it "
                                     "instead), `fail` (412) or `omit`")
    cors_origins: tuple[str, ...] = doc((), "allowed browser origins (`*` for any)")
    profile: str = doc("default", "clinical profile: `default` or `nice`")
    rules_config: str | None = doc(None, "rule switches and parameters (the file `--config` takes elsewhere)")
    validate: str = doc("evidence", "validation policy: `evidence` (models for the resources a card rests on) or "
                        "`all` (every resource a rule can use)")
    feedback_log: str | None = doc(None, "NDJSON file for feedback records (no PHI, no free text); off when unset")
    auto_write_flag: bool = doc(False, "also return the Flag as a `systemAction`")
    min_card_priority: str = doc("low", "lowest priority that produces a card: `low` (all), `medium` or `high`")
    source_label: str = doc("b12screen", "the label of the card's `source`")
    source_url: str | None = doc(None, "the URL of the card's `source`")
    log_level: str = doc("info", "`debug`, `info`, `warning` or `error`")
    log_format: str = doc("text", "`text` (key=value lines) or `json` (one object per line)")

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], origin: str = "config") -> ServiceConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            raw = data[f.name]
            if f.name == "issuers":
                if not isinstance(raw, list):
                    raise ConfigError(f"{origin}: 'issuers' must be a list of tables")
                values["issuers"] = tuple(IssuerConfig.from_dict(i, origin) for i in raw)
            else:
                values[f.name] = _coerce(f, raw, origin)
        return cls(**values).checked(origin)

    @classmethod
    def load(cls, path: str | Path | None = None, environ: Mapping[str, str] | None = None,
             **overrides: Any) -> ServiceConfig:
        """Defaults < file < environment < ``overrides`` (None values in ``overrides`` are ignored)."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(read_config_file(path, "service config"))
        data.update(_from_environment(os.environ if environ is None else environ))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, str(path) if path else "settings")

    def checked(self, origin: str = "config") -> ServiceConfig:
        """Reject inconsistent or unsafe settings."""
        bad = [a for a in self.algorithms if a in FORBIDDEN_ALGORITHMS or a.startswith("HS")]
        if bad:
            raise ConfigError(f"{origin}: algorithms {', '.join(bad)} are forbidden by CDS Hooks (no none, no HMAC)")
        unknown = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ConfigError(f"{origin}: unsupported algorithm(s) {', '.join(unknown)}")
        if self.prefetch_failure_mode not in FAILURE_MODES:
            raise ConfigError(f"{origin}: prefetch_failure_mode must be one of {', '.join(FAILURE_MODES)}")
        if self.validate not in POLICIES:
            raise ConfigError(f"{origin}: validate must be one of {', '.join(POLICIES)}")
        if not 0 <= self.clock_skew_seconds <= 300:
            raise ConfigError(f"{origin}: clock_skew_seconds must be between 0 and 300")
        if self.public_base_url is not None:
            parts = urlsplit(self.public_base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise ConfigError(f"{origin}: public_base_url must be an absolute http(s) URL without query")
        for name in ("max_request_bytes", "max_pages", "max_resources_per_key", "fetch_workers", "port",
                     "replay_cache_size", "workers"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ConfigError(f"{origin}: {name} must be positive")
        if self.min_card_priority not in CARD_PRIORITIES:
            raise ConfigError(f"{origin}: min_card_priority must be one of {', '.join(CARD_PRIORITIES)}, "
                              f"not {self.min_card_priority!r}")
        check_store_url(self.replay_store, origin)
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{origin}: log_format must be text or json")
        if not 0 < self.read_timeout_seconds <= 15:
            raise ConfigError(f"{origin}: read_timeout_seconds must be more than 0 and at most 15")
        if self.max_connections < 1:
            raise ConfigError(f"{origin}: max_connections must be positive")
        if self.time_budget_seconds <= 0 or self.fetch_timeout_seconds <= 0:
            raise ConfigError(f"{origin}: time_budget_seconds and fetch_timeout_seconds must be positive")
        return self

    def check_bind(self) -> None:
        """Refuse the loopback-only switches on any other address, and authentication without issuers or
        without ``public_base_url``."""
        if not is_loopback_host(self.host):
            for name in ("insecure_no_auth", "test_mode", "dev"):
                if getattr(self, name):
                    raise ConfigError(f"{name} is refused on the non-loopback address {self.host!r}; "
                                      "it is for local testing only")
        if not self.insecure_no_auth and not self.trusted_issuers():
            raise ConfigError("authentication is on but no issuers are configured: add [[issuers]] to the config "
                              "file (or B12SCREEN_CDS_ISSUERS), or use --insecure-no-auth on a loopback address")
        self.check_audience()

    def check_audience(self) -> None:
        """With JWT verification on, ``public_base_url`` must be set: the ``aud`` of a token is checked
        against it, never against the request's ``Host`` or ``X-Forwarded-*`` headers (a client chooses those)."""
        if not self.insecure_no_auth and not self.public_base_url:
            raise ConfigError("JWT verification is on but public_base_url is not set: set it to the URL the EHR "
                              "calls (--public-base-url, B12SCREEN_CDS_PUBLIC_BASE_URL or the config file, e.g. "
                              "https://cds.example.org/b12); the JWT aud is checked against it, never against "
                              "the request's Host header")

    # -- derived ----------------------------------------------------------------------------

    def trusted_issuers(self) -> dict[str, IssuerConfig]:
        issuers = {i.iss: i for i in self.issuers}
        if self.dev and SANDBOX_ISSUER not in issuers:
            issuers[SANDBOX_ISSUER] = IssuerConfig(SANDBOX_ISSUER, jku=(SANDBOX_JWKS,), jwks_url=SANDBOX_JWKS)
        return issuers

    def allowed_origins(self) -> tuple[str, ...]:
        origins = tuple(self.cors_origins)
        if self.dev and SANDBOX_ORIGIN not in origins:
            origins += (SANDBOX_ORIGIN,)
        return origins

    def replace(self, **changes: Any) -> ServiceConfig:
        return dataclasses.replace(self, **changes).checked()

    def as_json(self) -> str:
        """JSON that :meth:`from_mapping` reads back (used to hand settings to uvicorn worker processes)."""
        data = dataclasses.asdict(self)
        data["issuers"] = [{k: v for k, v in i.items() if v not in (None, (), [])} for i in data["issuers"]]
        return json.dumps(data, default=list)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``B12SCREEN_CDS_<FIELD>`` for every field; lists are comma-separated, ``B12SCREEN_CDS_ISSUERS`` is JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ServiceConfig):
        raw = environ.get(env_name(f.name))
        if raw is None:
            continue
        if f.name == "issuers":
            try:
                out["issuers"] = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"{env_name(f.name)}: not valid JSON ({exc})") from None
        else:
            out[f.name] = _coerce(f, raw, env_name(f.name))
    return out


def _coerce(f: dataclasses.Field[Any], raw: Any, origin: str) -> Any:
    kind = str(f.type)
    name = f.name
    try:
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if kind.startswith("int"):
            if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip().lstrip("-").isdigit():
                raise ValueError(f"expected a whole number, got {raw!r}")
            return int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError(f"expected a number, got {raw!r}")
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"expected a number, got {raw!r}") from None
        if kind.startswith("tuple"):
            if isinstance(raw, str):
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
                raise ValueError("expected a list of strings")
            return tuple(v.rstrip("/") if name in ("fhir_servers", "cors_origins") else v for v in raw)
        if raw is None or raw == "":
            return None if "None" in kind else raw
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    except (TypeError, ValueError) as exc:
        where = f"{origin} ({name})" if origin == env_name(name) else f"{origin}: {name} (environment {env_name(name)})"
        raise ConfigError(f"{where}: {exc}") from None
