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
