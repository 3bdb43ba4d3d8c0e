"""Service settings: file, environment, precedence, and the ``serve`` command's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from b12screen.cdshooks.config import ServiceConfig
from b12screen.cli import cli
from b12screen.errors import ConfigError

TOML = """
public_base_url = "https://cds.example.org/b12"
port = 9000
fhir_servers = ["https://ehr.example.org/fhir/"]
cors_origins = ["https://ehr.example.org"]
max_request_bytes = 1000000

[[issuers]]
iss = "https://ehr.example.org"
jwks_url = "https://ehr.example.org/jwks.json"
jku = ["https://ehr.example.org/jwks.json"]
tenants = ["t1"]
"""


def test_file_then_environment_then_options(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text(TOML)
    env = {"B12SCREEN_CDS_PORT": "9100", "B12SCREEN_CDS_CORS_ORIGINS": "https://a.example, https://b.example",
           "B12SCREEN_CDS_TEST_MODE": "true", "B12SCREEN_UNRELATED": "ignored", "B12SCREEN_WORKERS": "9"}
    config = ServiceConfig.load(path, environ=env, port=9200)
    assert config.port == 9200 and config.workers == 1
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.test_mode is True
    assert config.fhir_servers == ("https://ehr.example.org/fhir",)
    assert config.public_base_url == "https://cds.example.org/b12"
    [issuer] = config.issuers
    assert issuer.tenants == ("t1",) and issuer.jwks_url == "https://ehr.example.org/jwks.json"
    assert ServiceConfig.from_mapping(json.loads(config.as_json())) == config


def test_issuers_from_the_environment_as_json() -> None:
    env = {"B12SCREEN_CDS_ISSUERS": json.dumps([{"iss": "https://x", "jwks": {"keys": []}}])}
    assert ServiceConfig.load(environ=env).issuers[0].iss == "https://x"


@pytest.mark.parametrize("data", [
    {"nope": 1},
    {"port": "eighty"},
    {"insecure_no_auth": "maybe"},
    {"issuers": [{"iss": "https://x"}]},
    {"issuers": [{"iss": "https://x", "jwks": {"no": "keys"}}]},
    {"prefetch_failure_mode": "explode"},
    {"public_base_url": "cds.example.org"},
    {"algorithms": ["HS512"]},
    {"clock_skew_seconds": 3600},
])
def test_bad_settings_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServiceConfig.from_mapping(data)


def test_validation_policy_setting() -> None:
    assert ServiceConfig.from_mapping({"validate": "all"}).checked().validate == "all"
    assert ServiceConfig().validate == "evidence"
    assert ServiceConfig.load(environ={"B12SCREEN_CDS_VALIDATE": "all"}).checked().validate == "all"
    with pytest.raises(ConfigError, match="validate must be one of evidence, all"):
        ServiceConfig.from_mapping({"validate": "some"}).checked()


def test_json_config_file(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"insecure_no_auth": True, "time_budget_seconds": 2}))
    assert ServiceConfig.load(path, environ={}).time_budget_seconds == 2.0


def test_serve_refuses_unsafe_binds() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure-no-auth"], env={})
    assert result.exit_code == 2 and "non-loopback" in result.stderr
    result = runner.invoke(cli, ["serve", "--host", "127.0.0.1"], env={})
    assert result.exit_code == 2 and "no issuers" in result.stderr
    result = runner.invoke(cli, ["serve", "--insecure-no-auth"], env={"B12SCREEN_CDS_PROFILE": "nope"})
    assert result.exit_code == 2 and "unknown profile" in result.stderr


def test_type_errors_name_the_setting_and_its_environment_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as env_error:
        ServiceConfig.load(environ={"B12SCREEN_CDS_PORT": "80a"})
    assert str(env_error.value) == "B12SCREEN_CDS_PORT (port): expected a whole number, got '80a'"
    with pytest.raises(ConfigError) as env_float:
        ServiceConfig.load(environ={"B12SCREEN_CDS_READ_TIMEOUT_SECONDS": "soon"})
    assert str(env_float.value) == ("B12SCREEN_CDS_READ_TIMEOUT_SECONDS (read_timeout_seconds): "
                                    "expected a number, got 'soon'")
    path = tmp_path / "service.toml"
    path.write_text('workers = "two"\n')
    with pytest.raises(ConfigError) as file_error:
        ServiceConfig.load(path, environ={})
    assert str(file_error.value) == (f"{path}: workers (environment B12SCREEN_CDS_WORKERS): "
                                     "expected a whole number, got 'two'")


@pytest.mark.parametrize("value", ["0", "15.5", "-1"])
def test_the_read_timeout_is_positive_and_at_most_15_seconds(value: str) -> None:
    with pytest.raises(ConfigError, match="read_timeout_seconds must be more than 0 and at most 15"):
        ServiceConfig.load(environ={"B12SCREEN_CDS_READ_TIMEOUT_SECONDS": value})
    assert ServiceConfig.load(environ={"B12SCREEN_CDS_READ_TIMEOUT_SECONDS": "15"}).read_timeout_seconds == 15.0


def test_check_config_prints_the_effective_settings_with_secrets_masked_and_exits() -> None:
    issuer = {"iss": "https://ehr.example.org", "jwks": {"keys": [
        {"kty": "EC", "crv": "P-384", "kid": "k1", "x": "public-x", "y": "public-y", "d": "PRIVATE-D"}]}}
    env = {"B12SCREEN_CDS_ISSUERS": json.dumps([issuer]), "B12SCREEN_CDS_PORT": "9123",
           "B12SCREEN_CDS_PUBLIC_BASE_URL": "https://cds.example.org/b12"}
    result = CliRunner().invoke(cli, ["serve", "--check-config"], env=env)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)
    assert settings["port"] == 9123 and settings["read_timeout_seconds"] == 15.0
    [key] = settings["issuers"][0]["jwks"]["keys"]
    assert key["d"] == "***" and key["x"] == "public-x"
    assert "PRIVATE-D" not in result.output
    bad = CliRunner().invoke(cli, ["serve", "--check-config"], env={"B12SCREEN_CDS_PORT": "x"})
    assert bad.exit_code == 2 and "B12SCREEN_CDS_PORT (port)" in bad.output


def test_serve_runs_uvicorn_with_the_bounded_protocol_on_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls are screened on the event loop; the load test's figures are asyncio's (uvloop, which uvicorn
    would pick where installed, gave a p99 of seconds at 50 connections)."""
    import logging

    import uvicorn

    from b12screen.cdshooks.protocol import BoundedHttpToolsProtocol

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: seen.update(settings, app=app))
    monkeypatch.setattr(BoundedHttpToolsProtocol, "read_timeout", BoundedHttpToolsProtocol.read_timeout)
    monkeypatch.setattr(BoundedHttpToolsProtocol, "max_connections", BoundedHttpToolsProtocol.max_connections)
    level = logging.getLogger("b12screen").level
    try:
        result = CliRunner().invoke(cli, ["serve", "--insecure-no-auth", "--port", "0"], env={})
    finally:
        logging.getLogger("b12screen").setLevel(level)
    assert result.exit_code == 0, result.output
    assert seen["loop"] == "asyncio" and seen["http"] is BoundedHttpToolsProtocol and seen["host"] == "127.0.0.1"


