"""``b12screen serve``: the CDS Hooks service under uvicorn."""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import click

from ..core.config import PROFILES
from .common import (
    fatal,
    report_plugin_failures,
    verbose_option,
)

log = logging.getLogger("b12screen.serve")

#: names (any level, lower case) whose values are secrets: keys, tokens, passwords, client secrets
SECRET_NAMES = frozenset({"password", "passwd", "secret", "client_secret", "token", "access_token",
                          "refresh_token", "bearer_token", "api_key", "private_key", "private_key_pem"})
#: a name ending in one of these is a secret too (``fhir_client_secret``, ``redis_password``)
SECRET_SUFFIXES = ("_password", "_secret", "_token", "_api_key", "_private_key")
#: private members of a JWK: an inline JWK Set must hold public keys only, but never echo one that does not
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def is_secret(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret (by its whole name, never a word inside it:
    ``max_token_lifetime_seconds`` is a number of seconds)."""
    lowered = name.lower().replace("-", "_")
    return lowered in SECRET_NAMES or lowered.endswith(SECRET_SUFFIXES)


def _mask_url(value: str) -> str:
    """A URL's password replaced by ``***`` (``redis://:pw@host:6379/0``); anything else unchanged."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(value)
    if "://" not in value or parts.password is None:
        return value
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rpartition("@")[2]))


def masked_settings(config: Any) -> str:
    """The effective settings as indented JSON, with secrets, private key material and URL passwords masked."""
    import json

    def mask(value: Any, name: str = "") -> Any:
        if isinstance(value, dict):
            return {k: "***" if (k in PRIVATE_JWK_MEMBERS and "keys" in name) or is_secret(k)
                    else mask(v, f"{name}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v, name) for v in value]
        return _mask_url(value) if isinstance(value, str) else value

    return json.dumps(mask(json.loads(config.as_json())), indent=2, sort_keys=True)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Service config file (TOML or JSON); B12SCREEN_CDS_* environment variables override it.")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8080; 0 picks a free one).")
@click.option("--workers", type=int, help="uvicorn worker processes (default 1).")
@click.option("--public-base-url", help="Externally visible base URL; JWT aud = this + /cds-services[/id].")
@click.option("--insecure-no-auth", is_flag=True, default=None,
              help="Accept calls without a JWT. Refused unless bound to a loopback address.")
@click.option("--test-mode", is_flag=True, default=None,
              help="Allow http://127.0.0.1 FHIR servers and JWKS URLs (loopback only).")
@click.option("--dev", is_flag=True, default=None,
              help="Trust the CDS Hooks sandbox issuer and origin (loopback only; its private key is public).")
@click.option("--profile", type=click.Choice(PROFILES), help="Clinical profile (default: default).")
@click.option("--rules-config", type=click.Path(dir_okay=False, exists=True),
              help="Rule switches and parameters (the file `screen --config` takes).")
@verbose_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Default info.")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Log lines as text (default) or one JSON object per line.")
@click.option("--check-config", is_flag=True,
              help="Validate the settings, print the effective ones (secrets masked) as JSON and exit.")
def serve(config_path: str | None, host: str | None, port: int | None, workers: int | None,
          public_base_url: str | None, insecure_no_auth: bool | None, test_mode: bool | None, dev: bool | None,
          profile: str | None, rules_config: str | None, log_level: str | None, log_format: str | None,
          check_config: bool) -> None:
    """Run the CDS Hooks 2.0 service (discovery, patient-view, order-sign, feedback) with uvicorn."""
    import uvicorn

    from ..cdshooks.app import create_app
    from ..cdshooks.config import ServiceConfig
    from ..cdshooks.observe import use_log_format
    from ..cdshooks.protocol import BoundedHttpToolsProtocol
    from ..errors import B12ScreenError

    try:
        config = ServiceConfig.load(
            config_path, host=host, port=port, workers=workers, public_base_url=public_base_url,
            insecure_no_auth=insecure_no_auth, test_mode=test_mode, dev=dev, profile=profile,
            rules_config=rules_config, log_level=log_level, log_format=log_format,
        )
        config.check_bind()
        if check_config:
            report_plugin_failures(create_app(config).state.cds.screener)  # checks the rules config and profile
    except B12ScreenError as exc:
        fatal(str(exc))
    if check_config:
        click.echo(masked_settings(config))
        return
    port_in_use = _port_in_use(config.host, config.port)
    if port_in_use:
        fatal(port_in_use)
    use_log_format(config.log_format)
    logging.getLogger("b12screen").setLevel(config.log_level.upper())
    if config.insecure_no_auth:
        click.echo("b12screen: warning: JWT verification is OFF (--insecure-no-auth); loopback testing only", err=True)
    common: dict[str, Any] = {"host": config.host, "port": config.port, "access_log": False,
                              "log_level": config.log_level, "server_header": False, "timeout_keep_alive": 5,
                              "http": BoundedHttpToolsProtocol,
                              # asyncio's own loop, also where uvloop is installed (uvicorn would pick it):
                              # calls are screened on the loop, and under uvloop p99 reached seconds at 50
                              # connections in the load test
                              "loop": "asyncio"}
    if config.log_format == "json":
        common["log_config"] = None  # uvicorn's own lines go through the JSON handler too
    BoundedHttpToolsProtocol.configure(config.read_timeout_seconds, config.max_connections)
    try:
        app = create_app(config)  # also checks the rules config and profile before any worker starts
    except B12ScreenError as exc:
        fatal(str(exc))
    report_plugin_failures(app.state.cds.screener)
    log.info("%s", app.state.cds.startup_line())
    if config.workers > 1:
        from ..cdshooks.workers import reuse_port_supported, run_workers, shared_metrics_dir

        if config.replay_store == "memory" and not config.insecure_no_auth:
            log.warning("replay_store is memory: each of the %d workers refuses only the replays it has seen; "
                        "set replay_store = redis://HOST:PORT/DB for one replay guard", config.workers)
        os.environ["B12SCREEN__SERVE_CONFIG"] = config.as_json()
        factory = "b12screen.cdshooks.app:app_from_environment"
        with shared_metrics_dir():  # one set of metrics across the workers
            if not reuse_port_supported():  # one shared socket: the kernel does not balance connections
                uvicorn.run(factory, factory=True, workers=config.workers, **common)
                return
            try:
                run_workers(uvicorn.Config(factory, factory=True, workers=config.workers, **common))
            except OSError as exc:
                fatal(f"cannot bind {config.host}:{config.port}: {exc.strerror or exc}")
        return
    uvicorn.run(app, **common)


def _port_in_use(host: str, port: int) -> str | None:
    """One clear line when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    import socket

    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return f"cannot bind {host}:{port}: unknown host"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or "refused")
            return f"cannot bind {host}:{port}: {reason}"
    return None