@pytest.mark.parametrize("name", ["max_token_lifetime_seconds", "replay_store", "jwks_url", "jku", "tokens_seen",
                                  "public_base_url", "keys", "secretary", "password_policy_url"])
def test_check_config_shows_settings_that_only_mention_a_secret_word(name: str) -> None:
    from b12screen.cli.serve import is_secret

    assert not is_secret(name)


@pytest.mark.parametrize("name", ["password", "client_secret", "token", "access_token", "refresh_token", "api_key",
                                  "private_key", "fhir_client_secret", "redis_password", "bearer_token", "Secret"])
def test_check_config_masks_keys_tokens_passwords_and_client_secrets(name: str) -> None:
    from b12screen.cli.serve import is_secret

    assert is_secret(name)


def test_check_config_shows_the_token_lifetime_and_masks_the_replay_store_password() -> None:
    env = {"B12SCREEN_CDS_PUBLIC_BASE_URL": "https://cds.example.org/b12", "B12SCREEN_CDS_INSECURE_NO_AUTH": "1",
           "B12SCREEN_CDS_REPLAY_STORE": "redis://:hunter2@127.0.0.1:6379/2",
           "B12SCREEN_CDS_MAX_TOKEN_LIFETIME_SECONDS": "600"}
    result = CliRunner().invoke(cli, ["serve", "--check-config"], env=env)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)
    assert settings["max_token_lifetime_seconds"] == 600
    assert settings["replay_store"] == "redis://:***@127.0.0.1:6379/2" and "hunter2" not in result.output


@pytest.mark.parametrize("value", ["redis://127.0.0.1/0", "redis://:6379/0", "http://127.0.0.1:6379/0",
                                   "redis://127.0.0.1:6379/zero", "memcached", ""])
def test_a_replay_store_that_is_not_memory_or_a_redis_url_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        ServiceConfig.load(environ={"B12SCREEN_CDS_REPLAY_STORE": value})
    assert str(error.value) == ("settings: replay_store must be 'memory' or redis://HOST:PORT/DB "
                                "(e.g. redis://127.0.0.1:6379/0)")
    assert ServiceConfig.load(environ={"B12SCREEN_CDS_REPLAY_STORE": "redis://cache:6379/3"}).replay_store == (
        "redis://cache:6379/3")


@pytest.mark.parametrize(("store", "warned"), [("memory", True), ("redis://127.0.0.1:6379/0", False)])
def test_serve_with_workers_shares_one_metrics_directory_and_warns_of_a_per_worker_replay_guard(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, store: str, warned: bool) -> None:
    import logging
    import os

    from b12screen.cdshooks import workers

    seen: dict[str, object] = {}

    def fake_run_workers(config: object) -> None:
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        seen.update(directory=directory, existed=os.path.isdir(directory))

    monkeypatch.setattr(workers, "run_workers", fake_run_workers)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    issuer = {"iss": "https://ehr.example.org", "jwks": {"keys": []}}
    env = {"B12SCREEN_CDS_ISSUERS": json.dumps([issuer]), "B12SCREEN_CDS_PUBLIC_BASE_URL": "https://cds.example.org",
           "B12SCREEN_CDS_REPLAY_STORE": store}
    level = logging.getLogger("b12screen").level
    try:
        with caplog.at_level(logging.WARNING, logger="b12screen.serve"):
            result = CliRunner().invoke(cli, ["serve", "--port", "0", "--workers", "2"], env=env)
    finally:
        logging.getLogger("b12screen").setLevel(level)
    assert result.exit_code == 0, result.output
    assert seen["existed"] and not os.path.exists(str(seen["directory"]))  # made for the run, removed after
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert any("each of the 2 workers refuses only the replays it has seen" in r.getMessage()
               for r in caplog.records) is warned
